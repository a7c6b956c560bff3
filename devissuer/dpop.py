"""DPoP for development: client keys and proofs, and the issuer's check of a token request's proof.

Free of Django, like the issuer itself, so tests, the benchmark and the client command share it.
"""

import secrets
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import get_default_algorithms

from authz.jose import access_token_hash, thumbprint

ALGORITHMS = get_default_algorithms()
PROOF_TYPE = "dpop+jwt"
# The issuer takes a token request's proof this long after its iat (and 5 s before).
PROOF_MAX_AGE = 60


class ProofRefused(ValueError):
    """A token request's DPoP proof the development issuer will not bind a token to."""


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key, as Auth0's SDKs make for ES256 proofs."""
    return ec.generate_private_key(ec.SECP256R1())


def load_key(path: Path) -> Any:
    """A PEM private key from a file (``mint_token --dpop-key``)."""
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def save_key(key: Any, path: Path) -> None:
    """Write a private key as PEM, readable by its owner only."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(pem)


def algorithm_of(key: Any) -> str:
    """The JWS algorithm a private key signs proofs with."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[key.curve.name]
    return "EdDSA" if "ed" in type(key).__name__.lower() else "RS256"


def public_jwk(key: Any) -> dict[str, Any]:
    """The public JWK of a private key, as a proof's header carries it."""
    algorithm = ALGORITHMS[algorithm_of(key)]
    return algorithm.to_jwk(key.public_key(), as_dict=True)


def key_thumbprint(key: Any) -> str:
    """The RFC 7638 thumbprint the issuer puts in a bound token's ``cnf.jkt``."""
    return thumbprint(public_jwk(key))


def make_proof(
    key: Any,
    method: str,
    url: str,
    access_token: str | None = None,
    nonce: str | None = None,
    **overrides: Any,
) -> str:
    """A DPoP proof for one request (RFC 9449 section 4.2); ``overrides`` change its claims,
    and ``headers`` its header, so tests can build every kind of wrong proof."""
    algorithm = overrides.pop("alg", None) or algorithm_of(key)
    headers = {"typ": PROOF_TYPE, "jwk": public_jwk(key), **overrides.pop("headers", {})}
    claims: dict[str, Any] = {
        "jti": secrets.token_urlsafe(16),
        "htm": method,
        "htu": url,
        "iat": int(time.time()),
    }
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    if nonce is not None:
        claims["nonce"] = nonce
    claims.update(overrides)
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def check_token_request_proof(proof: str, url: str) -> str:
    """The thumbprint of a token request's valid proof (RFC 9449 section 5); else ProofRefused."""
    try:
        header = jwt.get_unverified_header(proof)
        jwk = header.get("jwk")
        if header.get("typ") != PROOF_TYPE or not isinstance(jwk, dict) or "d" in jwk:
            raise ProofRefused("The DPoP proof must be typed dpop+jwt and carry a public jwk.")
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS or algorithm.startswith("HS") or algorithm == "none":
            raise ProofRefused("The DPoP proof must be signed with an asymmetric algorithm.")
        key = jwt.PyJWK(jwk, algorithm).key
        claims = jwt.decode(proof, key, algorithms=[algorithm], options={"verify_aud": False})
    except jwt.PyJWTError as exc:
        raise ProofRefused(f"The DPoP proof does not verify: {exc}") from exc
    if claims.get("htm") != "POST" or claims.get("htu") != url:
        raise ProofRefused(f"The DPoP proof must name POST {url} (htm, htu).")
    issued_at = claims.get("iat")
    if not isinstance(issued_at, int | float) or not -5 <= time.time() - issued_at <= PROOF_MAX_AGE:
        raise ProofRefused("The DPoP proof iat must be within the last minute.")
    if not isinstance(claims.get("jti"), str):
        raise ProofRefused("The DPoP proof needs a jti.")
    return thumbprint(jwk)
