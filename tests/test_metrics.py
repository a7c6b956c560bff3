"""GET /metrics: guarded, never on a tenant's address, every family counted, labels bounded.

Most tests read this process's own figures through the endpoint (no multiprocess directory);
the last section runs gunicorn -w 2 as docs/deployment.md says, with the platform config and
--preload, in both modes; tests/test_stack.py shows the Celery worker's refreshes reaching the
web role, and the cardinality test runs two processes.
"""

import hashlib
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from django.db import connection
from django.test.utils import CaptureQueriesContext
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from authz.metrics import LabelSlots
from authz.tasks import refresh_key_set
from devissuer import dpop
from tenants.directory import directory
from tests.processes import PROBE, WORKERS, Web, gunicorn, inherited_env, mode_env, running
from tests.test_e2e import free_port, manage

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "metrics-test-token-" + "m" * 20
MAX_SERIES = 10_000
STORE_BACKOFF = 5.0  # seconds (docs/operating.md)


@pytest.fixture
def metrics_on(settings):
    """Metrics served, for TOKEN."""
    settings.METRICS_TOKEN = TOKEN


def scrape(client, **headers) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics by (name, labels)."""
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    """One sample's value, 0 when it does not exist yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests_of(samples: dict, tenant: str, endpoint: str, status: int, code: str) -> float:
    """``authz_requests_total`` of one outcome."""
    labels = {"tenant": tenant, "endpoint": endpoint, "status": str(status), "code": code}
    return value(samples, "authz_requests_total", **labels)


# --- access -----------------------------------------------------------------------------------


def test_metrics_are_off_without_a_metrics_token(client, settings, db):
    settings.METRICS_TOKEN = ""

    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x"]
)
def test_metrics_refuse_anything_but_the_metrics_token(client, metrics_on, db, authorization):
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}

    response = client.get("/metrics", **headers)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"authz_" not in response.content


def test_metrics_answer_any_address_over_plain_http(client, metrics_on, settings, db):
    settings.SECURE_SSL_REDIRECT = True

    response = client.get(
        "/metrics", HTTP_HOST="10.0.0.7:8000", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"
    )

    assert response.status_code == 200
    assert b"# TYPE authz_keyset_age_seconds gauge" in response.content


def test_metrics_are_never_served_on_a_tenant_host_or_path(client, metrics_on, acme):
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}

    on_host = client.get("/metrics", HTTP_HOST="acme.localhost", **bearer)
    under_prefix = client.get("/t/acme/metrics", **bearer)
    under_api = client.get("/t/acme/api/metrics", **bearer)

    assert [on_host.status_code, under_prefix.status_code, under_api.status_code] == [404] * 3
    assert b"authz_" not in on_host.content + under_prefix.content + under_api.content


# --- the families -----------------------------------------------------------------------------


def test_each_request_is_counted_by_tenant_endpoint_status_and_code(
    client, metrics_on, acme, acme_tokens
):
    before = scrape(client)
    scoped = acme_tokens.token(scope="read:messages")
    assert (
        client.get("/t/acme/api/private-scoped", HTTP_AUTHORIZATION=f"Bearer {scoped}").status_code
        == 200
    )
    plain = f"Bearer {acme_tokens.token()}"
    assert client.get("/t/acme/api/private-scoped", HTTP_AUTHORIZATION=plain).status_code == 403
    assert client.get("/t/acme/api/private").status_code == 401
    assert client.get("/t/acme/api/public").status_code == 200
    assert client.get("/t/nobody/api/public").status_code == 404

    after = scrape(client)

    expected = [
        ("acme", "messages:private-scoped", 200, "ok"),
        ("acme", "messages:private-scoped", 403, "insufficient_scope"),
        ("acme", "messages:private", 401, "not_authenticated"),
        ("acme", "public", 200, "ok"),
        ("none", "public", 404, "tenant_not_found"),
    ]
    for outcome in expected:
        assert requests_of(after, *outcome) - requests_of(before, *outcome) == 1, outcome


def test_verification_is_timed_cached_and_fresh_apart_and_the_cache_counted(
    client, metrics_on, acme, acme_tokens
):
    before = scrape(client)
    token = f"Bearer {acme_tokens.token()}"
    bad = f"Bearer {acme_tokens.token()[:-4]}AAAA"
    for authorization in (token, token, token, bad, bad):
        client.get("/t/acme/api/private", HTTP_AUTHORIZATION=authorization)

    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("authz_verified_token_cache_total", result="miss") == 2
    assert delta("authz_verified_token_cache_total", result="hit") == 2
    assert delta("authz_verified_token_cache_total", result="refused_hit") == 1
    assert delta("authz_verification_seconds_count", path="fresh") == 2
    assert delta("authz_verification_seconds_count", path="cached") == 3
    assert delta("authz_verification_seconds_bucket", path="cached", le="+Inf") == 3


