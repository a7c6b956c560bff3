"""The request-path benchmark (issue 6): what token validation costs over an open endpoint.

Starts one deployment on loopback (``redis``: PostgreSQL, Redis, a Celery worker; ``embedded``:
SQLite and the database cache, no worker), the development issuer and gunicorn (2 sync workers),
imports tenants through the tenants JSON, warms up, then drives each scenario from a separate
process (wrk, else pyload.py) for a fixed time. Then the scale measurements, the control plane's
at 100,000 tenants among them (``bench/control.py``). Prints a table and one ``BENCH {json}``
line; stops everything it started. Run it as ``bench/run`` (see README).
"""

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import control, load
from bench.counters import Counters
from bench.fixtures import (
    DECIDED,
    DECISION_PATH,
    LIMITED,
    STARTED,
    Tokens,
    decision_headers,
    issuer_name,
    public_path,
    say,
    scoped_path,
    slug,
    tenant_document,
    with_proofs,
)
from bench.stack import (
    HELD_PATH,
    PROBE_APP,
    PROXY_SECRET,
    ROOT,
    Platform,
    Stack,
    helper,
    http_get,
    import_tenants,
    rss_mib,
    start_peer,
    start_platform,
    start_web,
    wait_until,
    worker_pids,
)
from devissuer import dpop

WARMUP_SECONDS = 2
REFRESH_URLS = 1_000
MEMORY_TENANTS = 10_000
MAX_DISTINCT_TOKENS = 100_000
MODES = ("redis", "embedded")


def jwks_url(plat: Platform, issuer: str) -> str:
    """The JWKS URL of one development issuer name, as tenants derive it."""
    return f"{plat.issuer_url}/{issuer}/.well-known/jwks.json"


def add_tenants(plat: Platform, total: int) -> float:
    """Import tenants up to ``total``; in redis mode, wait until the worker stored their keys."""
    new = range(plat.tenants, total)
    say(f"importing {len(new)} tenants ({total} in all)")
    seconds = import_tenants(
        plat.env, plat.stack.workdir, [tenant_document(i, plat.issuer_url) for i in new]
    )
    plat.tenants = total
    if plat.mode == "redis":  # the import queued one refresh per distinct URL after commit
        say(f"imported in {seconds:.1f} s; waiting for the worker to store their key sets")
        urls = sorted({jwks_url(plat, issuer_name(i)) for i in range(total)})
        wait_for_key_sets(urls)
    return seconds


def wait_for_key_sets(urls: list[str], timeout: float = 120) -> None:
    """Wait until the shared store holds a record with keys for every URL."""

    def stored() -> bool:
        return len(records(urls)) == len(urls)

    wait_until(stored, f"the key sets of {len(urls)} URLs stored", timeout)


def records(urls: list[str]) -> dict[str, Any]:
    """The stored key set records (with keys) of these JWKS URLs, by URL."""
    from authz.jwks import read_records

    found: dict[str, Any] = {}
    for start in range(0, len(urls), 1000):
        found.update(read_records(urls[start : start + 1000]))
    return {url: record for url, record in found.items() if record.keys}


def run_scenario(
    name: str, expect: int, lines: list, base: str, seconds: int, counters: Counters, workdir: Path
) -> dict[str, Any]:
    """One timed run of a scenario, with its SQL, fetch, Redis and CPU counts."""
    before = counters.start()
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


SCENARIOS = (
    "public",
    "scoped_repeat",
    "decision_repeat",
    "limited_repeat",
    "scoped_distinct",
    "one_tenant_distinct",
    "dpop_distinct",
    "dpop_reused_token",
    "invalid_repeat",
    "insufficient_scope",
)
# Scenarios whose every request carries a proof never sent before (a proof is good once).
FRESH_PROOFS = ("dpop_distinct", "dpop_reused_token")
DPOP_KEYS = 8  # clients' proof keys: each bound token and its proofs use one of them


def dpop_lines(tokens: Tokens, tenants: int, count: int, keys: list) -> list[tuple[str, str]]:
    """``count`` DPoP requests, each with its own token bound to one of ``keys`` (no proof yet)."""
    return [
        (scoped_path(i % tenants), tokens.dpop_bound(i % tenants, keys[i % len(keys)]))
        for i in range(count)
    ]


