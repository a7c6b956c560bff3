"""Fetching a tenant's JSON Web Key Set from its issuer and storing it in the shared cache."""

import hashlib
import ipaddress
import json
import logging
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import jwt
import requests
from django.core.cache import cache

from authz.conf import authz_settings
from tenants.directory import KeySetSource, TenantConfig

logger = logging.getLogger(__name__)

SUPPORTED_KEY_TYPES = ("RSA", "EC", "OKP")
GENERATION_KEY = "jwks:generation"
MAX_REDIRECTS = 3


class JWKSError(Exception):
    """A key set could not be fetched or used."""


class IssuerUnreachable(JWKSError):
    """The issuer did not answer, timed out, or failed on its side: worth retrying."""


class InvalidKeySet(JWKSError):
    """The issuer answered with something that is not a usable key set."""


class RefreshInProgress(JWKSError):
    """Another process is refreshing this tenant's key set right now."""


@dataclass(frozen=True)
class KeySetRecord:
    """A tenant's key set as stored in the cache, with its provenance and health."""

    keys: tuple[dict[str, Any], ...]
    version: str
    jwks_url: str
    fetched_at: float | None
    last_error: str | None = None
    error_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The cacheable form."""
        return {**self.__dict__, "keys": list(self.keys)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "KeySetRecord":
        """Rebuild from the cached form."""
        return cls(**{**data, "keys": tuple(data["keys"])})


@dataclass(frozen=True)
class KeySetHealth:
    """How a tenant's key set looks to an operator."""

    status: str  # ok, degraded (last fetch failed, keys kept), stale, missing
    record: KeySetRecord | None

    @property
    def label(self) -> str:
        """A word for lists and filters."""
        return HEALTH_LABELS[self.status]


HEALTH_LABELS = {
    "ok": "OK",
    "degraded": "Last fetch failed; keys kept",
    "stale": "Stale: keys older than the max-stale limit",
    "missing": "No keys",
}


def key_set_health(record: KeySetRecord | None, jwks_url: str) -> KeySetHealth:
    """Classify a stored record for the tenant's current JWKS URL."""
    if record is None or record.jwks_url != jwks_url or not record.keys:
        return KeySetHealth("missing", record)
    if time.time() - (record.fetched_at or 0) > authz_settings.KEYSET_MAX_STALE:
        return KeySetHealth("stale", record)
    return KeySetHealth("degraded" if record.last_error else "ok", record)


def read_records(slugs: list[str]) -> dict[str, KeySetRecord]:
    """The stored records of many tenants in one cache round trip."""
    found = cache.get_many([record_key(slug) for slug in slugs])
    return {key.removeprefix("jwks:"): KeySetRecord.from_dict(data) for key, data in found.items()}


def record_key(slug: str) -> str:
    """Cache key of a tenant's key set record."""
    return f"jwks:{slug}"


def read_record(slug: str) -> KeySetRecord | None:
    """The stored key set record of a tenant, if any."""
    data = cache.get(record_key(slug))
    return KeySetRecord.from_dict(data) if data else None


def _refuse_internal_destination(url: str) -> None:
    """Outside development, refuse hosts that resolve to private, loopback or reserved addresses."""
    if authz_settings.ALLOW_INSECURE_ISSUERS:
        return
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except (socket.gaierror, UnicodeError) as exc:
        raise IssuerUnreachable(f"The issuer host {host} does not resolve.") from exc
    for address in addresses:
        if not ipaddress.ip_address(address.split("%")[0]).is_global:
            raise InvalidKeySet(f"The issuer host {host} resolves to a non-public address.")


def _get_following_same_host(url: str, session: requests.Session) -> requests.Response:
    """GET without following redirects to another host: the JWKS URL must not be re-pointed."""
    origin = urlsplit(url)[:2]
    timeout = (authz_settings.JWKS_CONNECT_TIMEOUT, authz_settings.JWKS_READ_TIMEOUT)
    for _ in range(MAX_REDIRECTS + 1):
        _refuse_internal_destination(url)
        response = session.get(url, timeout=timeout, stream=True, allow_redirects=False)
        if not response.is_redirect:
            return response
        url = urljoin(url, response.headers["Location"])
        response.close()
        if urlsplit(url)[:2] != origin:
            raise InvalidKeySet(f"The issuer redirected the key set to another host ({url}).")
    raise InvalidKeySet("The issuer redirected the key set too many times.")


def _read_bounded(response: requests.Response) -> bytes:
    """Read the body, refusing more than JWKS_MAX_BYTES."""
    limit = authz_settings.JWKS_MAX_BYTES
    body = bytearray()
    for chunk in response.iter_content(chunk_size=16 * 1024):
        body += chunk
        if len(body) > limit:
            raise InvalidKeySet(f"The key set is larger than {limit} bytes.")
    return bytes(body)