def test_a_replayed_dpop_proof_is_counted_for_its_tenant(client, metrics_on, acme, acme_tokens):
    key = dpop.new_key()
    bound = acme_tokens.token(cnf={"jkt": dpop.key_thumbprint(key)})
    proof = dpop.make_proof(key, "GET", "http://testserver/t/acme/api/private", access_token=bound)
    headers = {"HTTP_AUTHORIZATION": f"DPoP {bound}", "HTTP_DPOP": proof}
    before = value(scrape(client), "authz_dpop_replays_total", tenant="acme")

    assert client.get("/t/acme/api/private", **headers).status_code == 200
    assert client.get("/t/acme/api/private", **headers).status_code == 401

    assert value(scrape(client), "authz_dpop_replays_total", tenant="acme") - before == 1


def test_key_set_fetches_are_counted_by_trigger_with_cooldown_refusals(
    client, metrics_on, acme, acme_tokens
):
    url = acme.jwks_url
    before = scrape(client)

    def fetches(samples: dict, outcome: str, trigger: str) -> float:
        return value(
            samples, "authz_keyset_fetch_total", jwks_url=url, outcome=outcome, trigger=trigger
        )

    for _ in range(2):  # an unknown kid: one fetch, then the cooldown refuses the next
        unknown = acme_tokens.token(headers={"kid": uuid.uuid4().hex})
        client.get("/t/acme/api/private", HTTP_AUTHORIZATION=f"Bearer {unknown}")
    refresh_key_set.delay(url)  # the Celery task (eager here): counted in the shared store

    after = scrape(client)

    assert fetches(after, "ok", "on_demand") - fetches(before, "ok", "on_demand") == 1
    refused = fetches(after, "cooldown_refused", "on_demand")
    assert refused - fetches(before, "cooldown_refused", "on_demand") == 1
    assert fetches(after, "ok", "scheduled") - fetches(before, "ok", "scheduled") == 1


def test_key_set_age_is_the_time_since_its_last_good_fetch(client, metrics_on, acme, acme_tokens):
    client.get("/t/acme/api/private", HTTP_AUTHORIZATION=f"Bearer {acme_tokens.token()}")
    time.sleep(1.1)

    age = value(scrape(client), "authz_keyset_age_seconds", jwks_url=acme.jwks_url)

    assert 1.0 <= age < 30


def test_applied_tenant_changes_are_counted_with_their_propagation(
    client, metrics_on, make_tenant, settings
):
    directory.sync()  # this process's position in the feed, before the change
    before = scrape(client)
    make_tenant("metered")

    directory.sync()
    after = scrape(client)

    changes = "authz_config_changes_applied_total"
    assert value(after, changes) - value(before, changes) >= 1
    propagation = "authz_config_propagation_seconds_count"
    assert value(after, propagation) - value(before, propagation) >= 1


# --- bounded labels ---------------------------------------------------------------------------


def test_label_slots_name_at_most_their_size_and_agree_between_holders(settings, db):
    settings.AUTHZ = {**getattr(settings, "AUTHZ", {}), "METRICS_TENANT_LABELS": 10}
    first = LabelSlots("test-tenant", "METRICS_TENANT_LABELS")
    second = LabelSlots("test-tenant", "METRICS_TENANT_LABELS")  # another process's view

    named_first = {first.label(f"tenant-{i}") for i in range(500)}
    named_second = {second.label(f"tenant-{i}") for i in reversed(range(500))}

    assert named_first == named_second
    assert "other" in named_first and 1 < len(named_first) <= 11
    assert sorted(first.holders()) == sorted(named_first - {"other"})


def test_two_values_that_hash_to_one_slot_are_both_named(settings, db):
    settings.AUTHZ = {**getattr(settings, "AUTHZ", {}), "METRICS_KEY_SET_LABELS": 100}
    slots = LabelSlots("test-jwks-url", "METRICS_KEY_SET_LABELS")
    first, second = _two_urls_in_one_slot(100)

    named = {slots.label(first), slots.label(second)}

    assert named == {first, second}
    assert LabelSlots("test-jwks-url", "METRICS_KEY_SET_LABELS").label(second) == second


