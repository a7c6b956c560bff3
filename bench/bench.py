"""The request-path benchmark (issue 6): what token validation costs over an open endpoint.

Starts PostgreSQL, Redis, the development issuer, a Celery worker and gunicorn (2 sync workers)
on loopback, imports tenants through the tenants JSON, warms up, then drives each scenario from
a separate process (wrk, else pyload.py) for a fixed time. Prints a table and one ``BENCH {json}``
line; stops everything it started. Run it as ``bench/run`` (see README).
"""

import argparse
import json
import math
import os
import platform
import resource
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from authz.devissuer import DevKeyStore
from bench import load
from bench.stack import (
    PYTHON,
    ROOT,
    Stack,
    free_port,
    http_get,
    import_tenants,
    manage,
    platform_env,
    wait_until,
)

ISSUERS = 10  # tenants share a few issuers, so signing distinct tokens stays cheap
SCOPE = "read:messages"
WARMUP_SECONDS = 2
REFRESH_TENANTS = 1_000
MEMORY_TENANTS = 10_000
MAX_DISTINCT_TOKENS = 100_000
STARTED = time.monotonic()


def say(message: str) -> None:
    """A progress line, with the seconds since the start."""
    print(f"bench: [{time.monotonic() - STARTED:5.0f} s] {message}", flush=True)


def slug(index: int) -> str:
    """The slug of tenant number ``index``."""
    return f"t{index:05d}"


def tenant_document(index: int, issuer_base: str) -> dict[str, Any]:
    """Tenant ``index`` as the tenants JSON describes it."""
    return {
        "slug": slug(index),
        "name": f"Tenant {index}",
        "issuer": f"{issuer_base}/iss{index % ISSUERS}/",
        "audiences": [f"https://api.{slug(index)}.test"],
        "hosts": [f"{slug(index)}.localhost"],
    }


def scoped_path(index: int) -> str:
    """The private-scoped endpoint of tenant ``index``."""
    return f"/t/{slug(index)}/api/private-scoped"


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
            "iss": f"{self.issuer_base}/iss{index % ISSUERS}/",
            "aud": f"https://api.{slug(index)}.test",
            "sub": f"auth0|bench-{self.serial}",
            "iat": now,
            "exp": now + 3600,
            "scope": scope,
        }

    def bearer(self, index: int, scope: str = SCOPE) -> str:
        """An ``Authorization`` value with a valid token of tenant ``index``."""
        return f"Bearer {self.store.sign(f'iss{index % ISSUERS}', self.claims(index, scope))}"

    def bad_signature(self, index: int) -> str:
        """A token naming the tenant's real key but signed by another key: 401."""
        foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        kid = self.store.current(f"iss{index % ISSUERS}")[0]
        claims = self.claims(index, SCOPE)
        return f"Bearer {jwt.encode(claims, foreign, algorithm='RS256', headers={'kid': kid})}"


@dataclass
class Platform:
    """The running services and the environment of the platform's processes."""

    stack: Stack
    env: dict[str, str]
    issuer_url: str
    redis_url: str
    postgres_log: Path
    tenants: int = 0


def start_platform(stack: Stack) -> Platform:
    """PostgreSQL, Redis, migrations, the development issuer and a Celery worker."""
    database_url, postgres_dir = stack.service("postgres")
    redis_url, _ = stack.service("redis")
    env = platform_env(database_url, redis_url, stack.workdir / "keys")
    os.environ.update({**env, "DJANGO_SETTINGS_MODULE": "config.settings"})
    import django

    django.setup()
    manage(env, "migrate", "--no-input", "-v", "0")
    port = free_port()
    issuer = stack.spawn("devissuer", [PYTHON, "manage.py", "devissuer", "--port", str(port)], env)
    stack.wait_http("devissuer", issuer, f"http://127.0.0.1:{port}/_stats")
    start_worker(stack, env)
    return Platform(
        stack, env, f"http://127.0.0.1:{port}", redis_url, postgres_dir / "postgres.log"
    )


