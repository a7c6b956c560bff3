"""DPoP proofs (RFC 9449): a request signed by the key an access token is bound to. No DRF here.

A proof is checked against the request it came with: its type and algorithm, its public key and
signature, the method and URL it names, its age, the hash of the access token, the tenant's
nonce when the tenant asks for one, and, last, that its ``jti`` was never seen in the shared store
within its window (so a proof replayed to any process of the deployment is refused).

Nonces are derived, not stored: an HMAC of the tenant and the current period under SECRET_KEY,
so every process issues and accepts the same values without a round trip. A nonce is accepted
during its period and the next one, so a client's nonce stays good for one to two periods.
"""

import functools
import hmac
import math
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import jwt
from django.utils.crypto import salted_hmac

from authz.conf import authz_settings
from authz.jose import THUMBPRINT_MEMBERS, access_token_hash, b64url, public_key_of, thumbprint
from authz.jwks import PRIVATE_MEMBERS, SUPPORTED_KEY_TYPES, is_sound_key
from authz.metrics import count_dpop_replay
from authz.policy import IssuerPolicy
from authz.store import claim, derived_key, shared_store
from authz.tokens import (
    ALGORITHMS,
    KEY_TYPE_OF_ALGORITHM,
    MalformedToken,
    base64url,
    json_object,
    seconds_of,
)

PROOF_TYPE = "dpop+jwt"
PROOF_CLAIMS = ("jti", "htm", "htu", "iat", "ath")
MAX_JTI_LENGTH = 256
PROOF_KEY_CACHE_SIZE = 4096
DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 3986 section 2.3: unreserved characters are never percent-encoded after normalization.
PERCENT_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
UNRESERVED = re.compile(r"[A-Za-z0-9._~-]")


class ProofError(Exception):
    """A DPoP proof that must be refused; ``code`` is stable, ``description`` is for humans."""

    code = "invalid_dpop_proof"
    description = "The DPoP proof is invalid."

    def __init__(self, description: str | None = None) -> None:
        super().__init__(description or self.description)
        self.description = description or self.description


class ProofReplayed(ProofError):
    """The proof's ``jti`` was seen before within its window (answered as any invalid proof)."""

    description = "The DPoP proof was already used (its jti was seen before)."


class NonceRequired(ProofError):
    """The tenant issues nonces and the proof carries none of the current ones."""

    code = "use_dpop_nonce"
    description = "The DPoP proof must carry the nonce this API issued (DPoP-Nonce header)."


class ReplayCheckUnavailable(Exception):
    """The shared store cannot say whether a proof is new: refuse rather than allow a replay."""


@dataclass(frozen=True, slots=True)
class ProofContext:
    """The request a proof must describe: method, URL as the client addressed it, the token."""

    method: str
    url: str
    access_token: str
    realm: str


@functools.lru_cache(maxsize=4096)  # a pure function of the text; the same URLs come back
def normalized_url(url: str) -> str | None:
    """RFC 3986 syntax- and scheme-based normalization without query and fragment; None if bad."""
    try:  # ValueError covers a bad port and text that is not Unicode (a lone surrogate)
        parts = urlsplit(url)
        port = parts.port
        path = _normalized_path(parts.path)
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in DEFAULT_PORTS or not host or parts.username is not None:
        return None
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return f"{scheme}://{netloc}{path}"


def current_nonce(realm: str, now: float | None = None) -> str:
    """The nonce a tenant issues now."""
    return _nonce(realm, _period(now))


@dataclass(frozen=True, slots=True)
class VerifiedProof:
    """A proof that passed every check but the replay check: its key's thumbprint and its id."""

    jkt: str
    jti: str


def verify_proof(proof: str, context: ProofContext, policy: IssuerPolicy) -> VerifiedProof:
    """Check a proof against its request and policy, all but its binding and its novelty."""
    header, payload, signing_input, signature = _parts(proof)
    algorithm = _algorithm(header, policy)
    jkt, key = _public_key(header, algorithm)
    _check_signed(algorithm, signing_input, key, signature, payload, context, policy)
    return VerifiedProof(jkt, payload["jti"])


