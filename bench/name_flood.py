"""What a flood of made-up tenant names costs: SQL per second, and a real tenant's first request.

A request for a slug or hostname that no tenant has is refused (404) before any token work; the
question is what it costs the database. This sends RATE made-up names per second for SECONDS
(half ``/t/<slug>/``, half ``Host: <name>.localhost``) to ``gunicorn -w 2`` and prints:

- the SQL statements the workers' request threads ran per second during the flood (counted in
  the workers by ``bench/probe_wsgi.py``; the background thread's feed reads are apart);
- the latency of real tenants' first requests (a tenant the worker does not hold yet) during
  the flood and idle, p50 and max;
- the name filter's size and build time at TENANTS tenants (``tenants/directory.py``).

    .venv/bin/python -m bench.name_flood --mode both [--rate 2000] [--seconds 10] [--tenants 100000]
"""

import argparse
import asyncio
import json
import random
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from statistics import median
from typing import Any
from urllib.parse import urlsplit

from bench.fixtures import public_path, say, tenant_document
from bench.stack import (
    PROBE_APP,
    PYTHON,
    Platform,
    Stack,
    free_port,
    helper,
    http_get,
    start_platform,
    wait_until,
    worker_pids,
)

IN_FLIGHT = 16  # made-up requests open at once, at most: a real one queues behind no more
SAMPLES = 20  # real tenants' first requests measured, idle and during the flood


def made_up(number: int) -> tuple[str, str]:
    """A path and Host header naming a tenant nobody created: by slug, or by host, by turns."""
    name = f"x{uuid.uuid4().hex}"
    return (
        (f"/t/{name}/api/public", "127.0.0.1")
        if number % 2
        else ("/api/public", f"{name}.localhost")
    )


async def send_made_up(url: str, rate: float, seconds: float) -> dict[str, Any]:
    """Open a connection for each made-up name, RATE a second; the statuses and the rate reached."""
    target = urlsplit(url)
    statuses: Counter = Counter()
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(number: int) -> None:
        path, host = made_up(number)
        async with gate:
            try:
                reader, writer = await asyncio.open_connection(target.hostname, target.port)
                request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                writer.write(request.encode())
                answer = await reader.read()
                writer.close()
                statuses[answer[9:12].decode() or "empty"] += 1
            except OSError:
                statuses["socket error"] += 1

    loop = asyncio.get_running_loop()
    started, sent = loop.time(), []
    for number in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, started + number / rate - loop.time()))
        sent.append(asyncio.create_task(one(number)))
    await asyncio.gather(*sent)
    elapsed = loop.time() - started
    return {"statuses": dict(statuses), "seconds": round(elapsed, 2), "rate": len(sent) / elapsed}


def request_statements(sql_dir: Path) -> Counter:
    """The web workers' SQL statements so far, summed: request threads, feed reads, sync thread."""
    total: Counter = Counter()
    for path in sql_dir.glob("*.json"):
        total.update(json.loads(path.read_text()))
    return total


def first_request_ms(url: str, indexes: list[int], spacing: float) -> list[float]:
    """Milliseconds of each tenant's first request, one every ``spacing`` seconds."""
    latencies = []
    for index in indexes:
        started = time.monotonic()
        status, _, _ = http_get(url + public_path(index))
        latencies.append((time.monotonic() - started) * 1000)
        if status != 200:
            raise RuntimeError(f"tenant {index} answered {status}")
        time.sleep(spacing)
    return latencies


def start_counted_web(plat: Platform) -> str:
    """``gunicorn -w 2`` serving ``probe_wsgi``, which counts each worker's SQL by thread."""
    sql_dir = plat.sql_dir
    sql_dir.mkdir(exist_ok=True)
    env = {**plat.env, "BENCH_SQL_DIR": str(sql_dir)}
    port = free_port()
    argv = [PYTHON, "-m", "gunicorn", PROBE_APP, "-w", "2", "-b", f"127.0.0.1:{port}"]
    web = plat.stack.spawn("web", argv, env)
    plat.stack.wait_http("web", web, f"http://127.0.0.1:{port}/bench-not-found")
    wait_until(lambda: len(worker_pids(web.pid)) == 2, "both gunicorn workers started")
    url = f"http://127.0.0.1:{port}"
    # A worker answers a made-up name once its filter is built: wait until both have answered.
    answered: set[str] = set()
    wait_until(lambda: answered.add(made_up_answer(url)) or len(answered) == 2, "both filters")
    return url


def made_up_answer(url: str) -> str:
    """The worker that answered one made-up name."""
    path, host = made_up(0)
    return http_get(url + path, headers={"Host": host})[1]["X-Bench-Worker"]


