"""Our compact-JWS and claim checks against PyJWT's jwt.decode, side by side, on hostile tokens.

``verify_token`` parses the token and checks its claims itself (jwt.decode's per-character
base64url scan was half the cost of a first-seen token) and lets PyJWT's algorithm objects check
the signature. Here jwt.decode is the reference: over thousands of generated tokens (mangled
segments, wrong keys and algorithms, every claim missing, mistyped or out of time), the two must
accept exactly the same tokens, and return the same claims.

The reference is jwt.decode plus the few rules we hold on purpose beyond it: a size limit, no
``crit``, ``b64`` absent or true, a non-empty string ``kid``, an algorithm the tenant allows that
fits the key, a non-empty string ``sub`` and JSON numbers for the time claims.
"""

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz.policy import IssuerPolicy
from authz.tokens import SigningKey, TokenError, UnknownKey, granted_scopes, verify_token

ISSUER = "https://acme.example.test/"
AUDIENCE = "https://api.acme.test"
LEEWAY = 60
MAX_TOKEN_BYTES = 8 * 1024
ALGORITHMS = jwt.algorithms.get_default_algorithms()
KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
ACCESS_TOKEN_TYPES = {"jwt", "application/jwt", "at+jwt", "application/at+jwt"}  # Auth0 profile

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_384_KEY = ec.generate_private_key(ec.SECP384R1())  # an EC key on the wrong curve for ES256
PRIVATE_KEYS = {"rsa-1": RSA_KEY, "rsa-rs256": RSA_KEY, "ec-1": EC_KEY, "ec-384": EC_384_KEY}
FOREIGN_KEYS = {
    "RSA": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "EC": ec.generate_private_key(ec.SECP256R1()),
}
PUBLISHED = {
    "rsa-1": SigningKey("rsa-1", "RSA", None, RSA_KEY.public_key()),
    "rsa-rs256": SigningKey("rsa-rs256", "RSA", "RS256", RSA_KEY.public_key()),
    "ec-1": SigningKey("ec-1", "EC", None, EC_KEY.public_key()),
    "ec-384": SigningKey("ec-384", "EC", None, EC_384_KEY.public_key()),
}
TENANT = IssuerPolicy(
    issuer=ISSUER,
    jwks_url=f"{ISSUER}.well-known/jwks.json",
    audiences=(AUDIENCE, "https://admin.acme.test"),
    algorithms=("RS256", "PS256", "ES256"),
    leeway=LEEWAY,
    scope_claims="both",
)
ABSENT = object()


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWS uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def key_for_kid(kid: str) -> SigningKey:
    """The tenant's published keys."""
    if kid not in PUBLISHED:
        raise UnknownKey()
    return PUBLISHED[kid]


def reference(token: str) -> dict[str, Any] | None:
    """The verified payload by jwt.decode and our documented extra rules, or None."""
    try:
        header = jwt.get_unverified_header(token)
        algorithm, kid = header.get("alg"), header.get("kid")
        if len(token) > MAX_TOKEN_BYTES or "crit" in header or header.get("b64", True) is not True:
            return None
        if algorithm not in TENANT.algorithms or not isinstance(kid, str) or kid not in PUBLISHED:
            return None
        key = PUBLISHED[kid]
        if key.declared_algorithm not in (None, algorithm):
            return None
        if key.key_type != KEY_TYPES[algorithm[:2]]:
            return None
        typ = header.get("typ")  # RFC 8725 section 3.11: explicit typing, where PyJWT has none
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES):
            return None
        payload = jwt.decode(
            token,
            key.public_key,
            algorithms=[algorithm],
            audience=list(TENANT.audiences),
            issuer=TENANT.issuer,
            leeway=LEEWAY,
            options={"require": ["iss", "aud", "exp", "iat", "sub"]},
        )
        if not isinstance(payload["sub"], str) or not payload["sub"]:
            return None
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in payload["sub"]):
            return None
        for name in ("jti", "client_id"):
            if not isinstance(payload.get(name, ""), str):
                return None
        for name in ("exp", "iat", "nbf"):
            value = payload.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
        granted_scopes(payload, TENANT.scope_claims)
    except (jwt.PyJWTError, TokenError):
        return None
    return payload


