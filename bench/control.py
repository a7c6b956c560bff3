"""The control plane at 100,000 tenants: import, memory, applying and propagating changes.

What the lazy tenant directory and the change feed (docs/architecture.md) cost at scale:

- the import time of ``manage.py tenants import`` (measured on a sample, extrapolated to all);
- the resident memory of each gunicorn worker after requests to many distinct tenants;
- the CPU one process spends applying one tenant change (``bench/control_helper.py``);
- how long a change saved by another process takes to reach every web worker;
- the warm-request p99 while another process saves 10 changes per second;
- the issuer fetches of one ``refresh_all_key_sets`` over 10 issuers.

The tenants beyond the imported sample are created with ``bulk_create`` (``control_helper
seed``): the same rows the import writes, in seconds instead of many minutes.
"""

import json
import os
import random
import subprocess
import threading
import time
from argparse import Namespace
from statistics import median
from typing import Any

from bench import load
from bench.counters import Counters
from bench.fixtures import Tokens, public_path, say, scoped_path, slug, tenant_document
from bench.stack import (
    HELD_PATH,
    PROBE_APP,
    PYTHON,
    ROOT,
    Platform,
    cpu_seconds,
    helper,
    http_get,
    import_tenants,
    rss_mib,
    start_web,
    wait_until,
    worker_pids,
)

IMPORT_SAMPLE = 10_000
IMPORT_TARGET_SECONDS = 300
DISTINCT = 40_000  # tenants requested once each: about 20,000 per worker, the directory's bound
WITH_TOKEN = 10_000  # of them with a fresh token: fills both workers' verified-token caches
HOLD = 10_000  # tenants the apply-cost process holds
APPLY_CHANGES = 200
PROPAGATION_CHANGES = 20
CHURN_RATE = 10  # changes per second during the p99 run
CHURN_TENANTS = 200


def time_import(plat: Platform, args: Namespace) -> dict[str, Any]:
    """Import a sample of the control-plane tenants through the command; its rate, extrapolated."""
    count = min(args.import_tenants, args.control_tenants - plat.tenants)
    first = plat.tenants
    documents = [tenant_document(i, plat.issuer_url) for i in range(first, first + count)]
    say(f"control plane: importing {count} tenants through manage.py tenants import")
    seconds = import_tenants(plat.env, plat.stack.workdir, documents)
    plat.tenants += count
    rate = count / seconds
    say(f"imported {count} tenants in {seconds:.1f} s ({rate:.0f} per second)")
    return {
        "import_tenants": count,
        "import_measured_seconds": round(seconds, 1),
        "import_rate_per_s": round(rate, 1),
        "import_seconds": round(args.control_tenants / rate, 1),
        "import_extrapolated": first + count < args.control_tenants,
    }


def fill(plat: Platform, total: int) -> None:
    """Create tenants up to ``total`` directly (``bulk_create``), on the same 10 issuers."""
    if plat.tenants >= total:
        return
    say(f"creating tenants {plat.tenants} to {total - 1} with bulk_create")
    path = plat.stack.workdir / "seed.json"
    documents = [tenant_document(i, plat.issuer_url) for i in range(plat.tenants, total)]
    path.write_text(json.dumps({"tenants": documents}))
    helper(plat, "seed", str(path))
    path.unlink()
    plat.tenants = total


def jwks_fetches(plat: Platform) -> dict[str, int]:
    """The development issuer's discovery and JWKS requests so far."""
    stats = json.loads(http_get(f"{plat.issuer_url}/_stats")[2])
    return {
        "jwks": sum(n for key, n in stats.items() if key.endswith("/.well-known/jwks.json")),
        "discovery": sum(n for key, n in stats.items() if "/openid-configuration" in key),
    }


def settled_fetches(plat: Platform, quiet: float = 3) -> dict[str, int]:
    """The issuer's counts once they have not moved for ``quiet`` seconds."""
    last, since = jwks_fetches(plat), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.5)
        now = jwks_fetches(plat)
        if now != last:
            last, since = now, time.monotonic()
    return last


def fetches_per_refresh(plat: Platform) -> dict[str, Any]:
    """Issuer fetches of one refresh_all_key_sets fan-out over every active tenant."""
    say(f"queuing refresh_all_key_sets once over {plat.tenants} tenants")
    before = settled_fetches(plat)
    helper(plat, "refresh-all")
    after = settled_fetches(plat)
    return {
        "jwks_fetches_per_refresh": after["jwks"] - before["jwks"],
        "discovery_fetches_per_refresh": after["discovery"] - before["discovery"],
    }