def _two_urls_in_one_slot(size: int) -> tuple[str, str]:
    seen: dict[int, str] = {}
    for port in itertools.count(1024):
        url = f"http://127.0.0.1:{port}/custom/.well-known/jwks.json"
        digest = hashlib.blake2b(url.encode(), digest_size=8).digest()
        slot = int.from_bytes(digest, "big") % size
        if slot in seen:
            return seen[slot], url
        seen[slot] = url
    raise AssertionError("unreachable")


class Blackhole:
    """A Redis address that takes connections and never answers them; counts the connections."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.listener.accept()[0])
            except OSError:  # closed
                return

    def attempts(self) -> int:
        """Connections made to it so far."""
        return len(self.held)

    def close(self) -> None:
        """Stop listening and drop every connection."""
        self.listener.close()
        for held in self.held:
            held.close()


@pytest.fixture(params=["redis", "database"])
def failing_store(request, settings) -> Iterator[Callable[[], int]]:
    """A shared store that fails every call: a blackholed Redis (each call waits for its socket
    timeout) or a database cache without its table; yields how many calls reached it."""
    if request.param == "redis":
        blackhole = Blackhole()
        settings.CACHES = {
            "default": {
                "BACKEND": "authz.store.SharedRedisCache",
                "LOCATION": f"redis://127.0.0.1:{blackhole.port}/0",
                "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
            }
        }
        yield blackhole.attempts
        blackhole.close()
        return
    request.getfixturevalue("transactional_db")
    settings.CACHES = {
        "default": {"BACKEND": "authz.store.SharedDatabaseCache", "LOCATION": "no_such_table"}
    }
    with CaptureQueriesContext(connection) as queries:
        yield lambda: sum("no_such_table" in query["sql"] for query in queries.captured_queries)


@pytest.mark.timeout(60)
def test_label_slots_back_off_for_5_seconds_after_a_store_failure(failing_store, settings):
    slots = LabelSlots("test-tenant", "METRICS_TENANT_LABELS")
    assert slots.label("tenant-0") == "other"
    one_lookup = failing_store()
    assert one_lookup >= 1

    started = time.monotonic()
    named = {slots.label(f"tenant-{i}") for i in range(1, 10)}
    nine_more = time.monotonic() - started

    assert named == {"other"}
    assert failing_store() == one_lookup, "every lookup asked the failing store"
    assert nine_more < 0.5
    time.sleep(STORE_BACKOFF - nine_more + 0.1)
    assert slots.label("tenant-10") == "other"
    assert failing_store() > one_lookup  # asked again once the back-off is over


RECORD_TENANTS = """
import sys
from ops.metrics import count_request
from authz.metrics import count_dpop_replay, count_key_set_fetch
tenants = int(sys.argv[1])
for index in range(tenants):
    slug = f"tenant-{index}"
    count_request(slug, "messages:private", 200, None)
    count_request(slug, "messages:private-scoped", 403, "insufficient_scope")
    count_request(slug, "messages:private", 401, "invalid_signature")
    count_dpop_replay(slug)
    count_key_set_fetch(f"https://{slug}.example.com/.well-known/jwks.json", "ok", "background")