def start_worker(stack: Stack, env: dict[str, str]) -> None:
    """A real Celery worker (2 processes) consuming the Redis broker."""
    from config.celery import app

    argv = [PYTHON, "-m", "celery", "-A", "config", "worker", "--concurrency", "2"]
    argv += ["--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    stack.spawn("worker", argv, env)
    wait_until(lambda: app.control.ping(timeout=0.5), "the Celery worker answering")


def add_tenants(plat: Platform, total: int) -> float:
    """Import tenants up to ``total``; wait until the worker stored all their key sets."""
    new = range(plat.tenants, total)
    say(f"importing {len(new)} tenants ({total} in all)")
    seconds = import_tenants(
        plat.env, plat.stack.workdir, [tenant_document(i, plat.issuer_url) for i in new]
    )
    plat.tenants = total
    say(f"imported in {seconds:.1f} s; waiting for the worker to store their key sets")
    lost = wait_for_key_sets(total)
    if lost:
        say(f"{lost} refreshes queued on save found no tenant in the worker; queued them again")
    return seconds


def wait_for_key_sets(total: int) -> int:
    """Wait until the worker stored the key sets of tenants 0..total-1; return refreshes lost.

    The worker's tenant directory may still be the one it read up to AUTHZ_CONFIG_RECHECK_INTERVAL
    seconds before the import committed; a refresh queued on save then finds no tenant and is
    dropped. Once the worker has gone quiet, the missing tenants are queued again.
    """
    from authz.tasks import refresh_key_set

    deadline, lost = time.monotonic() + 60 + total * 0.05, 0
    progress = (-1, time.monotonic())
    while (found := len(records(range(total)))) < total:
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"only {found} of {total} key sets were stored")
        if found != progress[0]:
            progress = (found, now)
        elif now - progress[1] > 5:
            missing = set(map(slug, range(total))) - set(records(range(total)))
            for name in missing:
                refresh_key_set.delay(name)
            lost, progress = lost + len(missing), (found, now)
        time.sleep(0.5)
    return lost


def records(indexes: range) -> dict[str, Any]:
    """The stored key set records (with keys) of tenants ``indexes``."""
    from authz.jwks import read_records

    slugs = [slug(i) for i in indexes]
    found: dict[str, Any] = {}
    for start in range(0, len(slugs), 1000):
        found.update(read_records(slugs[start : start + 1000]))
    return {name: record for name, record in found.items() if record.keys}


def start_web(plat: Platform, app: str = "config.wsgi") -> tuple[str, Any]:
    """gunicorn with 2 sync workers on loopback; return its URL and process."""
    port = free_port()
    argv = [PYTHON, "-m", "gunicorn", app, "-w", "2", "-b", f"127.0.0.1:{port}"]
    web = plat.stack.spawn("web", argv, plat.env)
    # A path no route serves: answering it touches neither tenants nor keys.
    plat.stack.wait_http("web", web, f"http://127.0.0.1:{port}/bench-not-found")
    return f"http://127.0.0.1:{port}", web


