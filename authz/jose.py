"""Small JOSE helpers shared by the verifier and the development issuer; no Django in here."""

import base64
import hashlib
import json
from typing import Any

import jwt

# The members of each key type that RFC 7638 hashes.
THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JOSE writes it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK, base64url."""
    members = {name: jwk[name] for name in THUMBPRINT_MEMBERS[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url(hashlib.sha256(canonical).digest())


def access_token_hash(access_token: str) -> str:
    """A DPoP proof's ``ath``: the base64url SHA-256 of the access token's ASCII text."""
    return b64url(hashlib.sha256(access_token.encode("ascii")).digest())


def public_key_of(jwk: dict[str, Any], algorithm: str | None = None) -> Any:
    """The key object of a JWK, through PyJWT (raises its errors). PyJWT guesses the algorithm
    of an OKP key from its curve and knows Ed25519 only; EdDSA covers Ed448 too."""
    if algorithm is None and jwk.get("kty") == "OKP":
        algorithm = "EdDSA"
    return jwt.PyJWK(jwk, algorithm).key