def spread(total: int, count: int) -> list[int]:
    """``count`` tenant numbers spread evenly over ``total``."""
    return [k * total // count for k in range(count)]


def memory(plat: Platform, tokens: Tokens, base: str, pids: list[int]) -> dict[str, Any]:
    """Each worker's RSS after one request to each of DISTINCT tenants."""
    indexes = spread(plat.tenants, min(DISTINCT, plat.tenants))
    every = max(len(indexes) // WITH_TOKEN, 1)
    say(f"signing {len(indexes) // every} tokens; one request to each of {len(indexes)} tenants")
    lines = [
        (scoped_path(i), tokens.bearer(i)) if k % every == 0 else (public_path(i), "")
        for k, i in enumerate(indexes)
    ]
    idle = [rss_mib(pid) for pid in pids]
    sent = load.drive_once(base, lines, 200, plat.stack.workdir)
    if sent.errors or sent.requests != len(lines):
        raise RuntimeError(f"{sent.errors} errors in {sent.requests} of {len(lines)} requests")
    held = per_worker(base + HELD_PATH, pids)
    return {
        "rss_mib_per_worker": [rss_mib(pid) for pid in pids],
        "rss_held_tenants": [held[pid]["held"] for pid in pids],
        "rss_peak_mib": [rss_mib(pid, "VmHWM") for pid in pids],
        "rss_idle_mib": idle,
        "rss_distinct_tenants": len(lines),
        "rss_with_token": len(lines[::every]),
    }


def per_worker(url: str, pids: list[int]) -> dict[int, Any]:
    """The JSON each gunicorn worker answers at ``url``, by pid."""
    answers: dict[int, Any] = {}

    def everyone() -> bool:
        _, headers, body = http_get(url)
        answers[int(headers["X-Bench-Worker"])] = json.loads(body)
        return set(answers) >= set(pids)

    wait_until(everyone, f"every worker answering {url}")
    return answers


class Changer:
    """``control_helper changes``: another process that saves tenant changes on command."""

    def __init__(self, plat: Platform) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - this interpreter, our helper
            [PYTHON, "-m", "bench.control_helper", "changes"],
            cwd=ROOT,
            env=plat.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.backend: int | None = self.reply()["backend"]  # its PostgreSQL backend, if any

    def __enter__(self) -> "Changer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def send(self, *words: str) -> None:
        """Send one command; its answer is read with ``reply()``."""
        self.process.stdin.write(" ".join(words) + "\n")
        self.process.stdin.flush()

    def reply(self) -> dict[str, Any]:
        """The answer to the last command."""
        for line in self.process.stdout:
            if line.startswith("RESULT "):
                return json.loads(line.removeprefix("RESULT "))
        raise RuntimeError(f"control_helper changes exited with {self.process.wait()}")


class Poller:
    """Threads requesting one path without pause, noting which worker answered what, and when."""

    def __init__(self, url: str, threads: int = 2) -> None:
        self.url = url
        self.answers: list[tuple[int, int, float, float]] = []  # pid, status, sent, received
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll) for _ in range(threads)]

    def __enter__(self) -> "Poller":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _poll(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                status, headers, _ = http_get(self.url)
            except OSError:
                continue
            self.answers.append((int(headers["X-Bench-Worker"]), status, sent, time.monotonic()))

    def switched(self, start: int, old: int, since: float) -> dict[int, tuple[int, float]]:
        """Per worker, its first answer other than ``old`` to a request sent after ``since``."""
        first: dict[int, tuple[int, float]] = {}
        for pid, status, sent, received in self.answers[start:]:
            if status != old and sent >= since and pid not in first:
                first[pid] = (status, received)
        return first


def propagation(base: str, pids: list[int], changer: Changer, index: int) -> dict[str, Any]:
    """Seconds from a change's commit in another process until every worker answers anew."""
    say(f"propagation: {PROPAGATION_CHANGES} (de)activations of {slug(index)}, both workers")
    seconds, statuses = [], {200}
    with Poller(base + public_path(index)) as poller:
        wait_until(lambda: set(poller.switched(0, 0, 0)) >= set(pids), "both workers answering")
        old = 200
        for number in range(PROPAGATION_CHANGES):
            time.sleep(random.uniform(0.2, 1.0))  # noqa: S311 - decorrelated from the 2 s polls
            start = len(poller.answers)
            changer.send("toggle", slug(index))
            committed = changer.reply()["committed"]

            def everywhere(start: int = start, old: int = old, since: float = committed) -> dict:
                first = poller.switched(start, old, since)
                return first if set(first) >= set(pids) else {}

            first = wait_until(everywhere, f"change {number} answered by every worker", 30)
            new = {status for status, _ in first.values()}
            if len(new) != 1:
                raise RuntimeError(f"workers answered {new} after change {number}")
            old = new.pop()
            statuses.add(old)
            seconds.append(max(received for _, received in first.values()) - committed)
    return {
        "propagation_seconds": {
            "p50": round(median(seconds), 3),
            "max": round(max(seconds), 3),
            "changes": len(seconds),
        },
        "propagation_statuses": sorted(statuses),
    }


# Quiet and saving phases alternate, so a drift in the machine's speed (it is shared) falls on
# both alike; the figures are the medians of each kind. Then a control: the same change rows at
# the same rate, inserted without saving any tenant, so the workers apply as many changes while
# the saver and the database do next to nothing.
ROUNDS = 3
PHASES = (  # name, changer command
    *(
        (f"{kind}_{round_}", command)
        for round_ in range(1, ROUNDS + 1)
        for kind, command in (("quiet", None), ("during_changes", "churn"))
    ),
    ("during_feed_only", "feed"),
)


def p99_during_changes(
    plat: Platform,
    base: str,
    pids: list[int],
    changer: Changer,
    tokens: Tokens,
    seconds: int,
    churned: list[int],
) -> dict[str, Any]:
    """Warm scoped requests (one repeated token): quiet and during saves in turn, feed rows."""
    lines = [(scoped_path(0), tokens.bearer(0))]
    workdir = plat.stack.workdir
    load.drive(base, lines, 200, 2, workdir)
    say(
        f"p99 of warm requests: {ROUNDS} rounds of {seconds} s quiet and {seconds} s of "
        f"{CHURN_RATE} saves/s, then feed rows alone"
    )
    counters = Counters(plat, pids, others={changer.backend})  # the saves are not the workers'
    counters.log_statements(True)
    phases = {}
    for name, command in PHASES:
        before, changer_cpu = counters.start(), cpu_seconds([changer.process.pid])
        fetched = settled_fetches(plat, quiet=1)["jwks"]
        if command:
            changer.send(command, str(CHURN_RATE), str(seconds + 1), *map(slug, churned))
        run = load.drive(base, lines, 200, seconds, workdir)
        phase = {"p99_ms": round(run.p99_ms, 2), "rps": round(run.rps, 1), "errors": run.errors}
        phase.update(counters.since(before, run.requests))
        if command:
            churn = changer.reply()
            phase["changes_per_s"] = round(churn["changes"] / churn["seconds"], 1)
            share = (cpu_seconds([changer.process.pid]) - changer_cpu) / churn["seconds"]
            phase["changer_cpu_pct"] = round(share * 100 / os.cpu_count(), 1)
        phase["jwks_fetches"] = settled_fetches(plat, quiet=1)["jwks"] - fetched
        phases[name] = phase
    counters.log_statements(False)
    quiet = median(phases[f"quiet_{n}"]["p99_ms"] for n in range(1, ROUNDS + 1))
    during = [phases[f"during_changes_{n}"] for n in range(1, ROUNDS + 1)]
    busy = median(phase["p99_ms"] for phase in during)
    feed_only = phases["during_feed_only"]["p99_ms"]
    return {
        "p99_quiet_ms": round(quiet, 2),
        "p99_during_changes_ms": round(busy, 2),
        "p99_during_feed_only_ms": feed_only,
        "p99_ratio": round(busy / quiet, 2),
        "p99_feed_only_ratio": round(feed_only / quiet, 2),
        "changes_per_s": round(median(phase["changes_per_s"] for phase in during), 1),
        "p99_phases": phases,
    }


def apply_cost(plat: Platform) -> dict[str, Any]:
    """CPU per change applied in one process holding HOLD of the tenants (control_helper)."""
    say(f"change apply cost: one process holding {HOLD} tenants, {APPLY_CHANGES} changes")
    path = plat.stack.workdir / "held.txt"
    path.write_text("\n".join(slug(i) for i in spread(plat.tenants, HOLD)))
    return helper(plat, "apply-cost", str(path), "--changes", str(APPLY_CHANGES))


def run(plat: Platform, tokens: Tokens, args: Namespace) -> dict[str, Any]:
    """Every control-plane figure but the import time, with ``--control-tenants`` tenants."""
    fill(plat, args.control_tenants)
    figures: dict[str, Any] = {"tenants": plat.tenants, "mode": plat.mode}
    figures.update(fetches_per_refresh(plat))
    base, web = start_web(plat, PROBE_APP)
    pids = worker_pids(web.pid)
    figures.update(memory(plat, tokens, base, pids))
    with Changer(plat) as changer:
        figures.update(propagation(base, pids, changer, plat.tenants - 1))
        churned = spread(plat.tenants, CHURN_TENANTS)[1:]  # held by the workers; not tenant 0
        figures.update(
            p99_during_changes(plat, base, pids, changer, tokens, args.duration, churned)
        )
    plat.stack.stop(web)
    figures.update(apply_cost(plat))
    return figures


PHASE_COLUMNS = (  # title, key, format
    ("phase", "phase", "<17"),
    ("req/s", "rps", ">7.0f"),
    ("p99 ms", "p99_ms", ">6.2f"),
    ("errors", "errors", ">6"),
    ("SQL", "sql_queries", ">3"),
    ("sync SQL", "sync_sql_queries", ">8"),
    ("JWKS fetches", "jwks_fetches", ">12"),
    ("CPU ms/req", "server_cpu_ms", ">10.2f"),
    ("others %", "others_cpu_pct", ">8.0f"),
    ("saver %", "changer_cpu_pct", ">7.0f"),
)


def phase_table(phases: dict[str, dict[str, Any]]) -> str:
    """The p99 phases as a fixed-width table."""
    lines = ["  ".join(f"{title:{spec.split('.')[0]}}" for title, _, spec in PHASE_COLUMNS)]
    for name, phase in phases.items():
        row = {"phase": name, **phase}
        cells = [
            format("-", spec.split(".")[0]) if row.get(key) is None else format(row[key], spec)
            for _, key, spec in PHASE_COLUMNS
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def report(figures: dict[str, Any]) -> str:
    """The control-plane figures, as sentences with their targets."""
    lines = [f"control plane, {figures['tenants']} tenants on 10 issuers ({figures['mode']} mode):"]
    if "import_seconds" in figures:
        how = "extrapolated from" if figures["import_extrapolated"] else "measured:"
        lines.append(
            f"  import: {figures['import_seconds']:.0f} s for {figures['tenants']} tenants "
            f"(target <= {IMPORT_TARGET_SECONDS} s), {how} {figures['import_tenants']} in "
            f"{figures['import_measured_seconds']:.1f} s, {figures['import_rate_per_s']:.0f}/s"
        )
    rss = " and ".join(map(str, figures["rss_mib_per_worker"]))
    peak = " and ".join(map(str, figures["rss_peak_mib"]))
    propagated = figures["propagation_seconds"]
    held = " and ".join(map(str, figures["rss_held_tenants"]))
    lines += [
        f"  web worker RSS: {rss} MiB (target <= 200 MiB; peak {peak}) after one request to each "
        f"of {figures['rss_distinct_tenants']} tenants ({figures['rss_with_token']} with a token); "
        f"{held} held",
        f"  applying one change: {figures['change_apply_cpu_us']:.0f} µs CPU (sync + reload; an "
        f"idle sync {figures['idle_sync_cpu_us']:.0f} µs), holding {figures['held']} tenants",
        f"  propagation to both workers: p50 {propagated['p50']:.2f} s, max "
        f"{propagated['max']:.2f} s over {propagated['changes']} changes (target <= ~2 s)",
        f"  warm p99, medians of {ROUNDS} alternating rounds: {figures['p99_quiet_ms']:.2f} ms "
        f"quiet, {figures['p99_during_changes_ms']:.2f} ms while another process saved "
        f"{figures['changes_per_s']} changes/s (x{figures['p99_ratio']}); "
        f"{figures['p99_during_feed_only_ms']:.2f} ms while the workers applied as many changes "
        f"that no process saved (x{figures['p99_feed_only_ratio']}):",
        *(f"    {line}" for line in phase_table(figures["p99_phases"]).splitlines()),
        f"  refresh_all_key_sets: {figures['jwks_fetches_per_refresh']} JWKS fetches, "
        f"{figures['discovery_fetches_per_refresh']} discovery (target: 10, one per issuer)",
    ]
    return "\n".join(lines)