def fetch_document(url: str) -> bytes:
    """GET an issuer document safely: short timeouts, bounded size, no cross-host redirects."""
    try:
        with requests.Session() as session:
            response = _get_following_same_host(url, session)
            with response:
                if response.status_code >= 500:
                    raise IssuerUnreachable(f"The issuer answered HTTP {response.status_code}.")
                if response.status_code != 200:
                    raise InvalidKeySet(f"The issuer answered HTTP {response.status_code}.")
                return _read_bounded(response)
    except requests.RequestException as exc:
        raise IssuerUnreachable(f"The issuer could not be reached: {type(exc).__name__}.") from exc


def fetch_jwks(url: str) -> tuple[dict[str, Any], ...]:
    """Fetch and validate a key set; return its usable public signing keys."""
    return parse_jwks(fetch_document(url))


def parse_jwks(body: bytes) -> tuple[dict[str, Any], ...]:
    """Keep the public signing keys with a kid that PyJWT can load; refuse a set with none."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidKeySet("The key set is not JSON.") from exc
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise InvalidKeySet('The key set has no "keys" list.')
    keys: dict[str, dict[str, Any]] = {}
    for candidate in document["keys"][: authz_settings.JWKS_MAX_KEYS]:
        public = _usable_public_key(candidate)
        if public is not None:
            keys.setdefault(public["kid"], public)
    if not keys:
        raise InvalidKeySet("The key set has no usable public signing key with a kid.")
    return tuple(keys.values())


PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k", "oth")


def _usable_public_key(candidate: object) -> dict[str, Any] | None:
    if not isinstance(candidate, dict) or candidate.get("kty") not in SUPPORTED_KEY_TYPES:
        return None
    if not isinstance(candidate.get("kid"), str) or not candidate["kid"]:
        return None
    if candidate.get("use", "sig") != "sig":
        return None
    public = {name: value for name, value in candidate.items() if name not in PRIVATE_MEMBERS}
    try:
        jwt.PyJWK(public)
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
        return None
    return public


def _version_of(keys: tuple[dict[str, Any], ...]) -> str:
    """A stable version: unchanged keys keep their version, so processes skip re-parsing."""
    canonical = json.dumps(keys, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def read_generation() -> str | None:
    """The stamp that changes whenever any tenant's stored keys change."""
    return cache.get(GENERATION_KEY)


def _identity(record: KeySetRecord) -> tuple[str, str]:
    return record.version, record.jwks_url


def _store(slug: str, record: KeySetRecord, previous: KeySetRecord | None) -> KeySetRecord:
    cache.set(record_key(slug), record.as_dict(), timeout=None)
    # After the record: a process that sees the new stamp must also read the new record.
    if previous is None or _identity(previous) != _identity(record):
        cache.set(GENERATION_KEY, uuid.uuid4().hex, timeout=None)
    return record


def refresh_key_set(tenant: TenantConfig | KeySetSource) -> KeySetRecord:
    """Fetch and store a tenant's key set; single-flight per tenant across all processes."""
    lock_key, token = f"jwks-lock:{tenant.slug}", uuid.uuid4().hex
    if not cache.add(lock_key, token, timeout=authz_settings.REFRESH_LOCK_TIMEOUT):
        raise RefreshInProgress(f"The key set of {tenant.slug} is being refreshed elsewhere.")
    started = time.monotonic()
    outcome, key_count = "error", 0
    try:
        record = _fetch_and_store(tenant)
        outcome, key_count = "ok", len(record.keys)
        return record
    except JWKSError as exc:
        outcome = f"error: {exc}"
        raise
    finally:
        if cache.get(lock_key) == token:
            cache.delete(lock_key)
        _log_refresh(tenant.slug, outcome, key_count, time.monotonic() - started)


def _log_refresh(slug: str, outcome: str, key_count: int, seconds: float) -> None:
    """One structured line per refresh; the fields travel in ``extra`` for JSON formatters."""
    fields = {"tenant": slug, "outcome": outcome, "keys": key_count}
    fields["duration_ms"] = round(seconds * 1000, 1)
    level = logging.INFO if outcome == "ok" else logging.WARNING
    logger.log(level, "key set refresh %s", fields, extra={"event": "jwks_refresh", **fields})


def _fetch_and_store(tenant: TenantConfig | KeySetSource) -> KeySetRecord:
    previous = read_record(tenant.slug)
    if previous is not None and previous.jwks_url != tenant.jwks_url:
        previous = None  # keys of another issuer must never be kept
    try:
        keys = fetch_jwks(tenant.jwks_url)
    except JWKSError as exc:
        _store(tenant.slug, _failed(previous, tenant.jwks_url, str(exc)), previous)
        raise
    record = KeySetRecord(keys, _version_of(keys), tenant.jwks_url, fetched_at=time.time())
    return _store(tenant.slug, record, previous)


def _failed(previous: KeySetRecord | None, jwks_url: str, error: str) -> KeySetRecord:
    """Keep the last good keys and note the error beside them."""
    if previous is None:
        return KeySetRecord((), "", jwks_url, None, error, time.time())
    return KeySetRecord(
        previous.keys, previous.version, jwks_url, previous.fetched_at, error, time.time()
    )
