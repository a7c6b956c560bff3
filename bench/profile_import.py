"""Where a tenants import spends its time: ``import_tenants`` timed, counted and profiled.

Starts PostgreSQL and Redis (as ``bench/run`` does), creates ``--existing`` tenants directly, then
imports ``--tenants`` new tenants in this process, and then the same file again (every tenant
updated): timed (wall and CPU), with the SQL statements counted by kind, and under cProfile.
Prints the figures and the functions where the time goes.

    .venv/bin/python -m bench.profile_import [--tenants 2000] [--existing 10000]
"""

import argparse
import cProfile
import io
import json
import pstats
import re
import time
from collections import Counter
from typing import Any

from bench.fixtures import tenant_document
from bench.stack import Platform, Stack, helper, manage, platform_env, setup_django

ISSUER_BASE = "http://127.0.0.1:9"  # never fetched: an import fetches no key set


def documents(first: int, count: int, prefix: str) -> dict[str, Any]:
    """A tenants JSON document of ``count`` tenants."""
    return {
        "tenants": [
            tenant_document(i, ISSUER_BASE, prefix=prefix) for i in range(first, first + count)
        ]
    }


def statement_kind(sql: str) -> str:
    """A statement's verb and table, for counting."""
    words = re.findall(r'"?(\w+)"?', sql)
    table = next((w for w in words if w.startswith("tenants_")), "")
    return f"{words[0]} {table}" if words else sql[:20]


def timed(document: dict[str, Any]) -> dict[str, float]:
    """Wall and CPU seconds of one import."""
    from tenants.config_io import import_tenants

    wall, cpu = time.monotonic(), time.process_time()
    import_tenants(document)
    return {
        "wall_s": round(time.monotonic() - wall, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
    }


def counted(document: dict[str, Any]) -> Counter:
    """The SQL statements of one import, by kind."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tenants.config_io import import_tenants

    with CaptureQueriesContext(connection) as queries:
        import_tenants(document)
    return Counter(statement_kind(query["sql"]) for query in queries.captured_queries)


def profiled(document: dict[str, Any], lines: int) -> str:
    """The cProfile of one import, by cumulative time."""
    from tenants.config_io import import_tenants

    profile = cProfile.Profile()
    profile.runcall(import_tenants, document)
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(lines)
    return out.getvalue()


def main() -> None:
    """Set up, import four times, print, tear down."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=2000)
    parser.add_argument("--existing", type=int, default=10_000)
    parser.add_argument("--lines", type=int, default=60, help="profile lines printed")
    args = parser.parse_args()
    with Stack() as stack:
        database_url, _ = stack.service("postgres")
        redis_url, _ = stack.service("redis")
        env = platform_env(database_url, redis_url, stack.workdir / "keys")
        manage(env, "migrate", "--no-input", "-v", "0")
        plat = Platform(stack, "redis", env, ISSUER_BASE, redis_url)
        path = stack.workdir / "existing.json"
        path.write_text(json.dumps(documents(0, args.existing, "e")))
        helper(plat, "seed", str(path))
        setup_django(env)
        n = args.tenants
        figures = {"created": timed(documents(0, n, "a")), "updated": timed(documents(0, n, "a"))}
        for kind, seconds in figures.items():
            per = seconds["wall_s"] / n * 1000
            print(
                f"{kind}: {n} tenants in {seconds['wall_s']} s wall ({per:.2f} ms each), "
                f"{seconds['cpu_s']} s CPU in this process"
            )
        for kind, prefix in (("created", "b"), ("updated", "a")):
            statements = counted(documents(0, n, prefix))
            print(
                f"SQL statements, {kind}: {sum(statements.values())} "
                f"({sum(statements.values()) / n:.1f} per tenant)"
            )
            for statement, count in statements.most_common():
                print(f"  {count:7d}  {statement}")
        print("--- profile, created:\n" + profiled(documents(0, n, "c"), args.lines))
        print("--- profile, updated:\n" + profiled(documents(0, n, "c"), args.lines))


if __name__ == "__main__":
    main()
