"""Verifying an access token against an issuer policy's keys and claims. No DRF in here.

Every failure is one TokenError subclass with a stable code and a human sentence; PyJWT's
algorithm objects check signatures, and nothing from ``jwt`` escapes this module.
"""

import base64
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jwt
from jwt.algorithms import get_default_algorithms

from authz import steps
from authz.conf import authz_settings
from authz.jose import public_key_of
from authz.policy import RFC9068_PROFILE, IssuerPolicy

REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "sub"]
# RFC 9068 section 2.2 adds these (iat and exp are already required).
RFC9068_CLAIMS = ["client_id", "jti"]
# The header typ of an access token (RFC 7515: media types are case-insensitive, and the
# "application/" prefix may be left out). Auth0's own tokens carry none, JWT or at+jwt.
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
AUTH0_TOKEN_TYPES = frozenset({None, "jwt", "application/jwt", *ACCESS_TOKEN_TYPES})
# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), separated by one space.
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# A subject with control characters could not be stored (PostgreSQL refuses NUL) or logged safely.
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
KEY_TYPE_OF_ALGORITHM = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
# RFC 7518 section 3.4: each ES algorithm has its one curve.
CURVE_OF_ALGORITHM = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
# 2**53: past it a JSON number is no longer a whole number of seconds in a double.
MAX_SECONDS = 2**53


class TokenError(Exception):
    """A token that must be refused; ``code`` is stable, ``description`` is for humans."""

    code = "invalid_token"
    description = "The access token is invalid."
    check = steps.FORMAT  # which check refused it (authz/steps.py), for the token debugger
    # Whether the failure holds for as long as the policy and key set stay the same: only such
    # failures may be remembered, so a repeated refusal skips the work.
    lasting = True

    def __init__(self, description: str | None = None, check: str | None = None) -> None:
        super().__init__(description or self.description)
        self.description = description or self.description
        self.check = check or self.check


class MalformedToken(TokenError):
    """Not a compact JWS, or its header or payload cannot be read."""

    code = "malformed_token"
    description = "The access token is not a well-formed JWT."


class DisallowedAlgorithm(TokenError):
    """Signed with an algorithm the tenant does not allow, or unfit for the key."""

    code = "disallowed_algorithm"
    description = "The access token is signed with an algorithm this API does not accept."
    check = steps.ALGORITHM


class UnknownKey(TokenError):
    """No key of the tenant's issuer has the token's kid."""

    code = "unknown_key"
    description = "The access token was signed by a key this API does not know."
    check = steps.KEY
    lasting = False


class InvalidSignature(TokenError):
    """The signature does not verify with the tenant's key."""

    code = "invalid_signature"
    description = "The access token signature is invalid."
    check = steps.SIGNATURE


class TokenExpired(TokenError):
    """``exp`` is in the past, beyond the leeway."""

    code = "token_expired"
    description = "The access token has expired."
    check = steps.TIME


class TokenNotYetValid(TokenError):
    """``nbf`` or ``iat`` is in the future, beyond the leeway."""

    code = "token_not_yet_valid"
    description = "The access token is not valid yet."
    check = steps.TIME
    lasting = False


class InvalidIssuer(TokenError):
    """``iss`` is not exactly the tenant's issuer."""

    code = "invalid_issuer"
    description = "The access token was issued by another issuer."
    check = steps.ISSUER


class InvalidAudience(TokenError):
    """``aud`` names none of the tenant's audiences."""

    code = "invalid_audience"
    description = "The access token is not meant for this API."
    check = steps.AUDIENCE


class InvalidTokenType(TokenError):
    """The header ``typ`` says this is not an access token, or the profile wants another."""

    code = "invalid_token_type"
    description = "The access token type (typ) is not one this API accepts."
    check = steps.TYPE


class InvalidOrganization(TokenError):
    """``org_id`` is missing or names an organization the tenant does not trust."""

    code = "invalid_organization"
    description = "The access token was issued for an organization this API does not trust."
    check = steps.ORGANIZATION