def reused_token_lines(tokens: Tokens, tenants: int, count: int, keys: list) -> list[tuple]:
    """``count`` DPoP requests of one bound token per tenant and key, as a client sends them
    during its token's life (proofs, fresh for each request, come later from ``with_proofs``)."""
    bound = {}
    for i in range(count):
        tenant, key = i % tenants, i % len(keys)
        if (tenant, key) not in bound:
            bound[tenant, key] = tokens.dpop_bound(tenant, keys[key])
    return [(scoped_path(i % tenants), bound[i % tenants, i % len(keys)]) for i in range(count)]


# Scenarios whose every request is one never sent before (a new token, a new proof or both),
# built for as many requests as the run can use.
DISTINCT_BUILDERS = {
    "scoped_distinct": lambda tokens, tenants, count, keys: distinct_lines(tokens, tenants, count),
    "one_tenant_distinct": lambda tokens, tenants, count, keys: distinct_lines(tokens, 1, count),
    "dpop_distinct": dpop_lines,
    "dpop_reused_token": reused_token_lines,
}


def scenario_requests(
    tokens: Tokens, tenants: int, distinct: int, keys: list
) -> dict[str, tuple[int, list]]:
    """Each scenario's expected status and its (path, Authorization) lines, in run order.

    DPoP lines get their proofs from ``with_proofs`` just before they are sent.
    """
    return {
        "public": (200, [(public_path(0), "")]),
        "scoped_repeat": (200, [(scoped_path(0), tokens.bearer(0))]),
        "decision_repeat": (200, [decision_line(tokens.bearer(DECIDED))]),
        "limited_repeat": (200, [(scoped_path(LIMITED), tokens.bearer(LIMITED))]),
        "scoped_distinct": (200, distinct_lines(tokens, tenants, distinct)),
        # The peer's shape: one tenant (tenant 0, which counts no rate limit), new tokens.
        "one_tenant_distinct": (200, distinct_lines(tokens, 1, distinct)),
        "dpop_distinct": (200, dpop_lines(tokens, tenants, distinct, keys)),
        "dpop_reused_token": (200, reused_token_lines(tokens, tenants, distinct, keys)),
        "invalid_repeat": (401, [(scoped_path(0), tokens.bad_signature(0))]),
        "insufficient_scope": (403, [(scoped_path(0), tokens.bearer(0, scope=""))]),
    }


def decision_line(authorization: str) -> tuple[str, str, str, str]:
    """A proxy asking about a client's request to tenant DECIDED's host, a route it has."""
    return (DECISION_PATH, authorization, "", decision_headers(DECIDED, PROXY_SECRET))


# The peer (bench/peer, the quickstart done right): one tenant, tenant 0's issuer and audience.
PEER_SCENARIOS = ("public", "scoped_repeat", "scoped_distinct")
# Which of ours each peer scenario is run beside and compared with: the same requests. The peer
# serves one tenant and counts no rate limit, so its never-seen tokens meet one_tenant_distinct;
# scoped_distinct (every tenant, one of them limited) is compared as well, apart.
OURS_FOR_PEER = {
    "public": "public",
    "scoped_repeat": "scoped_repeat",
    "one_tenant_distinct": "scoped_distinct",
}
PEER_SCOPED = "/api/private-scoped"


def peer_requests(name: str, tokens: Tokens, count: int) -> tuple[int, list]:
    """The peer's request lines for one of PEER_SCENARIOS (``count`` of them when distinct)."""
    if name == "public":
        return 200, [("/api/public", "")]
    if name == "scoped_repeat":
        return 200, [(PEER_SCOPED, tokens.bearer(0))]
    return 200, [(PEER_SCOPED, tokens.bearer(0)) for _ in range(count)]


@dataclass
class Server:
    """One server measured in the run: its URL, its workers, and what counts their cost."""

    base: str
    pids: list[int]
    counters: Counters


def ready(name: str, lines: list, base: str, keys: list) -> list:
    """The lines as sent: DPoP lines with proofs made now (a proof is good for a minute)."""
    return with_proofs(lines, base, keys) if name in FRESH_PROOFS else lines


