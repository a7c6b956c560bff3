"""Development issuer: an HTTP server acting as any number of Auth0-like issuers, one per path.

Deliberately free of Django imports so tests and benchmark scripts can use it standalone.
"""

import base64
import json
import logging
import os
import re
import secrets
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from devissuer.dpop import ProofRefused, check_token_request_proof

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
KID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
MARKER_FILE = "current.json"
MAX_BODY_BYTES = 64 * 1024
# Declared bodies up to this size are read and dropped before a 413 so the client sees the
# response instead of a connection reset; anything larger just gets the connection closed.
MAX_DRAIN_BYTES = 1024 * 1024
MAX_EXPIRES_IN = 86400
DEFAULT_EXPIRES_IN = 3600
ERROR_CODES = {HTTPStatus.BAD_REQUEST: "invalid_request", HTTPStatus.NOT_FOUND: "not_found"}
ROUTE_RE = re.compile(
    r"/(?P<name>[^/]+)/(?P<route>\.well-known/openid-configuration|\.well-known/jwks\.json"
    r"|oauth/token|rotate|slow)"
)
# How long one issuer's key set may be made to take (POST /<name>/slow), and how often a
# slow key set sends its next piece.
MAX_SLOW_SECONDS = 600.0
DRIP_EVERY = 0.5


class BadRequest(Exception):
    """Client input the server rejects with 400 invalid_request."""


class InvalidProof(Exception):
    """A token request's DPoP proof the server rejects with 400 invalid_dpop_proof."""


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid issuer name, else raise ValueError."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError(f"invalid issuer name {name!r}: use 1-63 of a-z, 0-9, '_' and '-'")
    return name


