"""Verifying an access token against an issuer policy's keys and claims. No DRF in here.

Every failure is one TokenError subclass with a stable code and a human sentence; PyJWT's
algorithm objects check signatures, and nothing from ``jwt`` escapes this module.
"""

import base64
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jwt
from jwt.algorithms import get_default_algorithms

from authz.conf import authz_settings
from authz.policy import IssuerPolicy

REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "sub"]
KEY_TYPE_OF_ALGORITHM = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class TokenError(Exception):
    """A token that must be refused; ``code`` is stable, ``description`` is for humans."""

    code = "invalid_token"
    description = "The access token is invalid."

    def __init__(self, description: str | None = None) -> None:
        super().__init__(description or self.description)
        self.description = description or self.description


class MalformedToken(TokenError):
    """Not a compact JWS, or its header or payload cannot be read."""

    code = "malformed_token"
    description = "The access token is not a well-formed JWT."


class DisallowedAlgorithm(TokenError):
    """Signed with an algorithm the tenant does not allow, or unfit for the key."""

    code = "disallowed_algorithm"
    description = "The access token is signed with an algorithm this API does not accept."


class UnknownKey(TokenError):
    """No key of the tenant's issuer has the token's kid."""

    code = "unknown_key"
    description = "The access token was signed by a key this API does not know."


class InvalidSignature(TokenError):
    """The signature does not verify with the tenant's key."""

    code = "invalid_signature"
    description = "The access token signature is invalid."


class TokenExpired(TokenError):
    """``exp`` is in the past, beyond the leeway."""

    code = "token_expired"
    description = "The access token has expired."


class TokenNotYetValid(TokenError):
    """``nbf`` or ``iat`` is in the future, beyond the leeway."""

    code = "token_not_yet_valid"
    description = "The access token is not valid yet."


class InvalidIssuer(TokenError):
    """``iss`` is not exactly the tenant's issuer."""

    code = "invalid_issuer"
    description = "The access token was issued by another issuer."


class InvalidAudience(TokenError):
    """``aud`` names none of the tenant's audiences."""

    code = "invalid_audience"
    description = "The access token is not meant for this API."


class InvalidClaims(TokenError):
    """A required claim is missing or has the wrong type."""

    code = "invalid_claims"
    description = "The access token claims are incomplete or malformed."


@dataclass(frozen=True)
class SigningKey:
    """A public key of the issuer, as published in its key set."""

    kid: str
    key_type: str
    declared_algorithm: str | None
    public_key: Any

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any]) -> "SigningKey":
        """Parse one JWK (already validated by the fetcher)."""
        return cls(jwk["kid"], jwk["kty"], jwk.get("alg"), jwt.PyJWK(jwk).key)


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified facts of a token."""

    subject: str
    issuer: str
    scopes: frozenset[str]
    expires_at: int
    payload: Mapping[str, Any]


# PyJWT's algorithm objects do the cryptography; the compact serialization and the claims are
# checked here, as strictly as jwt.decode checks them (tests/test_token_conformance.py holds the
# two side by side), because jwt.decode's per-character base64url scan doubled the cost of a
# first-seen token (docs/performance.md).
ALGORITHMS = get_default_algorithms()
BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def _base64url(segment: str) -> bytes:
    """A segment decoded only when it is canonical base64url (its alphabet, at most 2 ``=``)."""
    data = segment.rstrip("=")
    padding = len(segment) - len(data)
    if padding > 2 or (padding and len(segment) % 4) or len(data) % 4 == 1:
        raise MalformedToken()
    if not BASE64URL.fullmatch(data):
        raise MalformedToken()
    decoded = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    # Non-zero trailing bits would give a second spelling of the same bytes.
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != data.encode("ascii"):
        raise MalformedToken()
    return decoded


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise MalformedToken(f"The access token {what} is not valid JSON.") from exc
    if not isinstance(value, dict):
        raise MalformedToken(f"The access token {what} is not a JSON object.")
    return value


def _segments(token: str) -> list[str]:
    """The three segments of a compact JWS of acceptable size."""
    if len(token) > authz_settings.MAX_TOKEN_BYTES:
        raise MalformedToken("The access token is too large.")
    segments = token.split(".")
    if len(segments) != 3:
        raise MalformedToken()
    return segments


def read_header(header_segment: str) -> dict[str, Any]:
    """The unverified JOSE header, shape-checked."""
    header = _json_object(_base64url(header_segment), "header")
    if not isinstance(header.get("kid", ""), str):
        raise MalformedToken("The access token key id (kid) must be a string.")
    if "crit" in header:
        raise MalformedToken("The access token uses critical header extensions.")
    if header.get("b64", True) is not True:
        raise MalformedToken("The access token payload must be base64url-encoded (b64).")
    return header


def _checked_algorithm(header: dict[str, Any], policy: IssuerPolicy) -> str:
    """The header's alg, only when the policy allows it (never none, never HMAC)."""
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in policy.algorithms:
        raise DisallowedAlgorithm()
    return algorithm