def check_proof(
    proof: str, context: ProofContext, policy: IssuerPolicy, bound_to: str, record: bool = True
) -> None:
    """Every check of a proof: ``verify_proof``'s, its key against the token's (``cnf.jkt``),
    then that its ``jti`` was never seen within its window (recorded in the shared store).

    Only a proof that passed every other check claims its ``jti``: a forged proof naming a
    victim's key and ``jti`` must not use that id up. ``record=False`` only looks, so the token
    debugger never uses up a client's proof.
    """
    verified = verify_proof(proof, context, policy)
    if verified.jkt != bound_to:
        raise ProofError("The DPoP proof key is not the key the token is bound to.")
    if not _is_new(context.realm, verified, record):
        if record:  # a replay the API refused, not one the debugger found
            count_dpop_replay(context.realm)
        raise ProofReplayed()


def _check_signed(
    algorithm: str,
    signing_input: bytes,
    key: Any,
    signature: bytes,
    payload: dict[str, Any],
    context: ProofContext,
    policy: IssuerPolicy,
) -> None:
    if not _verifies(algorithm, signing_input, key, signature):
        raise ProofError("The DPoP proof signature does not verify with its key.")
    _check_claims(payload, context)
    if policy.dpop_nonce and not _nonce_accepted(payload.get("nonce"), context.realm):
        raise NonceRequired()


def _is_new(realm: str, proof: VerifiedProof, record: bool) -> bool:
    """Whether the proof's ``jti`` is unseen in its window; recorded unless ``record`` is off."""
    window = authz_settings.DPOP_PROOF_MAX_AGE + authz_settings.DPOP_PROOF_MAX_FUTURE
    key = derived_key("dpop-jti", f"{realm}\n{proof.jkt}\n{proof.jti}")
    try:
        return claim(key, window) if record else shared_store().get(key) is None
    except Exception as exc:
        raise ReplayCheckUnavailable() from exc


def _parts(proof: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    if len(proof) > authz_settings.DPOP_MAX_PROOF_BYTES:
        raise ProofError("The DPoP proof is too large.")
    segments = proof.split(".")
    if len(segments) != 3:
        raise ProofError("The DPoP proof is not a compact JWS.")
    try:
        header = json_object(base64url(segments[0]), "The DPoP proof header")
        payload = json_object(base64url(segments[1]), "The DPoP proof payload")
        signature = base64url(segments[2])
    except MalformedToken as exc:
        raise ProofError(exc.description) from exc
    if "crit" in header or header.get("b64", True) is not True:
        raise ProofError("The DPoP proof uses header extensions this API does not accept.")
    return header, payload, f"{segments[0]}.{segments[1]}".encode("ascii"), signature


def _algorithm(header: dict[str, Any], policy: IssuerPolicy) -> str:
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in (PROOF_TYPE, f"application/{PROOF_TYPE}"):
        raise ProofError('The DPoP proof must be typed "dpop+jwt".')
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in policy.dpop_algorithms:
        accepted = " ".join(policy.dpop_algorithms)
        raise ProofError(f"The DPoP proof must be signed with one of: {accepted}.")
    return algorithm


def _public_key(header: dict[str, Any], algorithm: str) -> tuple[str, Any]:
    """The thumbprint and prepared key of the proof's ``jwk``: a sound public key of the
    algorithm's type, never a private one. Parsed once per key and algorithm in this process."""
    jwk = header.get("jwk")
    if not isinstance(jwk, dict) or jwk.get("kty") not in SUPPORTED_KEY_TYPES:
        raise ProofError("The DPoP proof must carry its public key (jwk) in its header.")
    if any(member in jwk for member in PRIVATE_MEMBERS):
        raise ProofError("The DPoP proof key (jwk) must be a public key, not a private one.")
    if jwk["kty"] != KEY_TYPE_OF_ALGORITHM[algorithm[:2]]:
        raise ProofError("The DPoP proof key (jwk) does not fit its algorithm.")
    if not all(isinstance(jwk.get(name), str) for name in THUMBPRINT_MEMBERS[jwk["kty"]]):
        raise ProofError("The DPoP proof key (jwk) is not a usable public key.")
    kty = jwk["kty"]
    return _known_key(algorithm, kty, tuple(jwk[name] for name in THUMBPRINT_MEMBERS[kty]))


# RFC 7638's members are all that make the key, so equal members are one key; a client signs
# many proofs with one. A key refused by _prepared raises, and is not kept.
@functools.lru_cache(maxsize=PROOF_KEY_CACHE_SIZE)
def _known_key(algorithm: str, kty: str, members: tuple[str, ...]) -> tuple[str, Any]:
    """The thumbprint and prepared key of a proof key, parsed once per process."""
    jwk = dict(zip(THUMBPRINT_MEMBERS[kty], members, strict=True))
    return thumbprint(jwk), _prepared(jwk, algorithm)


def _prepared(jwk: dict[str, Any], algorithm: str) -> Any:
    try:
        parsed = public_key_of(jwk, algorithm)
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError) as exc:
        raise ProofError("The DPoP proof key (jwk) is not a usable public key.") from exc
    if not is_sound_key(parsed, {**jwk, "alg": algorithm}):
        raise ProofError("The DPoP proof key (jwk) is too weak or on the wrong curve.")
    return ALGORITHMS[algorithm].prepare_key(parsed)


