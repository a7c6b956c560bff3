"""Requests admitted per window when ten processes hammer one rate limit, in both modes.

    .venv/bin/python -m bench.limiter                   # both modes, 100/min, 5 windows
    .venv/bin/python -m bench.limiter --mode redis --rate 100/s --windows 10

Each mode starts its own store (Redis, or a SQLite file with the database as the store), then
ten processes, each with its own ``Limiter``, count requests against one limit from the start
of a window to the end of the last one. Printed: the requests admitted in each window (at most
the limit, or docs/operating.md's promise is broken) and the requests sent.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter

from bench.stack import PYTHON, ROOT, Stack, manage, platform_env

PROCESSES = 10


def main() -> None:
    """Run the benchmark in each mode asked for and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["redis", "embedded", "both"], default="both")
    parser.add_argument("--rate", default="100/min")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--pause", type=float, default=0.002, help="seconds between requests")
    args = parser.parse_args()
    for mode in ["redis", "embedded"] if args.mode == "both" else [args.mode]:
        with Stack() as stack:
            admitted, sent = run(stack, mode, args.rate, args.windows, args.pause)
        line = {"mode": mode, "rate": args.rate, "processes": PROCESSES, "admitted": admitted}
        print(json.dumps({**line, "max": max(admitted), "sent": sent}), flush=True)


def run(stack: Stack, mode: str, rate: str, windows: int, pause: float) -> tuple[list[int], int]:
    """Admitted requests per window, and requests sent, by PROCESSES hammering processes."""
    if mode == "redis":
        database_url, redis_url = stack.service("postgres")[0], stack.service("redis")[0]
    else:
        database_url, redis_url = f"sqlite:///{stack.workdir / 'limiter.sqlite3'}", None
    env = platform_env(database_url, redis_url, stack.workdir / "keys")
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    manage(env, "migrate", "--no-input", "-v", "0")
    seconds = rate_seconds(rate)
    go = stack.workdir / "go"
    argv = [PYTHON, "-m", "bench.limiter_process", uuid.uuid4().hex, rate, str(go), str(pause)]
    ready = [stack.workdir / f"ready-{n}" for n in range(PROCESSES)]
    processes = [
        subprocess.Popen([*argv, str(path)], cwd=ROOT, env=env, stdout=subprocess.PIPE)  # noqa: S603
        for path in ready
    ]
    while not all(path.exists() for path in ready):
        if any(process.poll() is not None for process in processes):
            sys.exit("bench.limiter: a counting process failed to start")
        time.sleep(0.05)
    start = (int(time.time() / seconds) + 1) * seconds  # the next window boundary
    go.write_text(f"{start} {start + windows * seconds}")
    admitted: Counter[int] = Counter()
    sent = 0
    for process in processes:
        out, _ = process.communicate(timeout=windows * seconds + 600)
        if process.returncode:
            sys.exit(f"bench.limiter: a counting process failed ({process.returncode})")
        report = json.loads(out)
        admitted.update({int(window): n for window, n in report["admitted"].items()})
        sent += report["sent"]
    first = start // seconds
    return [admitted[first + n] for n in range(windows)], sent


def rate_seconds(rate: str) -> int:
    """The window length of a rate such as 100/min."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from tenants.ratelimit import parse_rate

    parsed = parse_rate(rate)
    if parsed is None:
        sys.exit("bench.limiter: --rate must be a rate such as 100/min")
    return parsed.seconds


if __name__ == "__main__":
    main()