def ours(token: str) -> dict[str, Any] | None:
    """The verified payload by verify_token, or None when it refuses the token."""
    try:
        return dict(verify_token(token, TENANT, key_for_kid).payload)
    except TokenError:
        return None


def seconds_from_now(*offsets: int) -> st.SearchStrategy:
    """Whole seconds around now; no offset is within 5 s of a leeway boundary."""
    return st.sampled_from(offsets).map(lambda offset: int(time.time()) + offset)


NUMERIC_DATE_JUNK = ["1700000000", True, 1e400, float("nan"), [1], {"t": 1}, None, ABSENT]
# What each field may be instead of its valid value; a drawn token changes up to two fields.
HEADER_VARIANTS: dict[str, st.SearchStrategy] = {
    "alg": st.sampled_from(
        ["ES256", "PS256", "RS512", "HS256", "none", "", 256, ["RS256"], ABSENT]
    ),
    "kid": st.sampled_from(["rsa-rs256", "ec-1", "ec-384", "unknown", "", 7, ["rsa-1"], ABSENT]),
    "typ": st.sampled_from(["JWT", "at+jwt", 1]),
    "crit": st.sampled_from([["exp"], [], "b64"]),
    "b64": st.sampled_from([True, False, "false"]),
}
PAYLOAD_VARIANTS: dict[str, st.SearchStrategy] = {
    "iss": st.sampled_from(
        [ISSUER.rstrip("/"), ISSUER.upper(), "https://evil.test/", 1, [ISSUER], None, ABSENT]
    ),
    "aud": st.sampled_from(
        [
            [AUDIENCE],
            ["https://other.test", "https://admin.acme.test"],
            "https://admin.acme.test",
            [],
            "",
            "https://other.test",
            ["https://other.test"],
            [AUDIENCE, 5],
            5,
            {AUDIENCE: 1},
            None,
            ABSENT,
        ]
    ),
    "exp": st.one_of(seconds_from_now(-30, 30, -3600, -90), st.sampled_from(NUMERIC_DATE_JUNK)),
    "iat": st.one_of(seconds_from_now(30, 90, 3600), st.sampled_from(NUMERIC_DATE_JUNK)),
    "nbf": st.one_of(seconds_from_now(-10, 30, 90, 3600), st.sampled_from(NUMERIC_DATE_JUNK)),
    "sub": st.sampled_from(["", 42, ["auth0|alice"], None, ABSENT]),
    "jti": st.sampled_from(["token-1", 5, None]),
    "scope": st.sampled_from([5, ["read:messages"], None, ABSENT]),
    "permissions": st.sampled_from([["read:messages"], "read:messages", [1]]),
    "note": st.sampled_from(["x" * 100, "x" * MAX_TOKEN_BYTES]),  # a token over the size limit
}
SIGNERS = st.sampled_from(["right"] * 12 + ["foreign", "empty", "truncated"])
MANGLES = st.sampled_from(
    [None] * 30
    + [
        ("pad", 0),
        ("pad", 1),
        ("pad", 2),
        ("double-pad", 2),
        ("over-pad", 0),
        ("over-pad", 2),
        ("short-pad", 2),
        ("char", "+"),
        ("char", "/"),
        ("char", "!"),
        ("char", " "),
        ("char", "é"),
        ("trailing-bits", 2),
        ("trailing-bits", 1),
        ("drop-char", 0),
        ("drop-char", 1),
        ("drop-char", 2),
        ("not-an-object", 0),
        ("not-an-object", 1),
        ("extra-dot", None),
        ("missing-segment", None),
        ("oversize", None),
    ]
)


@st.composite
def hostile_tokens(draw: st.DrawFn) -> str:
    """A valid token with up to two fields changed, maybe badly signed, maybe mangled."""
    now = int(time.time())
    header = {"alg": "RS256", "kid": "rsa-1"}
    payload = {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 3600, "iat": now, "sub": "auth0|alice"}
    payload["scope"] = "read:messages write:messages"
    changed = draw(st.sets(st.sampled_from([*HEADER_VARIANTS, *PAYLOAD_VARIANTS]), max_size=2))
    for name in changed:
        target = header if name in HEADER_VARIANTS else payload
        target[name] = draw((HEADER_VARIANTS | PAYLOAD_VARIANTS)[name])
    return mangle(token_of(header, payload, draw(SIGNERS)), draw(MANGLES))