def _verifies(algorithm: str, signing_input: bytes, key: Any, signature: bytes) -> bool:
    try:
        return ALGORITHMS[algorithm].verify(signing_input, key, signature)
    except (ValueError, TypeError):
        return False


def _check_claims(payload: dict[str, Any], context: ProofContext) -> None:
    for name in PROOF_CLAIMS:
        if name not in payload:
            raise ProofError(f'The DPoP proof has no "{name}" claim.')
    jti = payload["jti"]
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise ProofError("The DPoP proof jti must be a string of 1 to 256 characters.")
    if payload["htm"] != context.method:
        raise ProofError(f"The DPoP proof is for another method (htm is not {context.method}).")
    if not _same_url(payload["htu"], context.url):
        raise ProofError(f"The DPoP proof is for another URL (htu is not {context.url}).")
    _check_times(payload)
    if not _same_text(payload["ath"], access_token_hash(context.access_token)):
        raise ProofError("The DPoP proof is for another access token (ath does not match).")


def _same_text(sent: Any, expected: str) -> bool:
    """A constant-time comparison of a claim with the value it must have; any JSON is safe."""
    if not isinstance(sent, str):
        return False
    return hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), expected.encode("ascii"))


def _same_url(htu: Any, url: str) -> bool:
    """Whether ``htu`` names the request's URL; a URL that does not parse matches nothing."""
    expected = normalized_url(url)
    return expected is not None and isinstance(htu, str) and normalized_url(htu) == expected


def _check_times(payload: dict[str, Any]) -> None:
    """``iat`` within its window; ``exp`` and ``nbf``, optional in a proof, honoured if sent."""
    times = {name: _seconds(payload, name) for name in ("iat", "exp", "nbf") if name in payload}
    now, future = time.time(), authz_settings.DPOP_PROOF_MAX_FUTURE
    if now - times["iat"] > authz_settings.DPOP_PROOF_MAX_AGE:
        raise ProofError("The DPoP proof is too old (iat); make a new proof for each request.")
    if times["iat"] - now > future:
        raise ProofError("The DPoP proof was issued in the future (iat); check the client clock.")
    if now - times.get("exp", math.inf) >= future:  # the same allowance for clock skew
        raise ProofError("The DPoP proof has expired (exp).")
    if times.get("nbf", -math.inf) - now > future:
        raise ProofError("The DPoP proof is not valid yet (nbf).")


def _seconds(payload: dict[str, Any], name: str) -> int:
    seconds = seconds_of(payload[name])
    if seconds is None:
        raise ProofError(f"The DPoP proof {name} must be a number of seconds.")
    return seconds


def _normalized_path(path: str) -> str:
    """Percent-encoding normalized (RFC 3986 section 6.2.2.2) and without dot segments."""

    def normalize(match: re.Match) -> str:
        character = unquote(match.group())
        return character if UNRESERVED.fullmatch(character) else match.group().upper()

    path = PERCENT_ENCODED.sub(normalize, quote(path, safe="/%:@!$&'()*+,;=-._~"))
    segments = path.split("/")
    kept: list[str] = []
    for segment in segments[1:]:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    if segments[-1] in (".", ".."):
        kept.append("")
    return "/" + "/".join(kept)


def _period(now: float | None) -> int:
    return int((time.time() if now is None else now) // authz_settings.DPOP_NONCE_PERIOD)


def _nonce(realm: str, period: int) -> str:
    digest = salted_hmac("authz.dpop.nonce", f"{realm}\n{period}", algorithm="sha256").digest()
    return b64url(digest[:18])


def _nonce_accepted(nonce: Any, realm: str) -> bool:
    period = _period(None)
    return any(_same_text(nonce, _nonce(realm, candidate)) for candidate in (period, period - 1))