def _checked_key(key: SigningKey, algorithm: str) -> Any:
    """The public key object, when its type, curve and declared alg fit the algorithm."""
    declared = key.declared_algorithm
    if (declared and declared != algorithm) or key.key_type != KEY_TYPE_OF_ALGORITHM[algorithm[:2]]:
        raise DisallowedAlgorithm("The access token algorithm does not match its key.")
    try:
        return ALGORITHMS[algorithm].prepare_key(key.public_key)
    except (jwt.InvalidKeyError, TypeError, ValueError) as exc:
        raise DisallowedAlgorithm("The access token algorithm does not match its key.") from exc


def verify_token(
    token: str, policy: IssuerPolicy, key_for_kid: Callable[[str], SigningKey]
) -> Claims:
    """Verify signature and claims against the policy; raise a TokenError otherwise."""
    header_segment, payload_segment, signature_segment = _segments(token)
    header = read_header(header_segment)
    algorithm = _checked_algorithm(header, policy)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UnknownKey("The access token has no key id (kid).")
    public_key = _checked_key(key_for_kid(kid), algorithm)
    payload_json = _base64url(payload_segment)
    signature = _base64url(signature_segment)
    signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
    if not _signature_verifies(algorithm, signing_input, public_key, signature):
        raise InvalidSignature()
    return _claims(_json_object(payload_json, "payload"), policy)


def _signature_verifies(algorithm: str, signing_input: bytes, key: Any, signature: bytes) -> bool:
    try:
        return ALGORITHMS[algorithm].verify(signing_input, key, signature)
    except (ValueError, TypeError):  # a signature of the wrong size for some key types
        return False


def _claims(payload: dict[str, Any], policy: IssuerPolicy) -> Claims:
    """The payload's claims, checked in jwt.decode's order, then typed."""
    for name in REQUIRED_CLAIMS:
        if payload.get(name) is None:
            raise InvalidClaims(f'The access token has no "{name}" claim.')
    now, leeway = time.time(), policy.leeway
    for name in ("iat", "nbf"):
        if name in payload and _seconds(payload, name) > now + leeway:
            raise TokenNotYetValid(f"The access token is not valid yet ({name}).")
    if _seconds(payload, "exp") <= now - leeway:
        raise TokenExpired()
    if payload["iss"] != policy.issuer:
        raise InvalidIssuer()
    _check_audience(payload["aud"], policy.audiences)
    if not isinstance(payload["sub"], str) or not payload["sub"]:
        raise InvalidClaims("The access token subject (sub) must be a non-empty string.")
    if not isinstance(payload.get("jti", ""), str):
        raise InvalidClaims("The access token id (jti) must be a string.")
    return Claims(
        subject=payload["sub"],
        issuer=payload["iss"],
        scopes=granted_scopes(payload, policy.scope_claims),
        expires_at=int(payload["exp"]),
        payload=MappingProxyType(payload),
    )


def _seconds(payload: dict[str, Any], name: str) -> int:
    """A NumericDate claim in whole seconds; RFC 7519 wants a JSON number, not a string."""
    value = payload[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidClaims(f"The {name} claim must be a number of seconds.")
    return int(value)


def _check_audience(audience: Any, accepted: tuple[str, ...]) -> None:
    """Any one of the tenant's audiences, in ``aud`` as a string or a list of strings."""
    if not audience:
        raise InvalidClaims('The access token has no "aud" claim.')
    names = [audience] if isinstance(audience, str) else audience
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise InvalidAudience("The access token audience (aud) must be a string or a list.")
    if not any(name in names for name in accepted):
        raise InvalidAudience()


def granted_scopes(payload: Mapping[str, Any], scope_claims: str) -> frozenset[str]:
    """Scopes from the ``scope`` string and/or Auth0's ``permissions`` array, as chosen."""
    scopes: set[str] = set()
    if scope_claims in ("scope", "both"):
        scope = payload.get("scope", "")
        if not isinstance(scope, str):
            raise InvalidClaims("The scope claim must be a space-separated string.")
        scopes.update(scope.split())
    if scope_claims in ("permissions", "both"):
        permissions = payload.get("permissions", [])
        if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
            raise InvalidClaims("The permissions claim must be a list of strings.")
        scopes.update(permissions)
    scopes.discard("")
    return frozenset(scopes)