def present(values: dict[str, Any]) -> dict[str, Any]:
    """The dictionary without the ABSENT entries."""
    return {name: value for name, value in values.items() if value is not ABSENT}


def sign(header: dict[str, Any], signing_input: bytes, signer: str) -> bytes:
    """A signature by the key the header names (or a foreign one of its type), if alg can."""
    algorithm, kid = header.get("alg"), header.get("kid")
    if signer == "empty" or algorithm not in ("RS256", "RS512", "PS256", "ES256"):
        return b"" if signer == "empty" else b"\x00" * 256
    key = PRIVATE_KEYS.get(kid) if isinstance(kid, str) else None
    if signer == "foreign" or key is None or KEY_TYPES[algorithm[:2]] != key_type(key):
        key = FOREIGN_KEYS[KEY_TYPES[algorithm[:2]]]
    signature = ALGORITHMS[algorithm].sign(signing_input, key)
    return signature[:-1] if signer == "truncated" else signature


def key_type(key: Any) -> str:
    """JWK kty of a private key."""
    return "RSA" if isinstance(key, rsa.RSAPrivateKey) else "EC"


def mangle(token: str, how: tuple[str, Any] | None) -> str:
    """The token with one segment mangled as ``how`` says."""
    if how is None:
        return token
    kind, arg = how
    segments = token.split(".")
    if kind == "extra-dot":
        return token + ".e30"
    if kind == "missing-segment":
        return ".".join(segments[:2])
    if kind == "oversize":
        return token + "A" * (MAX_TOKEN_BYTES - len(token) + 4)
    segment = segments[arg if isinstance(arg, int) else 1]
    if kind == "pad":
        segment += "=" * (-len(segment) % 4)
    elif kind == "double-pad":
        segment += "=="
    elif kind == "over-pad":
        segment += "=" * (-len(segment) % 4) + "===="
    elif kind == "short-pad":
        segment += "=" * max(-len(segment) % 4 - 1, 1)
    elif kind == "drop-char":
        segment = segment[:-1]
    elif kind == "not-an-object":
        segment = b64url(b'["alg", "RS256"]')
    elif kind == "char":
        segment = segment[:3] + arg + segment[4:]
    elif kind == "trailing-bits" and segment and len(segment) % 4 in (2, 3):
        # The last character carries unused low bits: flip one for another spelling.
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        segment = segment[:-1] + alphabet[alphabet.index(segment[-1]) ^ 1]
    segments[arg if isinstance(arg, int) else 1] = segment
    return ".".join(segments)


def token_of(header: dict[str, Any], payload: dict[str, Any], signer: str) -> str:
    """A compact JWS built by hand, so nothing refuses to make a hostile token."""
    header_json = json.dumps(present(header)).encode()
    payload_json = json.dumps(present(payload)).encode()
    signing_input = f"{b64url(header_json)}.{b64url(payload_json)}"
    signature = sign(present(header), signing_input.encode(), signer)
    return f"{signing_input}.{b64url(signature)}"


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=hostile_tokens())
def test_verify_token_accepts_exactly_what_jwt_decode_accepts(token):
    assert ours(token) == reference(token)


@pytest.mark.parametrize(
    ("header", "payload", "how"),
    [
        ({}, {}, None),
        ({}, {}, ("pad", 2)),
        ({"alg": "ES256", "kid": "ec-1"}, {}, None),
        ({"alg": "PS256", "kid": "rsa-1"}, {"aud": [AUDIENCE]}, None),
        ({"kid": "rsa-rs256", "typ": "at+jwt"}, {"aud": ["https://admin.acme.test"]}, None),
        ({}, {"exp": -30, "nbf": 30}, None),  # seconds from now, within the leeway
    ],
    ids=["rs256", "padded-signature", "es256", "ps256-aud-list", "declared-alg", "leeway"],
)
def test_tokens_the_generator_starts_from_pass_both(header, payload, how):
    # Without this, a generator that only ever made bad tokens would pass the property above.
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 3600, "iat": now, "sub": "auth0|alice"}
    payload = {
        name: now + value if name in ("exp", "nbf") else value for name, value in payload.items()
    }
    token = mangle(
        token_of({"alg": "RS256", "kid": "rsa-1", **header}, {**base, **payload}, "right"), how
    )

    assert ours(token) is not None and ours(token) == reference(token)
