"""CPU cost per request of each scenario, through the WSGI application in this process.

No sockets, no gunicorn, no load generator: the same scenarios as ``bench/bench.py`` are called
straight into ``config.wsgi.application`` against real PostgreSQL, Redis and the development
issuer, and the process CPU time per request is printed. This is the steady measure to compare
two versions of the request path (the machine-wide req/s ratios move with the load generator's
share of the cores). ``--profile SCENARIO`` prints a cProfile of that scenario instead (``--sort
tottime`` for the functions' own time, ``--callers PATTERN`` for who calls them). ``--rounds N``
splits the requests into N rounds that alternate the scenarios, prints the best round of each and
its ratio to ``public`` (requests/s of the scenario over public's): the issues' targets.

    .venv/bin/python -m bench.inprocess [--tenants 100] [--requests 20000] [--profile NAME]
                                        [--rounds N]
"""

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.bench import DPOP_KEYS, FRESH_PROOFS, SCENARIOS, add_tenants, ready, scenario_requests
from bench.fixtures import LIMITS_NEVER_REACHED, Tokens, say, slug
from bench.stack import Stack, start_platform
from devissuer import dpop

BASE_URL = "http://127.0.0.1:8000"  # what environ() says the client addressed


def environ(path: str, authorization: str, proof: str = "", extra: str = "") -> dict[str, Any]:
    """A minimal WSGI environ of a GET, as gunicorn would pass it."""
    env = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if authorization:
        env["HTTP_AUTHORIZATION"] = authorization
    if proof:
        env["HTTP_DPOP"] = proof
    for pair in filter(None, extra.split("|")):  # "Name: value|..." as the load generators read
        name, value = pair.split(": ", 1)
        env["HTTP_" + name.upper().replace("-", "_")] = value
    return env


def caller(application: Callable, expect: int) -> Callable[..., None]:
    """Call the application once for (path, authorization[, proof]); fail on another status."""
    status: list[str] = []

    def start_response(line: str, headers: list, exc_info: object = None) -> None:
        status.append(line)

    def call(path: str, authorization: str, proof: str = "", extra: str = "") -> None:
        status.clear()
        response = application(environ(path, authorization, proof, extra), start_response)
        try:
            b"".join(response)
        finally:
            getattr(response, "close", lambda: None)()
        if not status[0].startswith(str(expect)):
            raise RuntimeError(f"{path}: expected {expect}, got {status[0]}")

    return call


def cpu_microseconds(call: Callable, lines: list, requests: int) -> float:
    """Process CPU time per request over ``requests`` calls, cycling through ``lines``."""
    started = time.process_time()
    for index in range(requests):
        call(*lines[index % len(lines)])
    return (time.process_time() - started) / requests * 1e6


def main() -> None:
    """Set up, warm up, measure (or profile) every scenario, tear down."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--profile", choices=SCENARIOS)
    parser.add_argument("--sort", default="cumulative", help="pstats order of --profile")
    parser.add_argument("--callers", help="with --profile: who calls the functions matching this")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; best of each")
    args = parser.parse_args()
    with Stack() as stack:
        plat = start_platform(stack, "redis")
        add_tenants(plat, args.tenants)
        tokens = Tokens(stack.workdir / "keys", plat.issuer_url)
        say(f"signing {4 * args.requests} distinct tokens")
        keys = [dpop.new_key() for _ in range(DPOP_KEYS)]
        warm = scenario_requests(tokens, args.tenants, args.requests, keys)
        timed = scenario_requests(tokens, args.tenants, args.requests, keys)
        from config.wsgi import application

        for name, (expect, lines) in warm.items():  # every tenant and key loaded, paths imported
            lines = ready(name, lines, BASE_URL, keys)
            once = name in FRESH_PROOFS  # a proof sent twice is a replay
            cpu_microseconds(caller(application, expect), lines, len(lines) + (0 if once else 100))
        if args.rounds > 1 and not args.profile:
            # Whole cycles of the proof keys: a DPoP line's key is its index modulo their number.
            per_round = args.requests // args.rounds // DPOP_KEYS * DPOP_KEYS
            best_rounds(application, timed, keys, per_round, args.rounds)
            return
        for name in (args.profile,) if args.profile else SCENARIOS:
            expect, lines = timed[name]
            lines = ready(name, lines, BASE_URL, keys)  # DPoP proofs made now, good for a minute
            call = caller(application, expect)
            if args.profile:
                profile = cProfile.Profile(time.process_time)  # CPU, as the figures are
                profile.runcall(cpu_microseconds, call, lines, args.requests)
                out = io.StringIO()
                stats = pstats.Stats(profile, stream=out).sort_stats(args.sort)
                if args.callers:
                    stats.print_callers(args.callers)
                else:
                    stats.print_stats(60)
                print(out.getvalue())
            else:
                print(f"{name:20s} {cpu_microseconds(call, lines, args.requests):7.1f} µs/request")
        if not args.profile:
            limiter_cost(application, timed["scoped_repeat"][1], args.requests)


def best_rounds(application: Callable, timed: dict, keys: list, requests: int, rounds: int) -> None:
    """Every scenario once per round, in turn; the best round of each, and its ratio to public
    (the machine's load moves every round alike, and the best round is the least disturbed)."""
    best = dict.fromkeys(SCENARIOS, float("inf"))
    for index in range(rounds):
        for name in SCENARIOS:
            expect, lines = timed[name]
            if len(lines) > 1:  # distinct requests: this round's own share, never one sent before
                lines = lines[index * requests : (index + 1) * requests]
            lines = ready(name, lines, BASE_URL, keys)
            used = cpu_microseconds(caller(application, expect), lines, requests)
            best[name] = min(best[name], used)
    for name in SCENARIOS:
        ratio = best["public"] / best[name]
        print(f"{name:20s} {best[name]:7.1f} µs/request   / public {ratio:.3f}")


def limiter_cost(application: Callable, lines: list, requests: int) -> None:
    """scoped_repeat without limits and with both of its tenant's, in alternating rounds (the
    wrk benchmark compares limited_repeat with scoped_repeat instead)."""
    from tenants.directory import directory
    from tenants.models import Tenant

    call, rounds = caller(application, 200), {"without": [], "with": []}
    for _ in range(3):
        for name, values in (
            ("without", dict.fromkeys(LIMITS_NEVER_REACHED, "")),
            ("with", LIMITS_NEVER_REACHED),
        ):
            Tenant.objects.filter(slug=slug(0)).update(**values)
            directory.clear()
            cpu_microseconds(call, lines, 100)  # the tenant loaded again
            rounds[name].append(cpu_microseconds(call, lines, requests // 3))
    without, with_limits = (statistics.median(rounds[n]) for n in ("without", "with"))
    print(f"scoped_repeat, no rate limit       {without:7.1f} µs/request")
    print(f"scoped_repeat, tenant+subject limit {with_limits:7.1f} µs/request")
    print(f"limiter ratio (requests/s with / without) = {without / with_limits:.3f}")


if __name__ == "__main__":
    main()
