"""The benchmark's tenants and tokens: how tenant number N is configured, and its tokens signed."""

import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from devissuer import dpop
from devissuer.issuer import DevKeyStore

ISSUERS = 10  # tenants share a few issuers, so signing distinct tokens stays cheap
SCOPE = "read:messages"
STARTED = time.monotonic()


def say(message: str) -> None:
    """A progress line, with the seconds since the start."""
    print(f"bench: [{time.monotonic() - STARTED:5.0f} s] {message}", flush=True)


def slug(index: int, prefix: str = "t") -> str:
    """The slug of tenant number ``index``."""
    return f"{prefix}{index:05d}"


def issuer_name(index: int) -> str:
    """The development issuer name of tenant ``index``: one of ISSUERS."""
    return f"iss{index % ISSUERS}"


# Tenant LIMITED has rate limits the benchmark never reaches: every request is counted, none
# refused, so limited_repeat against scoped_repeat is the limiter's cost.
LIMITED = 1
LIMITS_NEVER_REACHED = {
    "rate_limit_per_tenant": "900000000/min",
    "rate_limit_per_subject": "800000000/min",
}


# Tenant DECIDED has routes: the forward-auth decision endpoint serves it (decision_repeat).
DECIDED = 0
DECIDED_ROUTES = [{"methods": ["GET"], "path": "/orders/{id}", "scopes": [SCOPE]}]


def tenant_document(
    index: int, issuer_base: str, issuer: str | None = None, prefix: str = "t"
) -> dict[str, Any]:
    """Tenant ``index`` as the tenants JSON describes it (one audience, one host)."""
    name = slug(index, prefix)
    limits = LIMITS_NEVER_REACHED if index == LIMITED and prefix == "t" else {}
    routes = {"routes": DECIDED_ROUTES} if index == DECIDED and prefix == "t" else {}
    return {
        "slug": name,
        "name": f"Tenant {name}",
        "issuer": f"{issuer_base}/{issuer or issuer_name(index)}/",
        "audiences": [f"https://api.{name}.test"],
        "hosts": [f"{name}.localhost"],
        **limits,
        **routes,
    }


DECISION_PATH = "/authz/decision"


def decision_headers(index: int, proxy_secret: str) -> str:
    """What Traefik sends about a client's ``GET /orders/1`` to tenant ``index``'s host, as the
    load generators read extra headers ("Name: value" joined by "|")."""
    headers = {
        "X-Authz-Proxy-Secret": proxy_secret,
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": f"{slug(index)}.localhost",
        "X-Forwarded-Uri": "/orders/1",
    }
    return "|".join(f"{name}: {value}" for name, value in headers.items())


def scoped_path(index: int) -> str:
    """The private-scoped endpoint of tenant ``index``."""
    return f"/t/{slug(index)}/api/private-scoped"


def public_path(index: int) -> str:
    """The open endpoint of tenant ``index``."""
    return f"/t/{slug(index)}/api/public"


class Tokens:
    """Signs tokens for the tenants with the development issuer's own keys (same key dir)."""

    def __init__(self, key_dir: Path, issuer_base: str) -> None:
        self.store = DevKeyStore(key_dir)
        self.issuer_base = issuer_base
        self.serial = 0

    def claims(self, index: int, scope: str) -> dict[str, Any]:
        """Fresh claims for tenant ``index``: a new subject each time, so every token differs."""
        self.serial += 1
        now = int(time.time())
        return {
            "iss": f"{self.issuer_base}/{issuer_name(index)}/",
            "aud": f"https://api.{slug(index)}.test",
            "sub": f"auth0|bench-{self.serial}",
            "iat": now,
            "exp": now + 3600,
            "scope": scope,
        }

    def bearer(self, index: int, scope: str = SCOPE) -> str:
        """An ``Authorization`` value with a valid token of tenant ``index``."""
        return f"Bearer {self.store.sign(issuer_name(index), self.claims(index, scope))}"

    def dpop_bound(self, index: int, key: Any) -> str:
        """An ``Authorization: DPoP`` value: a valid token of tenant ``index`` bound to ``key``."""
        claims = {**self.claims(index, SCOPE), "cnf": {"jkt": dpop.key_thumbprint(key)}}
        return f"DPoP {self.store.sign(issuer_name(index), claims)}"

    def bad_signature(self, index: int) -> str:
        """A token naming the tenant's real key but signed by another key: 401."""
        foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        kid = self.store.current(issuer_name(index))[0]
        claims = self.claims(index, SCOPE)
        return f"Bearer {jwt.encode(claims, foreign, algorithm='RS256', headers={'kid': kid})}"


def with_proofs(lines: list[tuple[str, str]], base_url: str, keys: list[Any]) -> list[tuple]:
    """Each (path, DPoP authorization) line with a fresh proof, by key ``i % len(keys)``, made
    now: a proof is good for a minute, so they are made last, just before the run."""
    proven = []
    for index, (path, authorization) in enumerate(lines):
        token = authorization.removeprefix("DPoP ")
        proof = dpop.make_proof(keys[index % len(keys)], "GET", base_url + path, access_token=token)
        proven.append((path, authorization, proof))
    return proven