class InvalidClaims(TokenError):
    """A required claim is missing or has the wrong type."""

    code = "invalid_claims"
    description = "The access token claims are incomplete or malformed."
    check = steps.CLAIM_TYPES


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
        return cls(jwk["kid"], jwk["kty"], jwk.get("alg"), public_key_of(jwk))


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified facts of a token."""

    subject: str
    issuer: str
    scopes: frozenset[str]
    expires_at: int
    payload: Mapping[str, Any]
    # What callers derive from the claims once (the decision's identity headers): a remembered
    # token's claims are the same object on every hit.
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


# PyJWT's algorithm objects do the cryptography; the compact serialization and the claims are
# checked here, as strictly as jwt.decode checks them (tests/test_token_conformance.py holds the
# two side by side), because jwt.decode's per-character base64url scan doubled the cost of a
# first-seen token (docs/performance.md).
ALGORITHMS = get_default_algorithms()
BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
# The last character of a group of 2 carries 4 unused bits, of a group of 3, 2 unused bits.
CANONICAL_LAST = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}


def base64url(segment: str) -> bytes:
    """A segment decoded only when it is canonical base64url (its alphabet, at most 2 ``=``)."""
    data = segment.rstrip("=")
    padding = len(segment) - len(data)
    if padding > 2 or (padding and len(segment) % 4) or len(data) % 4 == 1:
        raise MalformedToken()
    if not BASE64URL.fullmatch(data):
        raise MalformedToken()
    # Non-zero trailing bits would give a second spelling of the same bytes: the last character
    # of a 2- or 3-character group may only be one whose unused low bits are zero.
    if data and data[-1] not in CANONICAL_LAST.get(len(data) % 4, data[-1]):
        raise MalformedToken()
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def json_object(data: bytes, what: str) -> dict[str, Any]:
    """A JSON object; ``what`` names it in the error, as in "The access token header"."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise MalformedToken(f"{what} is not valid JSON.") from exc
    if not isinstance(value, dict):
        raise MalformedToken(f"{what} is not a JSON object.")
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
    header = json_object(base64url(header_segment), "The access token header")
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
        raise DisallowedAlgorithm(
            "The access token algorithm does not match its key.", check=steps.KEY_FIT
        )
    curve = CURVE_OF_ALGORITHM.get(algorithm)
    if curve is not None and key.public_key.curve.name != curve:
        raise DisallowedAlgorithm(
            "The access token algorithm does not match its key's curve.", check=steps.KEY_FIT
        )
    try:
        return ALGORITHMS[algorithm].prepare_key(key.public_key)
    except (jwt.InvalidKeyError, TypeError, ValueError) as exc:
        raise DisallowedAlgorithm(
            "The access token algorithm does not match its key.", check=steps.KEY_FIT
        ) from exc


@dataclass(frozen=True, slots=True)
class UnverifiedToken:
    """A compact JWS split, its header and payload read; nothing about it is trusted yet."""

    header_segment: str
    payload_segment: str
    signature_segment: str
    header: dict[str, Any]
    payload: dict[str, Any]

    @property
    def issuer(self) -> Any:
        """The ``iss`` the token names, unverified: only ever a key to look a listed issuer up."""
        return self.payload.get("iss")


def read_token(token: str) -> UnverifiedToken:
    """Split and read a token once, so picking its issuer and verifying it share the parsing."""
    header_segment, payload_segment, signature_segment = _segments(token)
    header = read_header(header_segment)
    payload = json_object(base64url(payload_segment), "The access token payload")
    return UnverifiedToken(header_segment, payload_segment, signature_segment, header, payload)


def verify_token(
    token: str, policy: IssuerPolicy, key_for_kid: Callable[[str], SigningKey]
) -> Claims:
    """Verify signature and claims against the policy; raise a TokenError otherwise."""
    return verify_read(read_token(token), policy, key_for_kid)


def verify_read(
    token: UnverifiedToken, policy: IssuerPolicy, key_for_kid: Callable[[str], SigningKey]
) -> Claims:
    """Verify a token already read against the policy of the issuer it names."""
    header = token.header
    algorithm = _checked_algorithm(header, policy)
    _check_type(header, policy)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UnknownKey("The access token has no key id (kid).")
    # Before any key is looked up: a token naming an issuer not listed never causes a fetch.
    _check_issuer(token.payload, policy)
    public_key = _checked_key(key_for_kid(kid), algorithm)
    signature = base64url(token.signature_segment)
    signing_input = f"{token.header_segment}.{token.payload_segment}".encode("ascii")
    if not _signature_verifies(algorithm, signing_input, public_key, signature):
        raise InvalidSignature()
    return _claims(token.payload, policy)


def _check_issuer(payload: dict[str, Any], policy: IssuerPolicy) -> None:
    """``iss`` present, and exactly the policy's issuer."""
    if payload.get("iss") is None:
        raise InvalidClaims('The access token has no "iss" claim.', check=steps.ISSUER)
    if payload["iss"] != policy.issuer:
        raise InvalidIssuer()


