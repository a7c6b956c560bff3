"""CPU per verification for a tenant with one issuer, two issuers and ten (issue 23).

In this process, as the DRF authentication class runs it: ``claims_of`` on a repeated token (the
warm path: the verified-token cache) and ``verify`` on a token (full verification: the issuer
picked by the token's ``iss``, its key, the signature, the claims). The token of a tenant with
several issuers is always one of the last listed issuer. Keys are held in memory as the key cache
holds them; nothing touches the network or the database. The tenants are measured in interleaved
rounds so a drift of the machine falls on all alike; the figure is the median of the rounds'
process CPU time per call.

    .venv/bin/python -m bench.issuers [--calls 2000] [--rounds 7]
"""

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

SCRATCH = tempfile.mkdtemp(prefix="bench-issuers-")
os.environ.update(
    ENV_FILE="",
    SECRET_KEY="bench-only-" + "x" * 40,
    DJANGO_SETTINGS_MODULE="config.settings",
    DATABASE_URL=f"sqlite:///{SCRATCH}/bench.sqlite3",
    AUTHZ_BACKGROUND_SYNC="false",
)
os.environ.pop("REDIS_URL", None)

import django  # noqa: E402 - the settings above first

django.setup()
from django.core.management import call_command  # noqa: E402

call_command("migrate", verbosity=0)  # the embedded default's shared store, on a scratch file

import jwt  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from authz.authentication import TenantTokenAuthentication  # noqa: E402
from authz.jwks import KeySetRecord  # noqa: E402
from authz.keys import _parse, key_cache  # noqa: E402
from authz.policy import TrustedIssuers, shared_issuers, shared_policy  # noqa: E402
from authz.token_cache import token_digest, verified_tokens  # noqa: E402
from devissuer.issuer import public_jwk  # noqa: E402

AUDIENCE = "https://api.bench.test"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def issuer_url(index: int) -> str:
    """The issuer of one listed entry: a canonical domain, then custom ones."""
    return "https://acme.eu.auth0.com/" if index == 0 else f"https://login{index}.acme.test/"


def trusting(count: int) -> TrustedIssuers:
    """A tenant's issuers, ``count`` of them, each with its key held as the key cache holds it."""
    policies = []
    for index in range(count):
        issuer = issuer_url(index)
        jwks_url = f"{issuer}.well-known/jwks.json"
        record = KeySetRecord((public_jwk(f"kid-{index}", KEY),), "v1", jwks_url, time.time())
        key_cache._entries[jwks_url] = _parse(record, time.monotonic(), None)
        policies.append(
            shared_policy(
                issuer=issuer,
                jwks_url=jwks_url,
                audiences=(AUDIENCE,),
                algorithms=("RS256",),
                leeway=60,
                scope_claims="scope",
            )
        )
    return shared_issuers(tuple(policies))


def token_of(trust: TrustedIssuers, sub: str = "auth0|bench") -> str:
    """A token of the tenant's last listed issuer."""
    index = len(trust.policies) - 1
    now = int(time.time())
    payload = {"iss": issuer_url(index), "aud": AUDIENCE, "sub": sub, "iat": now}
    payload.update(exp=now + 3600, scope="read:messages")
    return jwt.encode(payload, KEY, algorithm="RS256", headers={"kid": f"kid-{index}"})


def warm(trust: TrustedIssuers) -> Callable[[], Any]:
    """A repeated token: the verified-token cache answers."""
    authentication, token = TenantTokenAuthentication(), token_of(trust)
    authentication.claims_of(token, trust)
    return lambda: authentication.claims_of(token, trust)


def full(trust: TrustedIssuers) -> Callable[[], Any]:
    """Full verification of a token, as on its first request."""
    authentication, token = TenantTokenAuthentication(), token_of(trust)
    digest = token_digest(token)
    return lambda: authentication.verify(token, trust, digest)


def cpu_per_call(call: Callable[[], Any], calls: int) -> float:
    """Process CPU microseconds per call."""
    started = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - started) / calls * 1e6


def main() -> None:
    """Interleaved rounds per tenant and path; print the medians and the ratios to one issuer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    tenants = {count: trusting(count) for count in (1, 2, 10)}
    for name, make, calls in (("warm", warm, args.calls), ("full", full, args.calls // 10)):
        calls_of = {count: make(trust) for count, trust in tenants.items()}
        rounds: dict[int, list[float]] = {count: [] for count in tenants}
        for _ in range(args.rounds):
            for count, call in calls_of.items():
                rounds[count].append(cpu_per_call(call, calls))
        medians = {count: statistics.median(times) for count, times in rounds.items()}
        figures = ", ".join(f"{count} issuer(s) {us:.2f} us" for count, us in medians.items())
        ratios = ", ".join(f"{c}/1 {medians[c] / medians[1]:.3f}" for c in tenants if c > 1)
        print(f"{name}: {figures}; ratio {ratios}")
        verified_tokens.clear()


if __name__ == "__main__":
    main()
