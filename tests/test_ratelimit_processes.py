"""Rate limits across real processes, in both modes: ten limiters at once, and gunicorn -w 2.

"embedded": SQLite and the database as the counters' store. "redis": Redis (the counters) and
the test PostgreSQL database. docs/operating.md promises that no limit is exceeded with up to ten
processes: ten OS processes, each with its own ``Limiter``, hammer one limit at the same time.
"""

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import Stack, inherited_env, mode_env, platform, summary
from tests.test_e2e import ROOT

PROCESSES = 10
REDIS_DATABASE = 13  # apart from the one clean_state flushes and from other modules'
RATE = 100  # per second: several windows in a few seconds
HAMMER_SECONDS = 3.5  # at least two whole windows with all ten counting
RUN = uuid.uuid4().hex[:6]  # the Redis database outlives a run
SETTINGS = {
    "ENV_FILE": "",
    "SECRET_KEY": "rate-limit-tests-only-" + "k" * 32,
    "DEBUG": "false",
    "ALLOWED_HOSTS": "127.0.0.1,.localhost",
    "AUTHZ_ALLOW_INSECURE_ISSUERS": "true",
    "AUTHZ_INSECURE_ISSUERS_ACKNOWLEDGED": "true",
    "AUTHZ_RATE_LIMIT_ANONYMOUS_PER_ADDRESS": "5/min",
    "TRUSTED_PROXY_COUNT": "1",  # the tests name the client's address in X-Forwarded-For
}

# One process: connect, say it is ready, wait for the start, then count for a while. Each
# admitted request is put in the window of its clock before and after the call; one whose call
# spans a window boundary is left out (at most one per process and boundary).
HAMMER = """
import json, os, sys, time
from collections import Counter
import django

django.setup()
from tenants.ratelimit import Limit, Rate, limiter

key, ready, go = sys.argv[1:4]
seconds, rate = float(sys.argv[4]), int(sys.argv[5])
limit = Limit("subject", key, Rate(rate, 1))
limiter.count([Limit("subject", key + "-warm-up", Rate(rate, 1))])
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
admitted, refused, spanning = Counter(), Counter(), 0
started = time.time()
while time.time() < started + seconds:
    before = time.time()
    verdicts = limiter.count([limit])
    after = time.time()
    allowed = verdicts is None or verdicts[0].allowed  # no verdict: the API serves it
    if int(before) != int(after):
        spanning += allowed
    else:
        (admitted if allowed else refused)[int(before)] += 1
print(json.dumps({"started": started, "ended": time.time(), "admitted": admitted,
                  "refused": refused, "spanning": spanning}))
"""

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def env(
    mode: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The environment of one mode's processes, its database migrated."""
    home = tmp_path_factory.mktemp(f"ratelimit-{mode}")
    env = {**inherited_env(), **SETTINGS, "DEVISSUER_KEY_DIR": str(home / "keys")}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    return {**env, **mode_env(mode, request, home, REDIS_DATABASE)}


@pytest.fixture(scope="module")
def stack(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The development issuer and gunicorn -w 2 of one mode."""
    with platform(env, tmp_path_factory.mktemp("ratelimit-stack")) as running:
        yield running


def hammer(env: dict[str, str], home: Path, key: str) -> list[dict]:
    """What each of PROCESSES processes, started together, admitted and refused per window."""
    go = home / "go"
    command = [sys.executable, "-c", HAMMER, key, "", str(go), str(HAMMER_SECONDS), str(RATE)]
    processes = []
    for n in range(PROCESSES):
        command[4] = str(home / f"ready-{n}")
        out = (home / f"hammer-{n}.log").open("w")
        processes.append(
            subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=out)
        )
    deadline = time.monotonic() + 90
    while not all((home / f"ready-{n}").exists() for n in range(PROCESSES)):
        failed = [p.args for p in processes if p.poll() is not None]
        assert not failed and time.monotonic() < deadline, (home / "hammer-0.log").read_text()
        time.sleep(0.05)
    go.touch()  # the barrier: every process is connected and waiting
    reports = []
    for n, process in enumerate(processes):
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0, (home / f"hammer-{n}.log").read_text()
        reports.append(json.loads(out))
    return reports


def per_window(reports: list[dict], field: str) -> dict[int, int]:
    """The processes' counts of one field, summed per window."""
    total: Counter[int] = Counter()
    for report in reports:
        total.update({int(window): n for window, n in report[field].items()})
    return dict(sorted(total.items()))


def test_ten_processes_admit_no_more_than_the_limit_in_any_window(
    env: dict[str, str], tmp_path: Path
) -> None:
    reports = hammer(env, tmp_path, f"ten-{RUN}-{uuid.uuid4().hex}")

    admitted, refused = per_window(reports, "admitted"), per_window(reports, "refused")
    all_in, first_out = max(r["started"] for r in reports), min(r["ended"] for r in reports)
    shared = [w for w in admitted if all_in <= w and w + 1 <= first_out]  # all ten throughout
    assert shared, f"the processes never ran a whole window together: {reports}"
    assert sum(r["spanning"] for r in reports) <= PROCESSES * (len(admitted) + 1)
    assert all(refused.get(window, 0) > 0 for window in shared), (admitted, refused)  # hit
    assert max(admitted.values()) <= RATE, f"admitted per window: {admitted}"
    assert min(admitted[window] for window in shared) >= RATE // 2, admitted


def test_an_anonymous_flood_from_one_address_locks_no_other_client_out(stack: Stack) -> None:
    slug = f"lockout-{RUN}"
    stack.import_tenants(stack.tenant(slug, rate_limit_per_tenant="30/min"))
    path = f"/t/{slug}/api/private"
    legitimate = stack.token(slug, f"https://api.{slug}.test")
    client = {"X-Forwarded-For": "198.51.100.2"}
    assert stack.web.get(path, token=legitimate).status == 200  # its key set is fetched
    attacker = {"X-Forwarded-For": "203.0.113.7"}

    malformed = stack.web.ask(path, n=25, headers={**attacker, "Authorization": "Bearer"})
    html = stack.web.ask(path, n=30, headers={**attacker, "Accept": "text/html"})
    served = stack.web.ask(path, n=4, token=legitimate, headers=client)

    flood = malformed + html
    assert sum(a.status in (400, 406) for a in flood) == 5, summary(flood)  # then its address
    assert sum(a.status == 429 for a in flood) == 50, summary(flood)
    assert all(a.status == 200 for a in served), summary(served)