"""


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(240)
def test_100000_tenants_in_two_processes_stay_under_10000_series(tmp_path):
    if not os.environ.get("REDIS_URL"):
        pytest.fail("REDIS_URL is not set: run the suite through platform/run-tests.")
    from django.db import connection

    db = connection.settings_dict
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_")},
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    script = "import django; django.setup()\n" + RECORD_TENANTS
    processes = [
        subprocess.Popen([sys.executable, "-c", script, "100000"], cwd=ROOT, env=env)
        for _ in range(2)
    ]
    assert [process.wait(timeout=200) for process in processes] == [0, 0]

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    samples = [sample for family in families for sample in family.samples]
    tenants = {s.labels["tenant"] for s in samples if "tenant" in s.labels}
    requests_total = sum(s.value for s in samples if s.name == "authz_requests_total")

    assert len(samples) < MAX_SERIES, json.dumps(len(samples))
    assert "other" in tenants and len(tenants) <= 101  # both processes named the same 100
    assert requests_total == 2 * 3 * 100_000  # nothing lost in "other"


def test_the_grafana_dashboard_queries_only_families_we_export(client, metrics_on, acme):
    import re

    from ops.metrics import scrape_registry

    dashboard = json.loads((ROOT / "platform" / "grafana-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bauthz_[a-z_]+", target["expr"])
    }
    exported = {family.name for family in scrape_registry().collect()}
    suffixes = ("_total", "_bucket", "_count", "_sum")

    assert queried and all(
        name in exported or any(name.removesuffix(s) in exported for s in suffixes)
        for name in queried
    ), sorted(queried)


# --- under gunicorn: every worker counted, whatever the command line ---------------------------

GUNICORN_LINES = {
    "readme": (),  # docs/deployment.md, "The processes": gunicorn config.wsgi, from the root
    "platform-config": ("-c", "platform/gunicorn.conf.py"),
    "preload": ("--preload",),
    "platform-config-preload": ("-c", "platform/gunicorn.conf.py", "--preload"),
}
SERVED = {
    "ENV_FILE": "",
    "SECRET_KEY": "metrics-tests-only-" + "k" * 32,
    "DEBUG": "false",
    "ALLOWED_HOSTS": "127.0.0.1",
    "METRICS_TOKEN": TOKEN,
    "AUTHZ_ALLOW_INSECURE_ISSUERS": "true",
    "AUTHZ_INSECURE_ISSUERS_ACKNOWLEDGED": "true",
    "AUTHZ_CONFIG_RECHECK_INTERVAL": "0.5",
}
ACCEPTED, REFUSED = 20, 10


@pytest.fixture(scope="module")
def served_env(mode: str, request, tmp_path_factory) -> dict[str, str]:
    """The environment of a web server of one mode (its database migrated)."""
    home = tmp_path_factory.mktemp(f"metrics-{mode}")
    return {**inherited_env(), **SERVED, **mode_env(mode, request, home, eager=False)}


def tenant_item(slug: str, active: bool = True) -> dict:
    """An import item of a tenant whose issuer is never asked (these requests carry no token)."""
    return {
        "slug": slug,
        "name": slug,
        "issuer": "http://127.0.0.1:9/nobody/",
        "audiences": [f"https://api.{slug}.test"],
        "active": active,
    }


def import_tenant(env: dict[str, str], slug: str = "", active: bool = True) -> str:
    """Import a tenant (a new one unless ``slug`` is given); its slug."""
    slug = slug or f"counted-{uuid.uuid4().hex[:8]}"
    document = json.dumps({"tenants": [tenant_item(slug, active)]})
    manage(env, "tenants", "import", "-", stdin=document)
    return slug


def send(web: Web, path: str, n: int, probe: str, headers: dict | None = None) -> list[int]:
    """``n`` requests, four at a time, each on a connection of its own; their statuses."""
    sent = {"Connection": "close", PROBE: probe, **(headers or {})}
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = pool.map(
            lambda _: requests.get(f"{web.url}{path}", headers=sent, timeout=30), range(n)
        )
        return [answer.status_code for answer in answers]


def served_by(web: Web, probe: str, path: str) -> Counter:
    """Requests answered per worker pid: from the access log, or from the JSON lines that
    platform/gunicorn.conf.py's logging writes instead."""
    pids: Counter = Counter()
    for line in web.access_log.read_text().splitlines():  # "<pid> probe status"
        fields = line.split(" ")
        if len(fields) == 3 and fields[1] == probe:
            pids[int(fields[0].strip("<>"))] += 1
    for line in web.log.read_text().splitlines():
        if '"gunicorn.access"' in line and json.loads(line).get("path") == path:
            pids[json.loads(line)["process"]] += 1
    return pids


def scrape_web(web: Web) -> dict[tuple[str, frozenset], float]:
    """Every sample of one /metrics answer of a running gunicorn."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Connection": "close", PROBE: "scrape"}
    response = requests.get(f"{web.url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def counted(web: Web, slug: str) -> tuple[float, float]:
    """One scrape's count of the tenant's accepted and refused requests."""
    samples = scrape_web(web)
    return (
        requests_of(samples, slug, "public", 200, "ok"),
        requests_of(samples, slug, "messages:private", 401, "not_authenticated"),
    )


def settled(check: Callable[[], bool], within: float = 5) -> bool:
    """Whether ``check`` passes within ``within`` seconds (access log lines follow answers)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.timeout(120)
