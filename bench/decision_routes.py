"""CPU per forward-auth decision for a tenant with 10 routes and one with 10,000 (issue 20).

The whole decision, in this process: Django's WSGI handler, every middleware, the tenant by
host, the route match, a repeated Bearer token (remembered after its first verification), the
identity headers, the log line, metrics and counts. Embedded mode (a SQLite file in a temporary
directory, the database cache, no Redis) and the development issuer in a thread; nothing else
runs. The least CPU time per decision over the rounds is kept, alternating the two tenants
within each round, which shuts out most of the noise of a shared machine.

    .venv/bin/python -m bench.decision_routes [--decisions 5000] [--rounds 7]
"""

import argparse
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SECRET = secrets.token_urlsafe(32)
SIZES = (10, 10_000)


def configure(home: Path) -> None:
    """Embedded settings in ``home``, as the demo runs, with the decision endpoint on."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        ENV_FILE="",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        DATABASE_URL=f"sqlite:///{home / 'db.sqlite3'}",
        ALLOWED_HOSTS=".localhost,127.0.0.1",
        AUTHZ_ALLOW_INSECURE_ISSUERS="true",
        AUTHZ_INSECURE_ISSUERS_ACKNOWLEDGED="true",
        AUTHZ_BACKGROUND_SYNC="false",
        AUTHZ_PROXY_SECRET=SECRET,
        LOG_LEVEL="WARNING",
    )
    os.environ.pop("REDIS_URL", None)


def routes(count: int) -> list[dict[str, Any]]:
    """``count`` routes like a REST API's (bench/routes.py's shapes)."""
    shapes = ("/r{n}", "/r{n}/{{id}}", "/r{n}/{{id}}/sub", "/r{n}/files/{{p...}}")
    return [
        {"methods": ["GET", "POST"], "path": shapes[i % 4].format(n=i // 4), "scopes": ["read"]}
        for i in range(count)
    ]


def decision_environ(host: str, token: str) -> dict[str, Any]:
    """A decision request as Caddy or Traefik sends it, for GET /r1/42/sub."""
    from bench.inprocess import environ

    env = environ("/authz/decision", f"Bearer {token}")
    env.update(
        RAW_URI="/authz/decision",
        HTTP_X_AUTHZ_PROXY_SECRET=SECRET,
        HTTP_X_FORWARDED_METHOD="GET",
        HTTP_X_FORWARDED_PROTO="https",
        HTTP_X_FORWARDED_HOST=host,
        HTTP_X_FORWARDED_URI="/r1/42/sub?expand=1",
        HTTP_X_FORWARDED_FOR="192.0.2.7",
    )
    return env


def decider(application: Callable, host: str, token: str) -> Callable[[], None]:
    """One decision for the tenant at ``host``; fails unless it is allowed by /r{n}/{id}/sub."""
    seen: list[str] = []

    def start_response(line: str, headers: list, exc_info: object = None) -> None:
        seen.append(line)
        if not line.startswith("200") or ("X-Authz-Route", "/r1/{id}/sub") not in headers:
            raise SystemExit(f"decision for {host}: {line} {headers}")

    def decide() -> None:
        body = application(decision_environ(host, token), start_response)
        b"".join(body)
        body.close()

    return decide


def cpu_per_decision(decide: Callable[[], None], decisions: int) -> float:
    """CPU seconds per decision over ``decisions`` decisions."""
    started = time.process_time()
    for _ in range(decisions):
        decide()
    return (time.process_time() - started) / decisions


def main() -> None:
    """Set up, warm, measure in alternating rounds, and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-decision-") as tmp:
        home = Path(tmp)
        configure(home)
        import django

        django.setup()
        from django.core.management import call_command
        from django.core.wsgi import get_wsgi_application

        from devissuer.issuer import DevKeyStore, start_in_thread
        from tenants.config_io import import_tenants

        call_command("migrate", "--no-input", verbosity=0)
        issuer = start_in_thread(DevKeyStore(home / "keys"))
        application = get_wsgi_application()
        deciders = {}
        for size in SIZES:
            slug = f"routes{size}"
            item = {
                "slug": slug,
                "name": slug,
                "issuer": issuer.url_for(slug),
                "audiences": [f"https://api.{slug}.test"],
                "hosts": [f"{slug}.localhost"],
                "routes": routes(size),
            }
            started = time.perf_counter()
            import_tenants({"tenants": [item]})
            print(f"{size} routes: imported in {time.perf_counter() - started:.1f} s")
            now = int(time.time())
            claims = {"iss": issuer.url_for(slug), "sub": "auth0|bench", "aud": item["audiences"]}
            claims.update(iat=now, exp=now + 3600, scope="read")
            token = issuer.store.sign(slug, claims)
            deciders[size] = decider(application, f"{slug}.localhost", token)
            for _ in range(200):  # loads the tenant, compiles its routes, verifies the token once
                deciders[size]()
        best = {size: float("inf") for size in SIZES}
        for _ in range(args.rounds):
            for size in SIZES:
                best[size] = min(best[size], cpu_per_decision(deciders[size], args.decisions))
        issuer.stop()
    small, large = (best[size] for size in SIZES)
    print(f"decision: 10 routes {small * 1e6:.1f} us, 10000 routes {large * 1e6:.1f} us CPU")
    print(f"ratio 10000/10: {large / small:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