def timed_scenarios(
    plat: Platform, ours: Server, peer: Server, tokens: Tokens, seconds: int
) -> list[dict]:
    """Warm up, then run every scenario against the same server, and each of the peer's right
    after ours with the same requests (OURS_FOR_PEER: interleaved, so both see the same machine)."""
    workdir, n, base = plat.stack.workdir, plat.tenants, ours.base
    keys = [dpop.new_key() for _ in range(DPOP_KEYS)]
    scenarios = scenario_requests(tokens, n, max(20 * n, 2000), keys)
    say(f"warming up: {WARMUP_SECONDS} s of each scenario")
    for name, (expect, lines) in scenarios.items():
        load.drive(base, ready(name, lines, base, keys), expect, WARMUP_SECONDS, workdir)
    for name in PEER_SCENARIOS:
        expect, lines = peer_requests(name, tokens, 2000)
        load.drive(peer.base, lines, expect, WARMUP_SECONDS, workdir)
    ours.counters.log_statements(True)
    rps: dict[str, float] = {}
    results = []
    for name in SCENARIOS:
        expect, lines = scenarios[name]
        if name in DISTINCT_BUILDERS:
            count = tokens_needed(rps["scoped_repeat"], seconds)
            say(f"{name}: {count} requests")
            lines = DISTINCT_BUILDERS[name](tokens, n, count, keys)
        lines = ready(name, lines, base, keys)
        say(f"{name}: {seconds} s")
        results.append(run_scenario(name, expect, lines, base, seconds, ours.counters, workdir))
        rps[name] = results[-1]["rps"]
        if name in OURS_FOR_PEER:
            peer_name = OURS_FOR_PEER[name]
            count = tokens_needed(rps.get("peer_scoped_repeat", rps[name]), seconds)
            expect, lines = peer_requests(peer_name, tokens, count)
            say(f"peer_{peer_name}: {seconds} s")
            row = run_scenario(
                f"peer_{peer_name}", expect, lines, peer.base, seconds, peer.counters, workdir
            )
            results.append(row)
            rps[row["scenario"]] = row["rps"]
    ours.counters.log_statements(False)
    return results


def copy_issuer_keys(plat: Platform, names: list[str]) -> None:
    """Give new development issuer names the keys of ``iss0``, before the issuer first serves them.

    The issuer makes a 2048-bit RSA key for a name on first use (70 ms each here); for 1,000
    names that is a minute spent before the figure, not in it. Its key directory is plain files.
    """
    keys = Path(plat.env["DEVISSUER_KEY_DIR"])
    for name in names:
        if not (keys / name).exists():
            shutil.copytree(keys / issuer_name(0), keys / name)