def worker_pids(master: int) -> list[int]:
    """The gunicorn workers: the master's children."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process in MiB: now (VmRSS) or at its peak (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no {field} for pid {pid}")


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of processes, in seconds."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds() -> float:
    """CPU time all processes on this machine used since boot, in seconds."""
    # user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    ticks = [int(field) for field in Path("/proc/stat").read_text().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU time of this process and its finished children (the load generator)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Counters:
    """SQL statements (PostgreSQL's statement log), issuer fetches, Redis commands, CPU time."""

    def __init__(self, plat: Platform, web_pids: list[int]) -> None:
        import redis

        self.log = plat.postgres_log
        self.stats_url = f"{plat.issuer_url}/_stats"
        self.redis = redis.Redis.from_url(plat.redis_url)
        self.web_pids = web_pids

    @staticmethod
    def log_statements(setting: str) -> None:
        """Set PostgreSQL's ``log_statement`` for every session, open ones included."""
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(f"ALTER SYSTEM SET log_statement = '{setting}'")
            cursor.execute("SELECT pg_reload_conf()")
        connection.close()
        time.sleep(0.5)  # sessions apply the reload before their next statement

    def read(self) -> dict[str, float]:
        """Current totals."""
        stats = json.loads(http_get(self.stats_url)[2])
        return {
            "wall": time.monotonic(),
            "server_cpu": cpu_seconds(self.web_pids),
            "own_cpu": own_cpu_seconds(),
            "busy_cpu": busy_cpu_seconds(),
            "log_offset": self.log.stat().st_size,
            "fetches": sum(n for key, n in stats.items() if "/.well-known/" in key),
            "redis": self.redis.info("stats")["total_commands_processed"],
        }

    def since(self, before: dict[str, float], requests: int) -> dict[str, Any]:
        """What the last ``requests`` requests cost since ``before``."""
        after = self.read()
        delta = {key: after[key] - before[key] for key in after}
        time.sleep(0.3)  # let the statement log catch up
        with self.log.open("rb") as log:
            log.seek(int(before["log_offset"]))
            statements = log.read().count(b" LOG:  statement: ")
        others = delta["busy_cpu"] - delta["server_cpu"] - delta["own_cpu"]
        return {
            "sql_queries": statements,
            "http_fetches": int(delta["fetches"]),
            "server_cpu_ms": round(delta["server_cpu"] * 1000 / max(requests, 1), 3),
            "others_cpu_pct": round(max(others, 0) * 100 / (delta["wall"] * os.cpu_count()), 1),
            "redis_per_request": round((delta["redis"] - 1) / max(requests, 1), 3),  # less INFO
        }


def run_scenario(
    name: str, expect: int, lines: list, base: str, seconds: int, counters: Counters, workdir: Path
) -> dict[str, Any]:
    """One timed run of a scenario, with its SQL, fetch, Redis and CPU counts."""
    before = counters.read()
    measured = load.drive(base, lines, expect, seconds, workdir)
    return {
        "scenario": name,
        "status": expect,
        "requests": measured.requests,
        "rps": round(measured.rps, 1),
        "p50_ms": round(measured.p50_ms, 2),
        "p99_ms": round(measured.p99_ms, 2),
        "errors": measured.errors,
        "reused_lines": measured.reused,
        **counters.since(before, measured.requests),
    }


def tokens_needed(repeat_rps: float, seconds: int) -> int:
    """Enough never-seen tokens for a run: it cannot outrun the repeated token's rate."""
    return min(math.ceil(repeat_rps * seconds * 1.3) + 1000, MAX_DISTINCT_TOKENS)


def distinct_lines(tokens: Tokens, tenants: int, count: int) -> list[tuple[str, str]]:
    """``count`` requests, each with its own token, spread evenly over the tenants."""
    return [(scoped_path(i % tenants), tokens.bearer(i % tenants)) for i in range(count)]


SCENARIOS = ("public", "scoped_repeat", "scoped_distinct", "invalid", "insufficient_scope")


def scenario_requests(tokens: Tokens, tenants: int, distinct: int) -> dict[str, tuple[int, list]]:
    """Each scenario's expected status and its (path, Authorization) lines, in run order."""
    return {
        "public": (200, [(f"/t/{slug(0)}/api/public", "")]),
        "scoped_repeat": (200, [(scoped_path(0), tokens.bearer(0))]),
        "scoped_distinct": (200, distinct_lines(tokens, tenants, distinct)),
        "invalid": (401, [(scoped_path(0), tokens.bad_signature(0))]),
        "insufficient_scope": (403, [(scoped_path(0), tokens.bearer(0, scope=""))]),
    }


def timed_scenarios(
    plat: Platform, base: str, pids: list[int], tokens: Tokens, seconds: int
) -> list[dict]:
    """Warm up, then run the five scenarios against the same server."""
    workdir, n = plat.stack.workdir, plat.tenants
    scenarios = scenario_requests(tokens, n, max(20 * n, 2000))
    say(f"warming up: {WARMUP_SECONDS} s of each scenario")
    for expect, lines in scenarios.values():
        load.drive(base, lines, expect, WARMUP_SECONDS, workdir)
    counters = Counters(plat, pids)
    counters.log_statements("all")
    results = []
    for name in SCENARIOS:
        if name == "scoped_distinct":  # tokens never sent before, as many as the run can use
            count = tokens_needed(results[-1]["rps"], seconds)
            scenarios[name] = (200, distinct_lines(tokens, n, count))
        expect, lines = scenarios[name]
        say(f"{name}: {seconds} s")
        results.append(run_scenario(name, expect, lines, base, seconds, counters, workdir))
    counters.log_statements("none")
    return results


def time_refresh_all(tenants: int) -> float:
    """Seconds from queuing the periodic fan-out until the worker stored every tenant's keys."""
    from authz.tasks import refresh_all_key_sets

    started = time.time()
    refresh_all_key_sets.delay()

    def refreshed() -> dict[str, Any] | None:
        found = records(range(tenants))
        done = len(found) == tenants and all(r.fetched_at >= started for r in found.values())
        return found if done else None

    found = wait_until(refreshed, f"refresh of {tenants} key sets", timeout=180)
    return max(record.fetched_at for record in found.values()) - started


def warm_every_worker(base: str, lines: list[tuple[str, str]], pids: set[int]) -> int:
    """Send each line until every gunicorn worker has served it; return the requests sent."""
    # Bounded by time, not tries: while one worker loads the directory the other serves all.
    deadline = time.monotonic() + 300

    def warm(line: tuple[str, str]) -> int:
        seen: set[int] = set()
        sent = 0
        while not seen >= pids:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{line[0]} did not reach every web worker in time")
            status, headers, body = http_get(base + line[0], {"Authorization": line[1]})
            if status != 200:
                raise RuntimeError(f"warming {line[0]}: HTTP {status} {body[:200]!r}")
            seen.add(int(headers["X-Bench-Worker"]))
            sent += 1
        return sent

    with ThreadPoolExecutor(8) as pool:
        return sum(pool.map(warm, lines))


def scale(plat: Platform, tokens: Tokens, seconds: int, repeat_rps: float) -> dict[str, Any]:
    """Key set refresh of 1,000 tenants; memory and warm-path counts with 10,000 tenants."""
    add_tenants(plat, max(plat.tenants, REFRESH_TENANTS))
    say(f"timing the refresh of {plat.tenants} key sets")
    refresh = {"tenants": plat.tenants, "seconds": round(time_refresh_all(plat.tenants), 2)}
    add_tenants(plat, max(plat.tenants, MEMORY_TENANTS))
    base, web = start_web(plat, "bench.probe_wsgi:application")
    pids = worker_pids(web.pid)
    everyone = range(plat.tenants)
    say(f"warming both web workers with all {plat.tenants} tenants")
    rss = {"idle": [rss_mib(pid) for pid in pids]}
    warm_every_worker(base, [(f"/t/{slug(0)}/api/public", "")], set(pids))  # loads the directory
    rss["configs"] = [rss_mib(pid) for pid in pids]
    lines = [(scoped_path(i), tokens.bearer(i)) for i in everyone]
    warm_requests = warm_every_worker(base, lines, set(pids))
    rss["warm"] = [rss_mib(pid) for pid in pids]
    rss["peak"] = [rss_mib(pid, "VmHWM") for pid in pids]
    check_seconds = min(seconds, 5)
    count = max(plat.tenants, tokens_needed(repeat_rps, check_seconds))
    fresh = distinct_lines(tokens, plat.tenants, count)  # never seen: each verified anew
    counters = Counters(plat, pids)
    counters.log_statements("all")
    name, workdir = f"scoped_distinct@{plat.tenants}", plat.stack.workdir
    check = run_scenario(name, 200, fresh, base, check_seconds, counters, workdir)
    counters.log_statements("none")
    plat.stack.stop(web)
    return {
        "refresh": refresh,
        "memory": {"tenants": plat.tenants, "worker_rss_mib": rss, "warm_requests": warm_requests},
        "warm_check": check,
    }


def revision() -> str:
    """The commit measured, with ``-dirty`` when the work tree has uncommitted changes."""
    described = subprocess.run(
        ["git", "describe", "--always", "--dirty"],  # noqa: S607 - git from PATH
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return described.stdout.strip() or "unknown"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?")
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(memory_kib / 2**20, 1),
        "python": platform.python_version(),
        "load_generator": load.generator(),
        "revision": revision(),
    }


# (title, key, format): the first column is left-aligned, the rest right-aligned.
COLUMNS = (
    ("scenario", "scenario", "<20"),
    ("status", "status", ">6"),
    ("requests", "requests", ">8"),
    ("req/s", "rps", ">7.1f"),
    ("p50 ms", "p50_ms", ">6.2f"),
    ("p99 ms", "p99_ms", ">6.2f"),
    ("errors", "errors", ">6"),
    ("SQL", "sql_queries", ">3"),
    ("fetches", "http_fetches", ">7"),
    ("redis/req", "redis_per_request", ">9.2f"),
    ("CPU ms/req", "server_cpu_ms", ">10.2f"),
    ("others %", "others_cpu_pct", ">8.0f"),
)


def table(rows: list[dict[str, Any]]) -> str:
    """The scenarios as a fixed-width table."""
    header = "  ".join(f"{title:{spec.split('.')[0]}}" for title, _, spec in COLUMNS)
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append("  ".join(format(row[key], spec) for _, key, spec in COLUMNS))
    return "\n".join(lines)


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Throughput of the scoped scenarios over the public one."""
    rps = {row["scenario"]: row["rps"] for row in rows}
    return {
        f"{name}_over_public": round(rps[name] / rps["public"], 3)
        for name in ("scoped_repeat", "scoped_distinct")
    }


def report_scale(figures: dict[str, Any]) -> str:
    """The scale measurements, as sentences."""
    refresh, memory, check = figures["refresh"], figures["memory"], figures["warm_check"]
    rss = {stage: " and ".join(map(str, mib)) for stage, mib in memory["worker_rss_mib"].items()}
    return "\n".join(
        [
            f"key set refresh: {refresh['tenants']} tenants in {refresh['seconds']:.2f} s "
            "(refresh_all_key_sets fan-out, one Celery worker of 2 processes; target <= 20 s)",
            f"web worker RSS with {memory['tenants']} tenants: {rss['warm']} MiB warm "
            f"(target <= 200 MiB; peak {rss['peak']} MiB); {rss['idle']} MiB before any request, "
            f"{rss['configs']} MiB with the tenant configs loaded; "
            f"warmed with {memory['warm_requests']} requests",
            f"warm requests at {memory['tenants']} tenants (a fresh token per tenant): "
            f"{check['rps']:.1f} req/s, p50 {check['p50_ms']:.2f} ms, "
            f"p99 {check['p99_ms']:.2f} ms, errors {check['errors']}, "
            f"SQL {check['sql_queries']}, fetches {check['http_fetches']}, "
            f"Redis commands per request {check['redis_per_request']}",
        ]
    )


def parse_args() -> argparse.Namespace:
    """Command line: tenants, seconds per scenario, and whether to skip the scale measurements."""
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n")[0])
    parser.add_argument("--tenants", type=int, default=100, help="tenants served (default 100)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario")
    parser.add_argument(
        "--skip-scale", action="store_true", help="skip the 1,000 and 10,000 tenant measurements"
    )
    args = parser.parse_args()
    if args.tenants < 1 or args.duration < 1:
        parser.error("--tenants and --duration must be at least 1")
    return args


def stop_on_signal(signum: int, frame: object) -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every started process is stopped."""
    raise SystemExit(128 + signum)


def main() -> None:
    """Set up, measure, report, tear down."""
    args = parse_args()
    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGHUP, stop_on_signal)
    summary: dict[str, Any] = {"machine": machine(), "tenants": args.tenants}
    summary["duration_s"] = args.duration
    with Stack() as stack:
        say(f"starting PostgreSQL, Redis, the issuer and a worker on {summary['machine']}")
        plat = start_platform(stack)
        add_tenants(plat, args.tenants)
        tokens = Tokens(stack.workdir / "keys", plat.issuer_url)
        say("starting gunicorn, 2 sync workers")
        base, web = start_web(plat)
        rows = timed_scenarios(plat, base, worker_pids(web.pid), tokens, args.duration)
        summary["worker_rss_mib"] = [rss_mib(pid) for pid in worker_pids(web.pid)]
        stack.stop(web)
        summary.update(scenarios={row.pop("scenario"): row for row in map(dict, rows)})
        summary.update(ratios(rows))
        print(table(rows))
        print(", ".join(f"{key} = {value:.3f}" for key, value in ratios(rows).items()))
        rss = " and ".join(map(str, summary["worker_rss_mib"]))
        print(f"web worker RSS with {args.tenants} tenants warm: {rss} MiB", flush=True)
        if not args.skip_scale:
            say("scale: 1,000 tenants' key set refresh, then 10,000 tenants in the web workers")
            repeat_rps = summary["scenarios"]["scoped_repeat"]["rps"]
            summary["scale"] = scale(plat, tokens, args.duration, repeat_rps)
            print(report_scale(summary["scale"]))
    summary["run_seconds"] = round(time.monotonic() - STARTED, 1)
    say("done; everything started was stopped")
    print("BENCH " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
