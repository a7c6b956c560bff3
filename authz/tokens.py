"""Verifying an access token against one tenant's keys and claims. No DRF in here.

Every PyJWT failure is translated into one TokenError subclass with a stable code and a human
sentence; nothing from ``jwt`` escapes this module.
"""

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jwt
from jwt.utils import base64url_decode

from authz.conf import authz_settings
from tenants.directory import TenantConfig

REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "sub"]
TIME_CLAIMS = ("exp", "iat", "nbf")
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


@dataclass(frozen=True)
class Claims:
    """The verified facts of a token."""

    subject: str
    issuer: str
    scopes: frozenset[str]
    expires_at: int
    payload: Mapping[str, Any]


PYJWT_ERRORS: tuple[tuple[type[Exception], type[TokenError]], ...] = (
    (jwt.ExpiredSignatureError, TokenExpired),
    (jwt.ImmatureSignatureError, TokenNotYetValid),
    (jwt.InvalidIssuerError, InvalidIssuer),
    (jwt.InvalidAudienceError, InvalidAudience),
    (jwt.MissingRequiredClaimError, InvalidClaims),
    (jwt.InvalidSignatureError, InvalidSignature),
    (jwt.InvalidAlgorithmError, DisallowedAlgorithm),
    (jwt.InvalidKeyError, DisallowedAlgorithm),
    (jwt.DecodeError, MalformedToken),
    (jwt.InvalidTokenError, InvalidClaims),
)


def _translate(exc: Exception) -> TokenError:
    if isinstance(exc, jwt.DecodeError) and " claim " in str(exc):
        return InvalidClaims(f"{InvalidClaims.description} ({exc})")  # a signed, mistyped claim
    for pyjwt_error, token_error in PYJWT_ERRORS:
        if isinstance(exc, pyjwt_error):
            return token_error(_sentence(exc, token_error))
    return TokenError()


def _sentence(exc: Exception, token_error: type[TokenError]) -> str:
    """PyJWT's own words where they help (which claim), ours where they would not."""
    if token_error in (InvalidClaims, TokenNotYetValid) and str(exc):
        return f"{token_error.description} ({exc})"
    return token_error.description


def read_header(token: str) -> dict[str, Any]:
    """The unverified JOSE header, size- and shape-checked."""
    if len(token) > authz_settings.MAX_TOKEN_BYTES:
        raise MalformedToken("The access token is too large.")
    # Only the header segment: PyJWT's get_unverified_header would decode the whole token, and
    # jwt.decode below decodes (and checks) all of it anyway.
    try:
        header = json.loads(base64url_decode(token.split(".", 1)[0]))
    except (ValueError, TypeError) as exc:
        raise MalformedToken() from exc
    if not isinstance(header, dict) or token.count(".") != 2:
        raise MalformedToken()
    if not isinstance(header.get("kid", ""), str):
        raise MalformedToken("The access token key id (kid) must be a string.")
    if "crit" in header:
        raise MalformedToken("The access token uses critical header extensions.")
    return header


def _checked_algorithm(header: dict[str, Any], tenant: TenantConfig) -> str:
    """The header's alg, only when the tenant allows it (never none, never HMAC)."""
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in tenant.algorithms:
        raise DisallowedAlgorithm()
    return algorithm


def _checked_key(key: SigningKey, algorithm: str) -> Any:
    """The public key object, when its type and declared alg fit the algorithm."""
    declared = key.declared_algorithm
    if (declared and declared != algorithm) or key.key_type != KEY_TYPE_OF_ALGORITHM[algorithm[:2]]:
        raise DisallowedAlgorithm("The access token algorithm does not match its key.")
    return key.public_key


def verify_token(
    token: str, tenant: TenantConfig, key_for_kid: Callable[[str], SigningKey]
) -> Claims:
    """Verify signature and claims against the tenant; raise a TokenError otherwise."""
    header = read_header(token)
    algorithm = _checked_algorithm(header, tenant)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UnknownKey("The access token has no key id (kid).")
    public_key = _checked_key(key_for_kid(kid), algorithm)
    try:
        payload = jwt.decode(
            token,
            public_key,
            algorithms=[algorithm],
            audience=list(tenant.audiences),
            issuer=tenant.issuer,
            leeway=tenant.leeway,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.PyJWTError as exc:
        raise _translate(exc) from exc
    return _claims(payload, tenant)


def _claims(payload: dict[str, Any], tenant: TenantConfig) -> Claims:
    if not isinstance(payload["sub"], str) or not payload["sub"]:
        raise InvalidClaims("The access token subject (sub) must be a non-empty string.")
    for name in TIME_CLAIMS:
        # PyJWT accepts numeric strings; RFC 7519 says NumericDate is a JSON number.
        if name in payload and not _is_number(payload[name]):
            raise InvalidClaims(f"The {name} claim must be a number of seconds.")
    return Claims(
        subject=payload["sub"],
        issuer=payload["iss"],
        scopes=granted_scopes(payload, tenant.scope_claims),
        expires_at=int(payload["exp"]),
        payload=MappingProxyType(payload),
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
