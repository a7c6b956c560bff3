"""Which WSGI server (issue 21): gunicorn sync, gunicorn gthread and granian, ours and the peer.

Sets up the redis mode as ``bench/run`` does (PostgreSQL, Redis, a Celery worker, the development
issuer, ``--tenants`` tenants imported), then starts ours (``config.wsgi``) and the peer
(``bench/peer``) under each server, two workers each, all at once, and drives ``public``,
``scoped_repeat`` and ``scoped_distinct`` with wrk (1 thread, ``--connections``) interleaved:
scenario by scenario, each server in turn, ours then the peer. Prints req/s and the CPU the
server's processes spent per request, ``ours / peer`` per server and each server over gunicorn
sync; with ``--rounds`` above 1, the median ratio of the rounds too. ``--close`` sends
``Connection: close`` on every request (a client or proxy that does not keep connections: what
gunicorn's sync worker does anyway). Bounded: 3 scenarios x 3 servers x 2 sides x (``--duration``
+ 1 s of warm-up) per round, about 3 minutes for one round at 5 s.

    .venv/bin/python -m bench.servers [--rounds 1] [--duration 5] [--connections 8] [--close]
"""

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import load
from bench.bench import add_tenants, distinct_lines, peer_requests, tokens_needed
from bench.fixtures import Tokens, issuer_name, public_path, say, scoped_path, slug
from bench.stack import (
    PEER_DIR,
    PYTHON,
    Stack,
    busy_cpu_seconds,
    cpu_seconds,
    free_port,
    own_cpu_seconds,
    peer_env,
    start_platform,
)

SCENARIOS = ("public", "scoped_repeat", "scoped_distinct")
WORKERS = 2
# Four threads a worker: two workers then hold all eight of wrk's connections at once (more only
# queue on the GIL: the work is CPU-bound but for the short Redis and database round trips).
GTHREAD_THREADS = 4
GRANIAN = str(Path(PYTHON).parent / "granian")
SERVERS = ("gunicorn_sync", "gunicorn_gthread", "granian")
WARMUP_SECONDS = 1