def seed(plat: Platform, documents: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """Create tenants with ``bulk_create`` (control_helper seed); return what it reported."""
    path = plat.stack.workdir / f"{name}.json"
    path.write_text(json.dumps({"tenants": documents}))
    try:
        return helper(plat, "seed", str(path))
    finally:
        path.unlink()


def time_refresh_all(urls: list[str]) -> float:
    """Seconds from queuing the periodic fan-out until the worker stored every URL's keys."""
    from tenants.tasks import refresh_all_key_sets

    started = time.time()
    refresh_all_key_sets.delay()

    def refreshed() -> dict[str, Any] | None:
        found = records(urls)
        done = len(found) == len(urls) and all(r.fetched_at >= started for r in found.values())
        return found if done else None

    found = wait_until(refreshed, f"refresh of {len(urls)} key sets", timeout=180)
    return max(record.fetched_at for record in found.values()) - started


def refresh_scale(plat: Platform) -> dict[str, Any]:
    """The fan-out over 1,000 distinct JWKS URLs: tenants on 1,000 issuer names, timed."""
    names = [f"iss{number}" for number in range(REFRESH_URLS)]
    copy_issuer_keys(plat, names)
    say(f"adding {REFRESH_URLS} tenants on {REFRESH_URLS} issuer names")
    documents = [tenant_document(j, plat.issuer_url, names[j], "k") for j in range(REFRESH_URLS)]
    seed(plat, documents, "refresh-tenants")
    urls = [jwks_url(plat, name) for name in names]
    time_refresh_all(urls)  # the first fetch of each new URL, untimed
    say(f"timing the refresh of {len(urls)} key sets (distinct JWKS URLs)")
    return {"key_sets": len(urls), "seconds": round(time_refresh_all(urls), 2)}


def warm_every_worker(base: str, lines: list[tuple[str, str]], pids: set[int]) -> int:
    """Send each line until every gunicorn worker has served it; return the requests sent."""
    # Bounded by time, not tries: which worker accepts a connection is up to the kernel.
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


def memory_scale(plat: Platform, tokens: Tokens, seconds: int, repeat_rps: float) -> dict[str, Any]:
    """Memory and warm-path counts with 10,000 tenants held by each web worker."""
    control.fill(plat, MEMORY_TENANTS)
    base, web = start_web(plat, PROBE_APP)
    pids = worker_pids(web.pid)
    everyone = range(MEMORY_TENANTS)
    say(f"warming both web workers with {MEMORY_TENANTS} tenants")
    rss = {"idle": [rss_mib(pid) for pid in pids]}
    lines = [(scoped_path(i), tokens.bearer(i)) for i in everyone]
    warm_requests = warm_every_worker(base, lines, set(pids))
    rss["warm"] = [rss_mib(pid) for pid in pids]
    rss["peak"] = [rss_mib(pid, "VmHWM") for pid in pids]
    held = control.per_worker(base + HELD_PATH, pids)
    check_seconds = min(seconds, 5)
    count = max(MEMORY_TENANTS, tokens_needed(repeat_rps, check_seconds))
    fresh = distinct_lines(tokens, MEMORY_TENANTS, count)  # never seen: each verified anew
    counters = Counters(plat, pids)
    counters.log_statements(True)
    name, workdir = f"scoped_distinct@{MEMORY_TENANTS}", plat.stack.workdir
    check = run_scenario(name, 200, fresh, base, check_seconds, counters, workdir)
    counters.log_statements(False)
    plat.stack.stop(web)
    return {
        "memory": {
            "tenants": MEMORY_TENANTS,
            "worker_rss_mib": rss,
            "held": [held[pid]["held"] for pid in pids],
            "warm_requests": warm_requests,
        },
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
    ("scenario", "scenario", "<25"),
    ("status", "status", ">6"),
    ("requests", "requests", ">8"),
    ("req/s", "rps", ">7.1f"),
    ("p50 ms", "p50_ms", ">6.2f"),
    ("p99 ms", "p99_ms", ">6.2f"),
    ("errors", "errors", ">6"),
    ("SQL", "sql_queries", ">3"),
    ("sync SQL", "sync_sql_queries", ">8"),
    ("fetches", "http_fetches", ">7"),
    ("redis/req", "redis_per_request", ">9.2f"),
    ("CPU ms/req", "server_cpu_ms", ">10.2f"),
    ("others %", "others_cpu_pct", ">8.0f"),
)


def table(rows: list[dict[str, Any]]) -> str:
    """The scenarios as a fixed-width table ("-": not measured in this mode)."""
    header = "  ".join(f"{title:{spec.split('.')[0]}}" for title, _, spec in COLUMNS)
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = []
        for _, key, spec in COLUMNS:
            value = row[key]
            cells.append(format("-", spec.split(".")[0]) if value is None else format(value, spec))
        lines.append("  ".join(cells))
    return "\n".join(lines)


RATIOS = (
    "scoped_repeat_over_public",
    "decision_repeat_over_public",
    "scoped_distinct_over_public",
    "dpop_distinct_over_public",
    "dpop_reused_token_over_public",
    "invalid_repeat_over_public",
    "insufficient_scope_over_public",
)


LIMITER_RATIO = "limited_repeat_over_scoped_repeat"  # the rate limiter's cost (target >= 0.95)
# A proxy's decision against the peer's private-scoped endpoint with a repeated token.
DECISION_OVER_PEER = "decision_repeat_over_peer_scoped_repeat"
# Every tenant's never-seen tokens, one of ten tenants rate-limited, against the peer's.
SPREAD_OVER_PEER = "scoped_distinct_every_tenant_over_peer"
PEER_RATIOS = (
    *(f"{name}_over_peer" for name in PEER_SCENARIOS),
    SPREAD_OVER_PEER,
    DECISION_OVER_PEER,
)


def ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Throughput of the scoped scenarios over the public one."""
    rps = {row["scenario"]: row["rps"] for row in rows}
    figures = {
        key: round(rps[key.removesuffix("_over_public")] / rps["public"], 3) for key in RATIOS
    }
    figures[LIMITER_RATIO] = round(rps["limited_repeat"] / rps["scoped_repeat"], 3)
    for ours, name in OURS_FOR_PEER.items():  # issue 21: 0.95, 1.10 and 1.00
        figures[f"{name}_over_peer"] = round(rps[ours] / rps[f"peer_{name}"], 3)
    figures[SPREAD_OVER_PEER] = round(rps["scoped_distinct"] / rps["peer_scoped_distinct"], 3)
    figures[DECISION_OVER_PEER] = round(rps["decision_repeat"] / rps["peer_scoped_repeat"], 3)
    return figures


def cpu_ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The peer's CPU per request over ours, and public's over each scenario's: the req/s ratios
    a quiet machine would show, steadier than req/s when other processes take the cores (the
    load generator's share drops out)."""
    cpu = {row["scenario"]: row["server_cpu_ms"] for row in rows}
    figures = {
        f"{name}_cpu_peer_over_ours": round(cpu[f"peer_{name}"] / cpu[ours], 3)
        for ours, name in OURS_FOR_PEER.items()
    }
    for key in RATIOS:  # issue 21 item 4 quotes dpop_distinct and dpop_reused_token this way
        name = key.removesuffix("_over_public")
        figures[f"{name}_cpu_public_over_scenario"] = round(cpu["public"] / cpu[name], 3)
    return figures


def report_scale(figures: dict[str, Any]) -> str:
    """The 1,000 and 10,000 measurements, as sentences."""
    lines = []
    if "refresh" in figures:
        refresh = figures["refresh"]
        lines.append(
            f"key set refresh: {refresh['key_sets']} distinct JWKS URLs in "
            f"{refresh['seconds']:.2f} s (refresh_all_key_sets fan-out, one Celery worker of "
            "2 processes; target <= 20 s)"
        )
    memory, check = figures["memory"], figures["warm_check"]
    rss = {stage: " and ".join(map(str, mib)) for stage, mib in memory["worker_rss_mib"].items()}
    lines += [
        f"web worker RSS with {memory['tenants']} tenants served: {rss['warm']} MiB warm "
        f"(target <= 200 MiB; peak {rss['peak']} MiB; {rss['idle']} MiB before any request); "
        f"warmed with {memory['warm_requests']} requests; "
        f"{' and '.join(map(str, memory['held']))} tenants held",
        f"warm requests at {memory['tenants']} tenants (a fresh token per tenant): "
        f"{check['rps']:.1f} req/s, p50 {check['p50_ms']:.2f} ms, "
        f"p99 {check['p99_ms']:.2f} ms, errors {check['errors']}, "
        f"SQL {check['sql_queries']} (background: {check['sync_sql_queries']}), "
        f"fetches {check['http_fetches']}, "
        f"Redis commands per request {check['redis_per_request']}",
    ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    """Command line: mode, tenants, seconds per scenario, and which scale measurements run."""
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=[*MODES, "both"], default="redis")
    parser.add_argument("--tenants", type=int, default=100, help="tenants served (default 100)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--skip-scale", action="store_true", help="no scale measurement at all")
    scale.add_argument(
        "--scale-control-plane",
        action="store_true",
        help="of the scale measurements, only the control plane's",
    )
    parser.add_argument(
        "--control-tenants", type=int, default=100_000, help="tenants in the control-plane run"
    )
    parser.add_argument(
        "--import-tenants",
        type=int,
        default=control.IMPORT_SAMPLE,
        help="tenants imported through the command for the import time (the rest are "
        "created directly; the time for all of them is extrapolated from the rate)",
    )
    args = parser.parse_args()
    if args.tenants < 1 or args.duration < 1:
        parser.error("--tenants and --duration must be at least 1")
    if args.control_tenants < MEMORY_TENANTS + args.tenants:
        parser.error(f"--control-tenants must be at least {MEMORY_TENANTS + args.tenants}")
    return args


def stop_on_signal(signum: int, frame: object) -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every started process is stopped."""
    raise SystemExit(128 + signum)


def request_path(plat: Platform, tokens: Tokens, args: argparse.Namespace) -> dict[str, Any]:
    """The scenarios with ``--tenants`` tenants, and the peer's; prints their table."""
    add_tenants(plat, args.tenants)
    say(f"starting gunicorn, 2 sync workers ({plat.mode} mode), and the peer's")
    base, web = start_web(plat)
    peer_base, peer = start_peer(
        plat.stack, f"{plat.issuer_url}/{issuer_name(0)}/", f"https://api.{slug(0)}.test"
    )
    ours = Server(base, worker_pids(web.pid), Counters(plat, worker_pids(web.pid)))
    peers = Server(peer_base, worker_pids(peer.pid), Counters(plat, worker_pids(peer.pid)))
    rows = timed_scenarios(plat, ours, peers, tokens, args.duration)
    figures: dict[str, Any] = {"worker_rss_mib": [rss_mib(pid) for pid in worker_pids(web.pid)]}
    figures["peer_worker_rss_mib"] = [rss_mib(pid) for pid in peers.pids]
    plat.stack.stop(peer)
    plat.stack.stop(web)
    figures["scenarios"] = {row.pop("scenario"): row for row in map(dict, rows)}
    figures.update(ratios(rows))
    figures.update(cpu_ratios(rows))
    print(table(rows))
    mine = {key: value for key, value in ratios(rows).items() if key not in PEER_RATIOS}
    print(", ".join(f"{key} = {value:.3f}" for key, value in mine.items()))
    print(
        "ours / peer (the quickstart done right; targets: public >= 0.95, scoped_repeat >= 1.10, "
        "scoped_distinct >= 1.00): "
        + ", ".join(f"{key} = {figures[key]:.3f}" for key in PEER_RATIOS)
    )
    print(", ".join(f"{key} = {value:.3f}" for key, value in cpu_ratios(rows).items()))
    rss = " and ".join(map(str, figures["worker_rss_mib"]))
    print(f"web worker RSS with {args.tenants} tenants warm: {rss} MiB", flush=True)
    return figures


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Everything measured in one deployment mode, with its own services."""
    figures: dict[str, Any] = {"mode": mode}
    with Stack() as stack:
        say(f"{mode} mode: starting the database, the store, the issuer (and a worker)")
        plat = start_platform(stack, mode)
        tokens = Tokens(stack.workdir / "keys", plat.issuer_url)
        figures.update(request_path(plat, tokens, args))
        if args.skip_scale:
            return figures
        old_scale = mode == "redis" and not args.scale_control_plane
        imported = control.time_import(plat, args) if mode == "redis" else {}
        if old_scale:
            repeat_rps = figures["scenarios"]["scoped_repeat"]["rps"]
            figures["scale"] = memory_scale(plat, tokens, args.duration, repeat_rps)
        figures["control_plane"] = {**imported, **control.run(plat, tokens, args)}
        if old_scale:
            figures["scale"]["refresh"] = refresh_scale(plat)
            print(report_scale(figures["scale"]))
        print(control.report(figures["control_plane"]), flush=True)
    return figures


def main() -> None:
    """Set up, measure, report, tear down; one deployment mode after the other."""
    args = parse_args()
    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGHUP, stop_on_signal)
    say(f"measuring on {machine()}")
    summary: dict[str, Any] = {"machine": machine(), "tenants": args.tenants}
    summary["duration_s"] = args.duration
    modes = MODES if args.mode == "both" else (args.mode,)
    results = [run_mode(mode, args) for mode in modes]
    summary.update(results[0])
    if len(results) > 1:
        summary["embedded"] = results[1]
        for result in results:
            keys = (*RATIOS, LIMITER_RATIO, *PEER_RATIOS)
            ratio = ", ".join(f"{key} = {result[key]:.3f}" for key in keys)
            print(f"{result['mode']} mode: {ratio}")
    summary["run_seconds"] = round(time.monotonic() - STARTED, 1)
    say("done; everything started was stopped")
    print("BENCH " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