def issuer_url(base_url: str, name: str) -> str:
    """Return the issuer URL (with the trailing slash the ``iss`` claim carries)."""
    return f"{base_url.rstrip('/')}/{validate_name(name)}/"


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def public_jwk(kid: str, key: RSAPrivateKey) -> dict[str, str]:
    """Return the public JWK of ``key`` published under ``kid``."""
    numbers = key.public_key().public_numbers()
    return {
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "alg": "RS256",
        "n": _b64url_uint(numbers.n),
        "e": _b64url_uint(numbers.e),
    }


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` atomically, readable by the owner only."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


# Published keys of one issuer: the current key first, then the retained previous key.
KeyList = list[tuple[str, RSAPrivateKey]]


class DevKeyStore:
    """Per-issuer RSA signing keys persisted as PEM files under ``directory/<name>/``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.RLock()
        self._cache: dict[str, KeyList] = {}

    def current(self, name: str) -> tuple[str, RSAPrivateKey]:
        """Return the current ``(kid, key)`` of issuer ``name``, creating it on first use."""
        with self._lock:
            return self._issuer(name)[0]

    def rotate(self, name: str) -> str:
        """Make a new current key, keep the old one published, drop any older; return new kid."""
        return self.rotate_keys(name)[0]

    def rotate_keys(self, name: str) -> tuple[str, str]:
        """Rotate like ``rotate`` and return ``(new kid, previous kid)``."""
        with self._lock:
            keys = self._issuer(name)
            new = self._generate(name)
            dropped = keys[1:]
            keys[:] = [new, keys[0]]
            self._save_marker(name, keys)
            for kid, _ in dropped:
                self._pem_path(name, kid).unlink(missing_ok=True)
            return new[0], keys[1][0]

    def jwks(self, name: str) -> dict[str, list[dict[str, str]]]:
        """Return the published key set of issuer ``name``, current key first."""
        with self._lock:
            keys = list(self._issuer(name))
        return {"keys": [public_jwk(kid, key) for kid, key in keys]}

    def sign(
        self,
        name: str,
        claims: dict[str, Any],
        headers: dict[str, Any] | None = None,
        key_id: str | None = None,
    ) -> str:
        """Sign ``claims`` with RS256; ``headers`` are merged over the default ``kid`` header."""
        kid, key = self._key(name, key_id)
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, **(headers or {})})

    def _key(self, name: str, key_id: str | None) -> tuple[str, RSAPrivateKey]:
        with self._lock:
            keys = list(self._issuer(name))
        if key_id is None:
            return keys[0]
        for kid, key in keys:
            if kid == key_id:
                return kid, key
        raise ValueError(f"kid {key_id!r} is not published by issuer {name!r}")

    def _issuer(self, name: str) -> KeyList:
        validate_name(name)
        keys = self._cache.get(name)
        if keys is None:
            keys = self._load(name) or self._create(name)
            self._cache[name] = keys
        return keys

    def _issuer_dir(self, name: str) -> Path:
        return self.directory / validate_name(name)

    def _pem_path(self, name: str, kid: str) -> Path:
        if not KID_RE.fullmatch(kid):
            raise ValueError(f"invalid kid {kid!r}")
        return self._issuer_dir(name) / f"{kid}.pem"

    def _load(self, name: str) -> KeyList | None:
        marker = self._issuer_dir(name) / MARKER_FILE
        if not marker.exists():
            return None
        try:
            data = json.loads(marker.read_text())
            kids = [data["current"]] + ([data["previous"]] if data.get("previous") else [])
            keys = [(kid, self._read_pem(name, kid)) for kid in kids]
        except (ValueError, KeyError, TypeError, OSError) as exc:
            logger.warning("dev issuer %s: unreadable key state (%s); starting fresh", name, exc)
            return None
        return keys

    def _read_pem(self, name: str, kid: str) -> RSAPrivateKey:
        key = serialization.load_pem_private_key(
            self._pem_path(name, kid).read_bytes(), password=None
        )
        if not isinstance(key, RSAPrivateKey):
            raise TypeError(f"{kid}.pem is not an RSA key")
        return key

    def _create(self, name: str) -> KeyList:
        keys = [self._generate(name)]
        self._save_marker(name, keys)
        return keys

    def _generate(self, name: str) -> tuple[str, RSAPrivateKey]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        kid = secrets.token_urlsafe(16)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._issuer_dir(name).mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_private(self._pem_path(name, kid), pem)
        return kid, key

    def _save_marker(self, name: str, keys: KeyList) -> None:
        kids = [kid for kid, _ in keys]
        marker = {"current": kids[0], "previous": kids[1] if len(kids) > 1 else None}
        _write_private(self._issuer_dir(name) / MARKER_FILE, json.dumps(marker).encode())


class DevIssuerServer(ThreadingHTTPServer):
    """Threaded HTTP server serving discovery, JWKS, tokens and rotation for any issuer name."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        host: str,
        port: int,
        store: DevKeyStore,
        *,
        public_url: str | None = None,
        verbose: bool = False,
    ) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), DevIssuerHandler)
        self.store = store
        self.verbose = verbose
        self.base_url = (public_url or self._bound_url()).rstrip("/")
        self._hits: Counter[tuple[str, str]] = Counter()
        self._hits_lock = threading.Lock()
        self._slow: dict[str, float] = {}
        self._thread: threading.Thread | None = None

    def _bound_url(self) -> str:
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - mapping a wildcard bind, not binding
            host = "127.0.0.1"
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def url_for(self, name: str) -> str:
        """Return the issuer URL of ``name`` on this server, with trailing slash."""
        return issuer_url(self.base_url, name)

    def record_hit(self, method: str, path: str) -> None:
        """Count one request."""
        with self._hits_lock:
            self._hits[(method, path)] += 1

    def hits(self, path_suffix: str) -> int:
        """Return how many requests (any method) hit a path ending with ``path_suffix``."""
        with self._hits_lock:
            return sum(n for (_, path), n in self._hits.items() if path.endswith(path_suffix))

    def reset_hits(self) -> None:
        """Forget all counted requests."""
        with self._hits_lock:
            self._hits.clear()

    def stats(self) -> dict[str, int]:
        """Return the request counts keyed ``"METHOD PATH"``."""
        with self._hits_lock:
            return {f"{method} {path}": n for (method, path), n in self._hits.items()}

    def set_slow(self, name: str, seconds: float) -> None:
        """Make an issuer's key set take ``seconds`` to arrive (0: at once again)."""
        with self._hits_lock:
            self._slow[name] = seconds

    def slowness(self, name: str) -> float:
        """Seconds an issuer's key set takes to arrive."""
        with self._hits_lock:
            return self._slow.get(name, 0.0)

    def stop(self) -> None:
        """Stop serving (if started in a thread) and close the listening socket."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()


class DevIssuerHandler(BaseHTTPRequestHandler):
    """Routes requests of the development issuer; every response is JSON."""

    server: DevIssuerServer
    server_version = "DevIssuer/1"
    sys_version = ""
    timeout = 30  # seconds a silent client may hold a handler thread

    def do_GET(self) -> None:
        """Serve discovery, JWKS and stats."""
        self._dispatch("GET")

    def do_POST(self) -> None:
        """Serve token minting and key rotation."""
        self._dispatch("POST")

    def do_PUT(self) -> None:
        """No PUT routes."""
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        """No PATCH routes."""
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        """No DELETE routes."""
        self._dispatch("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Log one line per request to stderr only when the server is verbose."""
        if self.server.verbose:
            sys.stderr.write(f"devissuer: {self.address_string()} {format % args}\n")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Answer the base class's own errors (bad request line, unknown method) as JSON too."""
        status = HTTPStatus(code)
        error = ERROR_CODES.get(status, status.phrase.lower().replace(" ", "_"))
        self.close_connection = True
        self._error(status, error, message or status.description)

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        self.server.record_hit(method, path)
        try:
            self._route(method, path)
        except InvalidProof as exc:
            self._error(HTTPStatus.BAD_REQUEST, "invalid_dpop_proof", str(exc))
        except BadRequest as exc:
            self._error(HTTPStatus.BAD_REQUEST, "invalid_request", str(exc))
        except Exception:
            logger.exception("dev issuer failed on %s %s", method, path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "server_error", "Internal error.")

    def _route(self, method: str, path: str) -> None:
        if method == "GET" and path == "/_stats":
            self._json(HTTPStatus.OK, self.server.stats())
            return
        match = ROUTE_RE.fullmatch(path)
        handler = self._routes().get((method, match["route"])) if match else None
        if match is None or handler is None:
            self._error(HTTPStatus.NOT_FOUND, "not_found", "No such route.")
            return
        name = match["name"]
        if not NAME_RE.fullmatch(name):
            raise BadRequest(f"Invalid issuer name {name!r}: use 1-63 of a-z, 0-9, '_' and '-'.")
        handler(name)

    def _routes(self) -> dict[tuple[str, str], Callable[[str], None]]:
        return {
            ("GET", ".well-known/openid-configuration"): self._discovery,
            ("GET", ".well-known/jwks.json"): self._jwks,
            ("POST", "oauth/token"): self._token,
            ("POST", "rotate"): self._rotate,
            ("POST", "slow"): self._set_slow,
        }

    def _discovery(self, name: str) -> None:
        issuer = self.server.url_for(name)
        self._json(
            HTTPStatus.OK,
            {
                "issuer": issuer,
                "jwks_uri": f"{issuer}.well-known/jwks.json",
                "token_endpoint": f"{issuer}oauth/token",
                "response_types_supported": ["token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "grant_types_supported": ["client_credentials"],
            },
        )

    def _jwks(self, name: str) -> None:
        jwks = self.server.store.jwks(name)
        seconds = self.server.slowness(name)
        self._json(HTTPStatus.OK, jwks, {"Cache-Control": "max-age=60"}, drip_seconds=seconds)

    def _set_slow(self, name: str) -> None:
        """``{"seconds": N}``: the key set drips over N seconds from now on (0 stops it)."""
        body = self._read_body()
        if body is None:
            return
        fields, _ = _decode_body(body, self.headers.get("Content-Type", ""))
        seconds = fields.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise BadRequest('Send {"seconds": N}, a number.')
        if not 0 <= seconds <= MAX_SLOW_SECONDS:
            raise BadRequest(f"seconds must be between 0 and {MAX_SLOW_SECONDS:g}.")
        self.server.set_slow(name, float(seconds))
        self._json(HTTPStatus.OK, {"seconds": seconds})

    def _rotate(self, name: str) -> None:
        kid, previous = self.server.store.rotate_keys(name)
        self._json(HTTPStatus.OK, {"kid": kid, "previous": previous})

    def _token(self, name: str) -> None:
        body = self._read_body()
        if body is None:
            return
        request = TokenRequest.parse(body, self.headers.get("Content-Type", ""), name)
        claims = request.claims(self.server.url_for(name), int(time.time()))
        bound = self._dpop_thumbprint(name)
        if bound is not None:
            claims["cnf"] = {"jkt": bound}
        headers = {"typ": "at+jwt"} if request.profile == "rfc9068" else None
        token = self.server.store.sign(name, claims, headers=headers)
        response: dict[str, Any] = {
            "access_token": token,
            "token_type": "DPoP" if bound else "Bearer",
            "expires_in": request.expires_in,
        }
        if request.scope is not None:
            response["scope"] = request.scope
        self._json(HTTPStatus.OK, response, {"Cache-Control": "no-store"})

    def _dpop_thumbprint(self, name: str) -> str | None:
        """The key a DPoP proof on this token request binds the token to (RFC 9449 section 5)."""
        proofs = self.headers.get_all("DPoP") or []
        if not proofs:
            return None
        if len(proofs) != 1:
            raise BadRequest("Send exactly one DPoP proof.")
        try:
            return check_token_request_proof(proofs[0], f"{self.server.url_for(name)}oauth/token")
        except ProofRefused as exc:
            raise InvalidProof(str(exc)) from exc

    def _read_body(self) -> bytes | None:
        """Return the request body, or None after answering 413 for an oversized one."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise BadRequest("Chunked request bodies are not supported; send Content-Length.")
        raw_length = self.headers.get("Content-Length", "0").strip()
        if not raw_length.isdigit():
            self.close_connection = True
            raise BadRequest("Content-Length must be a non-negative integer.")
        length = int(raw_length)
        if length > MAX_BODY_BYTES:
            self._drain(length)
            self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "request_too_large",
                f"Request bodies are limited to {MAX_BODY_BYTES} bytes.",
            )
            return None
        return self.rfile.read(length)

    def _drain(self, length: int) -> None:
        if length > MAX_DRAIN_BYTES:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 65536))
            if not chunk:
                break
            length -= len(chunk)

    def _error(self, status: HTTPStatus, error: str, description: str) -> None:
        self._json(status, {"error": error, "error_description": description})

    def _json(
        self,
        status: int,
        payload: object,
        headers: dict[str, str] | None = None,
        drip_seconds: float = 0.0,
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for header, value in (headers or {}).items():
            self.send_header(header, value)
        self.end_headers()
        if self.command != "HEAD":
            self._write(data, drip_seconds)

    def _write(self, data: bytes, drip_seconds: float) -> None:
        """Send the body at once, or in pieces spread over ``drip_seconds``."""
        pieces = max(1, min(len(data), round(drip_seconds / DRIP_EVERY)))
        size = -(-len(data) // pieces)
        try:
            for start in range(0, len(data), size):
                time.sleep(drip_seconds / pieces)
                self.wfile.write(data[start : start + size])
                self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client gave up waiting


class TokenRequest:
    """A validated client-credentials token request."""

    def __init__(
        self,
        audience: str,
        sub: str,
        expires_in: int,
        scope: str | None,
        permissions: list[str] | None,
        org_id: str | None = None,
        profile: str | None = None,
    ) -> None:
        self.audience = audience
        self.sub = sub
        self.expires_in = expires_in
        self.scope = scope
        self.permissions = permissions
        self.org_id = org_id
        self.profile = profile

    @classmethod
    def parse(cls, body: bytes, content_type: str, name: str) -> "TokenRequest":
        """Parse and validate a JSON or form-encoded body; raise BadRequest on bad input."""
        fields, is_json = _decode_body(body, content_type)
        grant_type = fields.get("grant_type")
        if grant_type is not None and grant_type != "client_credentials":
            raise BadRequest("grant_type must be 'client_credentials'.")
        if "permissions" in fields and not is_json:
            raise BadRequest("permissions can only be sent in a JSON body.")
        return cls(
            audience=_required_string(fields, "audience"),
            sub=_optional_string(fields, "sub") or f"{name}-client@clients",
            expires_in=_expires_in(fields.get("expires_in")),
            scope=_scope(fields.get("scope")),
            permissions=_permissions(fields.get("permissions")),
            org_id=_optional_string(fields, "org_id"),
            profile=_profile(fields.get("profile")),
        )

    def claims(self, issuer: str, now: int) -> dict[str, Any]:
        """Return the access token claims for ``issuer`` issued at ``now``."""
        claims: dict[str, Any] = {
            "iss": issuer,
            "sub": self.sub,
            "aud": self.audience,
            "iat": now,
            "exp": now + self.expires_in,
            "azp": self.sub.removesuffix("@clients"),
            "gty": "client-credentials",
        }
        if self.scope is not None:
            claims["scope"] = self.scope
        if self.permissions is not None:
            claims["permissions"] = self.permissions
        if self.org_id is not None:
            claims["org_id"] = self.org_id
        if self.profile == "rfc9068":  # RFC 9068 section 2.2: client_id and jti too
            claims["client_id"] = claims["azp"]
            claims["jti"] = secrets.token_urlsafe(16)
        return claims


def _decode_body(body: bytes, content_type: str) -> tuple[dict[str, Any], bool]:
    """Return the body's fields and whether it was JSON."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("The request body is not valid UTF-8.") from None
    # curl -d sends JSON labelled as a form, so a body that starts like an object is JSON.
    if "json" in content_type.lower() or text.lstrip().startswith("{"):
        try:
            fields = json.loads(text) if text.strip() else {}
        except ValueError:
            raise BadRequest("The request body is not valid JSON.") from None
        if not isinstance(fields, dict):
            raise BadRequest("The JSON body must be an object.")
        return fields, True
    return dict(reversed(parse_qsl(text, keep_blank_values=True))), False


def _required_string(fields: dict[str, Any], key: str) -> str:
    value = _optional_string(fields, key)
    if value is None:
        raise BadRequest(f"{key} is required.")
    return value


def _optional_string(fields: dict[str, Any], key: str) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{key} must be a non-empty string.")
    return value


def _expires_in(value: object) -> int:
    if value is None:
        return DEFAULT_EXPIRES_IN
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_EXPIRES_IN:
        raise BadRequest(f"expires_in must be an integer from 1 to {MAX_EXPIRES_IN}.")
    return value


def _scope(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("scope must be a space-separated string.")
    return " ".join(value.split()) or None


def _profile(value: object) -> str | None:
    if value not in (None, "auth0", "rfc9068"):
        raise BadRequest("profile must be auth0 or rfc9068.")
    return value


def _permissions(value: object) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise BadRequest("permissions must be a list of non-empty strings.")
    return value


def start_in_thread(
    store: DevKeyStore,
    host: str = "127.0.0.1",
    port: int = 0,
    public_url: str | None = None,
    verbose: bool = False,
) -> DevIssuerServer:
    """Start a dev issuer serving from a daemon thread; call ``.stop()`` when done."""
    server = DevIssuerServer(host, port, store, public_url=public_url, verbose=verbose)
    # A short poll interval keeps stop() fast; shutdown() waits for the next poll.
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="devissuer", daemon=True
    )
    server._thread = thread
    thread.start()
    return server