def server_argv(server: str, app: str, port: int) -> list[str]:
    """The command line of ``server`` serving ``app`` ("module:attribute") on loopback."""
    if server == "granian":
        argv = [GRANIAN, "--interface", "wsgi", "--workers", str(WORKERS)]
        return [*argv, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", app]
    argv = [PYTHON, "-m", "gunicorn", app, "-w", str(WORKERS), "-b", f"127.0.0.1:{port}"]
    if server == "gunicorn_gthread":
        argv += ["-k", "gthread", "--threads", str(GTHREAD_THREADS)]
    return argv


def descendants(pid: int) -> list[int]:
    """A process and every process below it (a server's master and its workers)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        children = Path(f"/proc/{current}/task/{current}/children")
        pending += [int(child) for child in children.read_text().split()]
    return found


@dataclass
class Served:
    """One side (ours or the peer) under one server: its URL and its processes."""

    server: str
    side: str
    base: str
    pids: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        """``<side>@<server>``, as rows are named."""
        return f"{self.side}@{self.server}"


def start_ours(stack: Stack, env: dict[str, str], server: str) -> Served:
    """Ours under ``server``; gunicorn reads ./gunicorn.conf.py, which prepares the metrics
    directory, and granian gets one too, so both write metrics the way a deployment does."""
    env = dict(env)
    if server == "granian":
        metrics = stack.workdir / f"metrics-{server}"
        metrics.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    port = free_port()
    argv = server_argv(server, "config.wsgi:application", port)
    process = stack.spawn(f"ours-{server}", argv, env)
    base = f"http://127.0.0.1:{port}"
    stack.wait_http(f"ours-{server}", process, f"{base}/bench-not-found")
    return Served(server, "ours", base, [process.pid])


def start_peer(stack: Stack, server: str, issuer: str, audience: str) -> Served:
    """The peer under ``server``, from its own directory with only the environment it names."""
    env = peer_env(issuer, audience)
    port = free_port()
    argv = server_argv(server, "apiexample.wsgi:application", port)
    process = stack.spawn(f"peer-{server}", argv, env, cwd=PEER_DIR)
    base = f"http://127.0.0.1:{port}"
    stack.wait_http(f"peer-{server}", process, f"{base}/api/public")
    return Served(server, "peer", base, [process.pid])


def side_lines(side: str, name: str, tokens: Tokens, tenants: int, count: int) -> list:
    """The (path, Authorization) lines of one scenario as ``side`` is sent it."""
    if side == "peer":
        return peer_requests(name, tokens, count)[1]
    if name == "public":
        return [(public_path(0), "")]
    if name == "scoped_repeat":
        return [(scoped_path(0), tokens.bearer(0))]
    return distinct_lines(tokens, tenants, count)


def closing(lines: list) -> list:
    """The lines with ``Connection: close`` (the load generators' fourth field: headers)."""
    return [(line[0], line[1], "", "Connection: close") for line in lines]


def measure(served: Served, lines: list, seconds: int, workdir: Path, connections: int) -> dict:
    """One timed run: req/s, latency, errors, the server's CPU per request, others' share."""
    wall, server, own = time.monotonic(), cpu_seconds(served.pids), own_cpu_seconds()
    busy = busy_cpu_seconds()
    done = load.drive(served.base, lines, 200, seconds, workdir, connections)
    wall = time.monotonic() - wall
    server = cpu_seconds(served.pids) - server
    others = busy_cpu_seconds() - busy - server - (own_cpu_seconds() - own)
    return {
        "rps": round(done.rps, 1),
        "p50_ms": round(done.p50_ms, 2),
        "p99_ms": round(done.p99_ms, 2),
        "errors": done.errors,
        "reused": done.reused,
        "cpu_ms": round(server * 1000 / max(done.requests, 1), 3),
        "others_pct": round(max(others, 0) * 100 / (wall * (os.cpu_count() or 1)), 1),
    }


def one_round(
    everyone: list[Served], tokens: Tokens, args: argparse.Namespace, workdir: Path
) -> dict[str, dict[str, dict]]:
    """Every scenario on every server, interleaved; return {scenario: {side@server: row}}."""
    rows: dict[str, dict[str, dict]] = {name: {} for name in SCENARIOS}
    for name in SCENARIOS:
        for served in everyone:
            repeat = rows["scoped_repeat"].get(served.name, {}).get("rps", 1000.0)
            count = tokens_needed(repeat, args.duration + WARMUP_SECONDS)
            lines = side_lines(served.side, name, tokens, args.tenants, count)
            lines = closing(lines) if args.close else lines
            if name != "scoped_distinct":  # a distinct run's warm-up would spend its tokens
                load.drive(served.base, lines, 200, WARMUP_SECONDS, workdir, args.connections)
            say(f"{name} on {served.name}: {args.duration} s")
            row = measure(served, lines, args.duration, workdir, args.connections)
            rows[name][served.name] = row
    return rows


def ratios(rows: dict[str, dict[str, dict]]) -> dict[str, float]:
    """ours / peer on each server, and each server over gunicorn sync on each side."""
    figures = {}
    for name, by_served in rows.items():
        for server in SERVERS:
            rps = {side: by_served[f"{side}@{server}"]["rps"] for side in ("ours", "peer")}
            figures[f"{name}:ours/peer@{server}"] = round(rps["ours"] / rps["peer"], 3)
        for side in ("ours", "peer"):
            sync = by_served[f"{side}@gunicorn_sync"]["rps"]
            for server in SERVERS[1:]:
                key = f"{name}:{side}@{server}/sync"
                figures[key] = round(by_served[f"{side}@{server}"]["rps"] / sync, 3)
    return figures


def table(rows: dict[str, dict[str, dict]]) -> str:
    """One round's rows as a fixed-width table."""
    header = f"{'scenario':<16}{'served':<24}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
    header += f"{'errors':>7}{'CPU ms/req':>11}{'others %':>9}"
    lines = [header, "-" * len(header)]
    for name, by_served in rows.items():
        for served, row in by_served.items():
            lines.append(
                f"{name:<16}{served:<24}{row['rps']:>8.1f}{row['p50_ms']:>8.2f}"
                f"{row['p99_ms']:>8.2f}{row['errors']:>7}{row['cpu_ms']:>11.3f}"
                f"{row['others_pct']:>9.0f}"
            )
    return "\n".join(lines)


def start_all(stack: Stack, plat: Any) -> list[Served]:
    """Ours and the peer under every server, each with its processes listed once started."""
    issuer, audience = f"{plat.issuer_url}/{issuer_name(0)}/", f"https://api.{slug(0)}.test"
    everyone = []
    for server in SERVERS:
        everyone.append(start_ours(stack, plat.env, server))
        everyone.append(start_peer(stack, server, issuer, audience))
    time.sleep(3)  # every worker forked (granian spawns its workers after it answers)
    for served in everyone:
        served.pids = descendants(served.pids[0])
    return everyone


def parse_args() -> argparse.Namespace:
    """Command line: rounds, seconds per run, connections, tenants, Connection: close."""
    parser = argparse.ArgumentParser(prog="bench.servers", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--close", action="store_true", help="send Connection: close")
    return parser.parse_args()


def main() -> None:
    """Set up, start every server, measure the rounds, print, stop everything."""
    args = parse_args()
    with Stack() as stack:
        say("redis mode: starting the database, the store, the issuer and a worker")
        plat = start_platform(stack, "redis")
        add_tenants(plat, args.tenants)
        tokens = Tokens(stack.workdir / "keys", plat.issuer_url)
        everyone = start_all(stack, plat)
        found = []
        for number in range(1, args.rounds + 1):
            rows = one_round(everyone, tokens, args, stack.workdir)
            print(f"round {number}:\n{table(rows)}", flush=True)
            found.append({"rows": rows, "ratios": ratios(rows)})
            print(json.dumps(found[-1]["ratios"], indent=1), flush=True)
    report(found, args)


def report(found: list[dict], args: argparse.Namespace) -> None:
    """The median of each ratio over the rounds, and the machine-readable line."""
    keys = found[0]["ratios"]
    medians = {key: round(statistics.median(r["ratios"][key] for r in found), 3) for key in keys}
    print(f"median over {len(found)} round(s):")
    for key, value in medians.items():
        print(f"  {key} = {value:.3f}")
    settings = {"connections": args.connections, "close": args.close, "duration": args.duration}
    settings["gthread_threads"] = GTHREAD_THREADS
    print("SERVERS " + json.dumps({"settings": settings, "rounds": found, "median": medians}))


if __name__ == "__main__":
    main()