@pytest.mark.parametrize("options", GUNICORN_LINES.values(), ids=GUNICORN_LINES)
def test_every_scrape_counts_every_worker_under_any_gunicorn_line(
    served_env: dict[str, str], options: tuple[str, ...], tmp_path: Path
) -> None:
    slug = import_tenant(served_env)
    with gunicorn(served_env, tmp_path, options=options) as web:
        until_every_worker_answers(web, "/healthz", "warm")  # the second may still be loading
        public, private = f"/t/{slug}/api/public", f"/t/{slug}/api/private"
        assert send(web, public, ACCEPTED, "accepted") == [200] * ACCEPTED
        assert send(web, private, REFUSED, "refused") == [401] * REFUSED
        assert settled(lambda: served_by(web, "accepted", public).total() == ACCEPTED)
        assert settled(lambda: served_by(web, "refused", private).total() == REFUSED)
        spread = served_by(web, "accepted", public) + served_by(web, "refused", private)
        assert len(spread) == WORKERS, f"one worker took every request: {spread}"

        scrapes: list[tuple[float, float]] = []
        while len(served_by(web, "scrape", "/metrics")) < WORKERS and len(scrapes) < 40:
            with ThreadPoolExecutor(max_workers=4) as pool:  # one at a time: one worker takes all
                scrapes += pool.map(lambda _: counted(web, slug), range(4))
        assert settled(lambda: len(served_by(web, "scrape", "/metrics")) == WORKERS, 1)

    assert scrapes == [(ACCEPTED, REFUSED)] * len(scrapes)


def until_every_worker_answers(web: Web, path: str, probe: str) -> None:
    """Send batches to ``path`` until every worker has answered one."""
    for _ in range(50):
        send(web, path, 4, probe)
        if settled(lambda: len(served_by(web, probe, path)) == WORKERS, 0.3):
            return
    pytest.fail(f"Not every worker answered: {served_by(web, probe, path)}")


def dead_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def threads_of(pid: int) -> int:
    """How many threads a process runs."""
    return len(os.listdir(f"/proc/{pid}/task"))


@pytest.mark.timeout(120)
def test_a_preloading_master_runs_no_thread_and_its_workers_follow_changes(
    served_env: dict[str, str], tmp_path: Path
) -> None:
    slug = import_tenant(served_env)
    with gunicorn(served_env, tmp_path, options=("--preload",)) as web:
        assert send(web, f"/t/{slug}/api/public", 8, "before") == [200] * 8
        master_threads = threads_of(web.master_pid)
        import_tenant(served_env, slug, active=False)
        gone = settled(lambda: set(send(web, f"/t/{slug}/api/public", 8, "after")) == {404}, 5)

    assert master_threads == 1  # a thread forked with its locks held would hang the workers
    assert gone, "the workers' background sync did not apply the change"


def unprepared_config(tmp_path: Path) -> Path:
    """A gunicorn config file that does not prepare the metrics directory."""
    config = tmp_path / "bare.conf.py"
    config.write_text("workers = 2\n")
    return config


@pytest.mark.timeout(120)
@pytest.mark.parametrize("preload", [(), ("--preload",)], ids=["workers", "preload"])
def test_a_gunicorn_without_its_metrics_directory_refuses_to_start(
    tmp_path: Path, preload: tuple[str, ...]
) -> None:
    env = {**inherited_env(), **SERVED, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    command = [sys.executable, "-m", "gunicorn", "config.wsgi", "-w", "2", *preload]
    command += ["-c", str(unprepared_config(tmp_path)), "-b", f"127.0.0.1:{free_port()}"]
    command += ["--no-control-socket"]
    log = tmp_path / "web.log"

    with running(command, env, log) as process:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"gunicorn served without its metrics directory:\n{log.read_text()[:2000]}")

    assert process.returncode != 0
    assert "ImproperlyConfigured" in log.read_text()
    assert "-c platform/gunicorn.conf.py" in log.read_text()


@pytest.mark.timeout(120)
def test_two_servers_on_one_host_count_their_own_and_dead_servers_dirs_are_removed(
    served_env: dict[str, str], tmp_path: Path
) -> None:
    slug = import_tenant(served_env)
    root = tmp_path / "metrics"
    dead = root / f"web-{socket.gethostname()}-{dead_pid()}"
    live = root / f"web-{socket.gethostname()}-{os.getpid()}"
    for server_dir in (dead, live):
        server_dir.mkdir(parents=True)
    env = {**served_env, "METRICS_DIR": str(root)}

    with gunicorn(env, tmp_path, "one") as one, gunicorn(env, tmp_path, "two") as two:
        send(one, f"/t/{slug}/api/public", 6, "one")
        send(two, f"/t/{slug}/api/public", 4, "two")
        counts = [counted(web, slug)[0] for web in (one, two) for _ in range(4)]
        servers = {one.master_pid, two.master_pid}

    assert counts == [6] * 4 + [4] * 4
    assert not dead.exists() and live.exists()
    assert {f"web-{socket.gethostname()}-{pid}" for pid in servers} <= {
        path.name for path in root.iterdir()
    }