def filter_cost() -> dict[str, Any]:
    """Build the name filter here (run with the platform's environment): time, size, peak."""
    import tracemalloc

    import django

    django.setup()
    from tenants.directory import NameFilter, active_names

    tracemalloc.start()
    started = time.monotonic()
    names = NameFilter(active_names())
    seconds = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1]
    return {
        "names": len(names),
        "build_seconds": round(seconds, 2),
        "mib": round(names.nbytes() / 2**20, 2),
        "peak_mib": round(peak / 2**20, 1),
    }


def run_in_platform(plat: Platform, *args: str) -> dict[str, Any]:
    """This module in another process with the platform's environment; its RESULT."""
    env = {**plat.env, "DJANGO_SETTINGS_MODULE": "config.settings"}
    done = subprocess.run(  # noqa: S603 - this interpreter, this module
        [PYTHON, "-m", "bench.name_flood", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(done.stdout.split("RESULT ", 1)[1])


def measure(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """One mode: seed the tenants, build a filter, start gunicorn, then idle and flooded runs."""
    with Stack() as stack:
        plat = start_platform(stack, mode)
        documents = [tenant_document(i, plat.issuer_url) for i in range(args.tenants)]
        seed_file = stack.workdir / "tenants.json"
        seed_file.write_text(json.dumps({"tenants": documents}))
        say(f"{mode}: seeding {args.tenants} tenants")
        helper(plat, "seed", str(seed_file), timeout=3600)
        names = [run_in_platform(plat, "--filter-cost") for _ in range(args.filter_builds)]
        say(f"{mode}: filter {names}")
        url = start_counted_web(plat)
        picked = random.sample(range(args.tenants), 2 * SAMPLES)
        idle = first_request_ms(url, picked[:SAMPLES], 0.1)
        before = request_statements(plat.sql_dir)
        flood = subprocess.Popen(  # noqa: S603 - this interpreter, this module
            [PYTHON, "-m", "bench.name_flood", "--flood", url, str(args.rate), str(args.seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1)  # the flood is under way
        during = first_request_ms(url, picked[SAMPLES:], (args.seconds - 2) / SAMPLES)
        sent = json.loads(flood.communicate(timeout=600)[0].split("RESULT ", 1)[1])
        spent = request_statements(plat.sql_dir) - before
    per_second = {key: round(value / sent["seconds"], 1) for key, value in spent.items()}
    return {
        "mode": mode,
        "asked": args.rate,
        "filter": names,
        "flood": sent,
        "statements_per_second": per_second,
        "first_request_ms": {"idle": summary(idle), "flood": summary(during)},
    }


def summary(latencies: list[float]) -> dict[str, float]:
    """p50 and max, in milliseconds."""
    return {"p50": round(median(latencies), 1), "max": round(max(latencies), 1)}


def report(result: dict[str, Any]) -> None:
    """The figures of one mode, readable."""
    flood, sql = result["flood"], result["statements_per_second"]
    first = result["first_request_ms"]
    lines = [
        f"{result['mode']}: made-up names at {flood['rate']:.0f}/s (asked {result['asked']}/s) "
        f"for {flood['seconds']} s, answers {flood['statuses']}",
        f"  request-thread SQL/s: {sql.get('request', 0)} (feed reads "
        f"{sql.get('request_feed', 0)}, shared store {sql.get('request_store', 0)}); "
        f"background thread: {sql.get('sync', 0)}",
        f"  a real tenant's first request (ms): idle {first['idle']}, flooded {first['flood']}",
    ]
    lines += [
        f"  filter: {built['names']} names, {built['mib']} MiB, built in "
        f"{built['build_seconds']} s, peak {built['peak_mib']} MiB"
        for built in result["filter"]
    ]
    print("\n".join(["", *lines, "RESULT " + json.dumps(result)]), flush=True)


def main() -> None:
    """Parse the arguments; run the modes (or one of the helper roles)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["redis", "embedded", "both"], default="both")
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--tenants", type=int, default=100_000)
    parser.add_argument("--flood", nargs=3, metavar=("URL", "RATE", "SECONDS"))
    parser.add_argument("--filter-builds", type=int, default=3, help="filter builds timed")
    parser.add_argument("--filter-cost", action="store_true")
    args = parser.parse_args()
    if args.flood:
        url, rate, seconds = args.flood
        print("RESULT " + json.dumps(asyncio.run(send_made_up(url, float(rate), float(seconds)))))
    elif args.filter_cost:
        print("RESULT " + json.dumps(filter_cost()))
    else:
        # Embedded first: the Redis mode sets Django up in this process, once.
        for mode in ["embedded", "redis"] if args.mode == "both" else [args.mode]:
            report(measure(mode, args))


if __name__ == "__main__":
    main()