def _check_type(header: dict[str, Any], policy: IssuerPolicy) -> None:
    """RFC 8725 section 3.11: a JWT of another type (a DPoP proof, an ID token) is never taken."""
    typ = header.get("typ")
    if typ is not None and not isinstance(typ, str):
        raise InvalidTokenType()
    typ = typ and typ.lower()
    accepted = ACCESS_TOKEN_TYPES if policy.token_profile == RFC9068_PROFILE else AUTH0_TOKEN_TYPES
    if typ not in accepted:
        raise InvalidTokenType(
            "The access token must be typed at+jwt (RFC 9068)."
            if policy.token_profile == RFC9068_PROFILE
            else None
        )


def _signature_verifies(algorithm: str, signing_input: bytes, key: Any, signature: bytes) -> bool:
    try:
        return ALGORITHMS[algorithm].verify(signing_input, key, signature)
    except (ValueError, TypeError):  # a signature of the wrong size for some key types
        return False


def _claims(payload: dict[str, Any], policy: IssuerPolicy) -> Claims:
    """The payload's claims, checked in jwt.decode's order, then typed."""
    required = REQUIRED_CLAIMS
    if policy.token_profile == RFC9068_PROFILE:
        required = REQUIRED_CLAIMS + RFC9068_CLAIMS
    for name in required:
        if payload.get(name) is None:
            raise InvalidClaims(f'The access token has no "{name}" claim.', check=steps.REQUIRED)
    now, leeway = time.time(), policy.leeway
    for name in ("iat", "nbf"):
        if name in payload and _seconds(payload, name) > now + leeway:
            raise TokenNotYetValid(f"The access token is not valid yet ({name}).")
    if _seconds(payload, "exp") <= now - leeway:
        raise TokenExpired()
    _check_audience(payload["aud"], policy.audiences)
    _check_subject(payload["sub"])
    for name in ("jti", "client_id"):
        if not isinstance(payload.get(name, ""), str):
            raise InvalidClaims(f"The access token {name} claim must be a string.")
    if policy.organizations:
        _check_organization(payload.get("org_id"), policy.organizations)
    return claims_of(payload, policy)


def claims_of(payload: dict[str, Any], policy: IssuerPolicy) -> Claims:
    """The typed claims of a payload that passed every check."""
    return Claims(
        subject=payload["sub"],
        issuer=payload["iss"],
        scopes=granted_scopes(payload, policy.scope_claims),
        expires_at=int(payload["exp"]),
        payload=MappingProxyType(payload),
    )


def _check_subject(subject: Any) -> None:
    if not isinstance(subject, str) or not subject:
        raise InvalidClaims("The access token subject (sub) must be a non-empty string.")
    if CONTROL_CHARACTER.search(subject):
        raise InvalidClaims("The access token subject (sub) contains control characters.")
    try:  # JSON can spell a lone surrogate, which no database column or username can hold
        subject.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidClaims("The access token subject (sub) is not valid Unicode text.") from None


def _check_organization(organization: Any, trusted: frozenset[str]) -> None:
    if not isinstance(organization, str) or organization not in trusted:
        raise InvalidOrganization(
            None if organization is not None else "The access token has no organization (org_id)."
        )


def _seconds(payload: dict[str, Any], name: str) -> int:
    """A NumericDate claim in whole seconds; RFC 7519 wants a JSON number, not a string."""
    seconds = seconds_of(payload[name])
    if seconds is None:
        raise InvalidClaims(f"The {name} claim must be a number of seconds.", check=steps.TIME)
    return seconds


def seconds_of(value: Any) -> int | None:
    """A JSON NumericDate in whole seconds; None for a bool, string, inf, nan or huge number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    # Compared, never converted: float() of 400 digits raises OverflowError; nan compares False.
    return int(value) if -MAX_SECONDS <= value <= MAX_SECONDS else None


def _check_audience(audience: Any, accepted: tuple[str, ...]) -> None:
    """Any one of the tenant's audiences, in ``aud`` as a string or a list of strings."""
    if not audience:
        raise InvalidClaims('The access token has no "aud" claim.', check=steps.AUDIENCE)
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
            raise InvalidClaims(
                "The scope claim must be a space-separated string.", check=steps.SCOPE_CLAIMS
            )
        scopes.update(scope.split(" "))  # only the space separates (RFC 6749 section 3.3)
    if scope_claims in ("permissions", "both"):
        permissions = payload.get("permissions", [])
        if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
            raise InvalidClaims(
                "The permissions claim must be a list of strings.", check=steps.SCOPE_CLAIMS
            )
        scopes.update(permissions)
    # A name outside the scope-token syntax can match no rule (rules are validated): drop it.
    return frozenset(name for name in scopes if SCOPE_TOKEN.fullmatch(name))
