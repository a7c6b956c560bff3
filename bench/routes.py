"""CPU per route match at 10 and at 10,000 routes (issue 20's "within 10 %").

Pure matching, in this process: no database, no sockets. Each table is compiled once (as the
directory does when it loads a tenant), then the same REST-shaped paths are matched in rounds
and the least CPU time per match over the rounds is kept, which shuts out most of the noise of a
shared machine. Also prints the compile time and a hostile path's cost per segment.

    .venv/bin/python -m bench.routes [--matches 200000] [--rounds 7]
"""

import argparse
import time

from tenants.routes import Route, RouteTable

PATHS = ("/r1/42/sub", "/r2/7", "/r3", "/r0/files/a/b/c", "/nothing/here")


def rest_api(count: int) -> list[Route]:
    """``count`` routes like a REST API's: collections, items, sub-resources, file trees."""
    routes = []
    for index in range(count):
        base = f"/r{index // 4}"
        path = (base, f"{base}/{{id}}", f"{base}/{{id}}/sub", f"{base}/files/{{p...}}")[index % 4]
        routes.append(Route.build(index, ["GET", "POST"], path, False, ["read", "admin"]))
    return routes


def cpu_per_match(table: RouteTable, matches: int, rounds: int) -> float:
    """The least CPU seconds per match over ``rounds`` rounds of ``matches`` matches."""
    per_path = max(1, matches // len(PATHS))
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for path in PATHS:
            for _ in range(per_path):
                table.match("GET", path)
        best = min(best, (time.process_time() - started) / (per_path * len(PATHS)))
    return best


def compiled(count: int) -> tuple[RouteTable, float]:
    """The table of ``count`` routes and the CPU seconds its compilation took."""
    routes = rest_api(count)
    started = time.process_time()
    table = RouteTable.compile(routes)
    return table, time.process_time() - started


def main() -> None:
    """Print CPU per match at 10 and 10,000 routes, and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matches", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    small, small_compile = compiled(10)
    large, large_compile = compiled(10_000)
    small_cost = cpu_per_match(small, args.matches, args.rounds)
    large_cost = cpu_per_match(large, args.matches, args.rounds)
    print(f"compile:  10 routes {small_compile * 1e3:.2f} ms, 10000 routes {large_compile:.2f} s")
    print(f"match:    10 routes {small_cost * 1e6:.2f} us, 10000 routes {large_cost * 1e6:.2f} us")
    print(f"ratio 10000/10: {large_cost / small_cost:.3f} (target <= 1.10)")
    hostile = "/" + "/".join("a" for _ in range(2000))
    started = time.process_time()
    for _ in range(100):
        large.match("GET", hostile)
    per_segment = (time.process_time() - started) / 100 / 2000
    print(f"hostile path of 2000 segments: {per_segment * 1e9:.0f} ns per segment")


if __name__ == "__main__":
    main()
