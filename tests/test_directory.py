"""The per-process tenant directory (tenants/directory.py) and the change feed that evicts it."""

import json
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.db.models import Max

from bench.stack import PROBE_APP
from tenants import directory as directory_module
from tenants.directory import (
    FEED_BATCH,
    MISS_RESYNC_EVERY,
    ChangeFeed,
    NameFilter,
    TenantDirectory,
    directory,
    jwks_urls,
)
from tenants.models import ScopeRule, Tenant, TenantAudience, TenantChange, TenantHost
from tests.processes import (
    ACCESS_FORMAT,
    NOT_FOUND,
    OK,
    WORKERS,
    Answer,
    Check,
    Stack,
    Web,
    answered,
    assert_every,
    gunicorn,
    inherited_env,
    mode_env,
    platform,
    realm_of,
    running,
    wait_until_up,
)
from tests.test_e2e import free_port

RECHECK = 0.2
UNREACHABLE_REDIS = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
    }
}


def add_host(tenant: Tenant) -> None:
    TenantHost.objects.create(tenant=tenant, hostname="new.acme.localhost")


def add_audience(tenant: Tenant) -> None:
    TenantAudience.objects.create(tenant=tenant, audience="https://v2.api.acme.test")


def add_rule(tenant: Tenant) -> None:
    ScopeRule.objects.create(tenant=tenant, endpoint="messages:private-scoped", scopes="admin")


def deactivate(tenant: Tenant) -> None:
    tenant.active = False
    tenant.save()


def rename(tenant: Tenant) -> None:
    tenant.name = "Acme Corporation"
    tenant.save()


def seen_host(lookup: TenantDirectory) -> bool:
    return lookup.by_host("new.acme.localhost") is not None


def seen_audience(lookup: TenantDirectory) -> bool:
    return "https://v2.api.acme.test" in lookup.by_slug("acme").policy.audiences


def seen_rule(lookup: TenantDirectory) -> bool:
    return lookup.by_slug("acme").required_scopes("messages:private-scoped") == ("admin",)


def seen_deactivation(lookup: TenantDirectory) -> bool:
    return lookup.by_slug("acme") is None and lookup.by_host("acme.localhost") is None


def seen_rename(lookup: TenantDirectory) -> bool:
    return lookup.by_slug("acme").name == "Acme Corporation"


CHANGES = pytest.mark.parametrize(
    ("change", "seen"),
    [
        (add_host, seen_host),
        (add_audience, seen_audience),
        (add_rule, seen_rule),
        (deactivate, seen_deactivation),
        (rename, seen_rename),
    ],
    ids=["new-host", "new-audience", "new-rule", "deactivation", "rename"],
)


@pytest.fixture
def fast_recheck(settings: Any) -> None:
    """Read the change feed every RECHECK seconds."""
    settings.AUTHZ = {**settings.AUTHZ, "CONFIG_RECHECK_INTERVAL": RECHECK}


@pytest.fixture
def no_miss_resync(monkeypatch: pytest.MonkeyPatch) -> None:
    """No feed read on a miss: the counts do not depend on how fast the test runs."""
    monkeypatch.setattr(directory_module, "MISS_RESYNC_EVERY", 3600.0)


def test_lookup_by_slug_and_host(acme):
    config = directory.by_slug("acme")

    assert (config.slug, config.hosts, config.policy.audiences) == (
        "acme",
        ("acme.localhost",),
        ("https://api.acme.test",),
    )
    assert directory.by_host("acme.localhost") is config


def test_host_lookup_ignores_case(acme):
    assert directory.by_host("ACME.Localhost").slug == "acme"


def test_unknown_slug_and_host_are_none(acme):
    assert (directory.by_slug("globex"), directory.by_host("globex.localhost")) == (None, None)


def test_jwks_urls_are_distinct_and_leave_out_inactive_tenants(make_tenant, issuer):
    make_tenant("globex")
    make_tenant("acme", issuer_name="globex")
    make_tenant("initech", active=False)

    assert jwks_urls() == {f"{issuer.url_for('globex')}.well-known/jwks.json"}
    assert len(jwks_urls(active_only=False)) == 2


def test_tenants_with_equal_settings_share_one_policy(make_tenant):
    make_tenant("acme", issuer_name="shared", audiences=["https://api.shared.test"])
    make_tenant("globex", issuer_name="shared", audiences=["https://api.shared.test"])

    assert directory.by_slug("acme").policy is directory.by_slug("globex").policy


def test_config_carries_the_tenant_settings(make_tenant):
    make_tenant("acme", algorithms=["ES256", "RS256"], leeway=5, scope_claims="both")

    config = directory.by_slug("acme")

    assert (config.policy.algorithms, config.policy.leeway, config.policy.scope_claims) == (
        ("ES256", "RS256"),
        5,
        "both",
    )


@CHANGES
def test_a_saved_change_is_visible_to_the_next_lookup_in_this_process(acme, change, seen):
    assert not seen(directory)

    change(acme)

    assert seen(directory)


def test_a_warm_lookup_makes_no_query(acme, django_assert_num_queries):
    directory.by_slug("acme")

    with django_assert_num_queries(0):
        directory.by_slug("acme")
        directory.by_host("acme.localhost")


def test_a_cold_tenant_is_one_query_and_an_unknown_one_none(
    make_tenant, no_miss_resync, django_assert_num_queries
):
    make_tenant("acme")
    make_tenant("globex")
    directory.by_slug("nobody")  # the first lookup also places this process in the feed

    with django_assert_num_queries(1):
        assert directory.by_slug("acme").slug == "acme"
    with django_assert_num_queries(1):
        assert directory.by_host("globex.localhost").slug == "globex"
    with django_assert_num_queries(0):
        assert directory.by_slug("nobody") is None


def test_made_up_names_cost_no_query(acme, no_miss_resync, django_assert_num_queries):
    directory.by_slug("acme")

    with django_assert_num_queries(0):
        for n in range(2000):
            assert directory.by_slug(f"made-up-{n}") is None
            assert directory.by_host(f"made-up-{n}.localhost") is None


def test_a_flood_of_misses_reads_the_feed_at_most_every_interval(
    acme, django_assert_max_num_queries
):
    directory.by_slug("acme")
    started = time.monotonic()

    with django_assert_max_num_queries(3 / MISS_RESYNC_EVERY + 2) as queries:
        while time.monotonic() - started < 3:
            assert directory.by_slug(f"made-up-{uuid.uuid4().hex}") is None

    assert all("tenants_tenantchange" in query["sql"] for query in queries.captured_queries)


def test_a_name_its_tenant_gave_up_costs_queries_once(
    acme, django_assert_num_queries, django_assert_max_num_queries, no_miss_resync
):
    directory.by_host("acme.localhost")
    TenantHost.objects.get(hostname="acme.localhost").delete()

    with django_assert_max_num_queries(2):  # the load that finds it gone, acme's names now
        assert directory.by_host("acme.localhost") is None
        assert directory.by_host("acme.localhost") is None
    with django_assert_num_queries(0):
        assert directory.by_host("acme.localhost") is None


def test_a_name_found_gone_while_a_change_lands_stays_in_the_filter(
    acme, monkeypatch, no_miss_resync
):
    directory.by_slug("nobody")  # the filter is built

    def gone_while_a_change_lands(kind: str, value: str) -> None:
        directory.evict({acme.pk})  # the change may bring the name back: keep it
        return None

    monkeypatch.setattr(directory_module, "load_tenant", gone_while_a_change_lands)
    assert directory.by_slug("acme") is None

    assert ("slug", "acme") in directory.names()


def test_the_name_filter_holds_names_in_8_bytes_each():
    names = NameFilter([("slug", f"t{n}") for n in range(10_000)] + [("host", "t1")])

    assert (len(names), names.nbytes()) == (10_001, 80_008)
    assert ("slug", "t9999") in names and ("host", "t1") in names
    assert ("host", "t2") not in names and ("slug", "t10000") not in names


def test_the_name_filter_adds_and_discards_across_a_merge(monkeypatch):
    monkeypatch.setattr(NameFilter, "OVERLAY", 4)
    names = NameFilter([("slug", "kept"), ("slug", "gone")])

    names.discard(("slug", "gone"))
    for n in range(5):  # the fourth change merges the overlay into the sorted array
        names.add(("host", f"h{n}"))

    assert ("slug", "kept") in names and ("slug", "gone") not in names
    assert all(("host", f"h{n}") in names for n in range(5))
    assert len(names) == 6


def test_the_directory_holds_at_most_its_size(settings, make_tenant, django_assert_num_queries):
    settings.AUTHZ = {**settings.AUTHZ, "DIRECTORY_SIZE": 2}
    for slug in ("acme", "globex", "initech"):
        make_tenant(slug)
    for slug in ("acme", "globex", "initech"):
        directory.by_slug(slug)

    assert directory.held() == 2
    with django_assert_num_queries(1):  # the least recently used went first
        assert directory.by_slug("acme").slug == "acme"


def test_when_the_cache_is_down_a_cold_directory_still_loads(settings, acme):
    settings.CACHES = UNREACHABLE_REDIS

    assert TenantDirectory().by_host("acme.localhost").slug == "acme"


def test_a_late_committed_change_is_still_applied(acme):
    feed = ChangeFeed()
    assert feed.read() is None  # the first read places the process at the end of the feed
    last = TenantChange.objects.aggregate(last=Max("id"))["last"] or 0

    TenantChange.objects.create(id=last + 2, tenant_id=acme.pk)
    assert feed.read() == {acme.pk}
    TenantChange.objects.create(id=last + 1, tenant_id=acme.pk + 1)  # allocated first, seen later

    assert feed.read() == {acme.pk + 1}
    assert feed.read() == set()


def test_a_change_committed_late_while_a_process_starts_is_still_applied(acme):
    last = TenantChange.objects.aggregate(last=Max("id"))["last"] or 0
    TenantChange.objects.create(id=last + 2, tenant_id=acme.pk)
    feed = ChangeFeed()
    assert feed.read() is None  # placed in the feed; the directory is built after this

    TenantChange.objects.create(id=last + 1, tenant_id=acme.pk + 1)  # allocated first, seen later

    assert feed.read() == {acme.pk + 1}
    assert feed.read() == set()


def test_a_tenant_committed_late_while_the_filter_is_built_is_found(make_tenant):
    last = TenantChange.objects.aggregate(last=Max("id"))["last"] or 0
    TenantChange.objects.create(id=last + 2, tenant_id=0)
    starting = TenantDirectory()  # this test's saves evict the process's own directory only
    assert starting.by_slug("late") is None  # the filter is built: "late" is not committed yet

    late = make_tenant("late")
    TenantChange.objects.filter(tenant_id=late.pk).update(id=last + 1)  # allocated before
    time.sleep(MISS_RESYNC_EVERY)

    assert starting.by_slug("late").slug == "late"


def test_a_burst_of_changes_forgets_every_tenant(acme):
    feed = ChangeFeed()
    feed.read()
    TenantChange.objects.bulk_create(TenantChange(tenant_id=acme.pk) for _ in range(FEED_BATCH))

    assert feed.read() is None
    assert feed.read() == set()


def test_a_load_that_races_a_change_is_not_kept(acme, monkeypatch):
    racing = TenantDirectory()
    real_load = directory_module.load_tenant

    def load_during_a_change(kind: str, value: str) -> Any:
        found = real_load(kind, value)
        racing.evict({acme.pk})  # the feed applied a change while the query ran
        return found

    monkeypatch.setattr(directory_module, "load_tenant", load_during_a_change)
    assert racing.by_slug("acme").slug == "acme"

    assert racing.held() == 0


# --- every change kind, and a flood of made-up names, against real gunicorn workers ------------
# "embedded": SQLite and the database cache; "redis": the test PostgreSQL database and Redis.
# Changes come from other processes (``manage.py tenants import`` and ``shell``).

WORKER_RECHECK = 0.5
PROPAGATION = WORKER_RECHECK + 2.5  # the recheck interval, a feed query, a round of requests
AT_ONCE = MISS_RESYNC_EVERY + 1.5  # a miss's feed read, a round of requests
REDIS_DATABASE = 12  # apart from the database every test's clean_state flushes
SETTINGS = {
    "ENV_FILE": "",
    "SECRET_KEY": "directory-tests-only-" + "k" * 32,
    "DEBUG": "false",
    "ALLOWED_HOSTS": "127.0.0.1,.localhost",
    "AUTHZ_CONFIG_RECHECK_INTERVAL": str(WORKER_RECHECK),
    "AUTHZ_ALLOW_INSECURE_ISSUERS": "true",
    "AUTHZ_INSECURE_ISSUERS_ACKNOWLEDGED": "true",
}
FLOOD = 600
PRIVATE = "/api/private"


def seen_within(web: Web, check: Check, path: str, within: float, **request: Any) -> float:
    """Seconds until every worker's answers pass ``check``; fails when that took over ``within``."""
    elapsed = web.until(check, path, within=within, **request)
    assert elapsed < within, f"{path} took {elapsed:.1f} s to change in every worker"
    return elapsed


@pytest.fixture(scope="module")
def worker_env(
    mode: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The environment of the module's processes in one mode, its database migrated."""
    home = tmp_path_factory.mktemp(f"directory-{mode}")
    env = {**inherited_env(), **SETTINGS, "DEVISSUER_KEY_DIR": str(home / "keys")}
    env["HOME_DIR"] = str(home)
    return {**env, **mode_env(mode, request, home, REDIS_DATABASE)}


@pytest.fixture(scope="module")
def workers(worker_env: dict[str, str]) -> Iterator[Stack]:
    """The development issuer and ``gunicorn -w 2``, rechecking every WORKER_RECHECK seconds."""
    with platform(worker_env, Path(worker_env["HOME_DIR"])) as running_stack:
        yield running_stack


@contextmanager
def counting_gunicorn(env: dict[str, str], home: Path) -> Iterator[tuple[Web, Path]]:
    """``gunicorn -w 2`` of bench/probe_wsgi.py: each worker writes its SQL counts by thread."""
    port, sql_dir = free_port(), home / "sql"
    access_log, log = home / "counted-access.log", home / "counted.log"
    access_log.touch()
    sql_dir.mkdir()
    (home / "counted-metrics").mkdir()
    env = {**env, "BENCH_SQL_DIR": str(sql_dir)}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(home / "counted-metrics")
    command = [sys.executable, "-m", "gunicorn", PROBE_APP, "-w", str(WORKERS)]
    command += ["-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", "--no-control-socket"]
    command += ["--access-logfile", str(access_log), "--access-logformat", ACCESS_FORMAT]
    with running(command, env, log) as process:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", process, log)
        yield Web(f"http://127.0.0.1:{port}", access_log), sql_dir


@pytest.fixture(scope="module")
def slow_workers(workers: Stack) -> Iterator[tuple[Web, Path]]:
    """Another ``gunicorn -w 2`` whose background thread reads the feed once a minute only."""
    env = {**workers.env, "AUTHZ_CONFIG_RECHECK_INTERVAL": "60"}
    with counting_gunicorn(env, workers.home) as counted:
        yield counted


def request_queries(sql_dir: Path) -> dict[int, int]:
    """The SQL statements each worker's request threads ran so far, by worker pid."""
    counts = {int(path.stem): json.loads(path.read_text()) for path in sql_dir.glob("*.json")}
    return {pid: count.get("request", 0) for pid, count in counts.items()}


def settled_queries(sql_dir: Path) -> dict[int, int]:
    """The counts once the workers have written them (every 0.2 s)."""
    time.sleep(0.5)
    return request_queries(sql_dir)


def made_up(n: int) -> tuple[str, str]:
    """A path and host naming a tenant nobody created: by slug, or by host, by turns."""
    name = f"x{uuid.uuid4().hex}"
    return (f"/t/{name}/api/public", "127.0.0.1") if n % 2 else ("/api/public", f"{name}.localhost")


def flood(web: Web, count: int) -> list[Answer]:
    """``count`` requests, 8 at a time, each naming a tenant nobody created."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        sent = [pool.submit(web.get, *made_up(n)) for n in range(count)]
    return [answer.result() for answer in sent]


def test_a_tenant_added_elsewhere_is_served_by_every_worker(workers: Stack) -> None:
    assert_every(workers.web.everyone("/t/newco/api/public"), NOT_FOUND)

    workers.import_tenants(workers.tenant("newco"))

    seen_within(workers.web, OK, "/t/newco/api/public", PROPAGATION)


def test_a_tenant_added_a_moment_ago_answers_at_once(
    workers: Stack, slow_workers: tuple[Web, Path]
) -> None:
    web, _ = slow_workers
    assert_every(web.everyone("/api/public", host="quickco.localhost"), NOT_FOUND)

    workers.import_tenants(workers.tenant("quickco", hosts=["quickco.localhost"]))

    seen_within(web, OK, "/api/public", AT_ONCE, host="quickco.localhost")
    assert_every(web.everyone("/t/quickco/api/public"), OK)


def test_a_deactivated_tenant_is_gone_from_every_worker(workers: Stack) -> None:
    item = workers.tenant("byeco", hosts=["byeco.localhost"])
    workers.import_tenants(item)
    seen_within(workers.web, realm_of("byeco"), PRIVATE, PROPAGATION, host="byeco.localhost")

    workers.import_tenants({**item, "active": False})

    seen_within(workers.web, NOT_FOUND, PRIVATE, PROPAGATION, host="byeco.localhost")
    assert_every(workers.web.everyone("/t/byeco/api/public"), NOT_FOUND)


def test_a_repointed_issuer_is_trusted_by_every_worker(workers: Stack) -> None:
    item = workers.tenant("movingco", "movingco-old")
    old = workers.token("movingco-old", item["audiences"][0])
    new = workers.token("movingco-new", item["audiences"][0])
    workers.import_tenants(item)
    seen_within(workers.web, OK, "/t/movingco/api/private", PROPAGATION, token=old)

    workers.import_tenants({**item, "issuer": workers.issuer_url("movingco-new")})

    seen_within(workers.web, OK, "/t/movingco/api/private", PROPAGATION, token=new)
    assert_every(workers.web.everyone("/t/movingco/api/private", token=old), answered(401))


def test_a_moved_host_serves_its_new_tenant_in_every_worker(workers: Stack) -> None:
    first = workers.tenant("hosta", hosts=["moving.localhost"])
    second = workers.tenant("hostb", hosts=["hostb.localhost"])
    workers.import_tenants(first, second)
    seen_within(workers.web, realm_of("hosta"), PRIVATE, PROPAGATION, host="moving.localhost")

    moved = {**second, "hosts": ["hostb.localhost", "moving.localhost"]}
    workers.import_tenants({**first, "hosts": []}, moved)

    seen_within(workers.web, realm_of("hostb"), PRIVATE, PROPAGATION, host="moving.localhost")
    assert_every(workers.web.everyone(PRIVATE, host="hostb.localhost"), realm_of("hostb"))


def test_a_deleted_tenant_is_gone_from_every_worker(workers: Stack) -> None:
    workers.import_tenants(workers.tenant("goneco", hosts=["goneco.localhost"]))
    seen_within(workers.web, OK, "/api/public", PROPAGATION, host="goneco.localhost")

    workers.shell("from tenants.models import Tenant; Tenant.objects.get(slug='goneco').delete()")

    seen_within(workers.web, NOT_FOUND, "/api/public", PROPAGATION, host="goneco.localhost")
    assert_every(workers.web.everyone("/t/goneco/api/public"), NOT_FOUND)


def test_a_flood_of_made_up_names_costs_a_few_queries_a_second_per_worker(
    workers: Stack, slow_workers: tuple[Web, Path]
) -> None:
    web, sql_dir = slow_workers
    web.everyone("/t/warm/api/public")  # every worker has built its filter
    before = settled_queries(sql_dir)
    started = time.monotonic()

    answers = flood(web, FLOOD)

    seconds = time.monotonic() - started
    after = settled_queries(sql_dir)
    assert_every(answers, NOT_FOUND)
    spent = {pid: after[pid] - before.get(pid, 0) for pid in after}
    bound = seconds / MISS_RESYNC_EVERY + 2  # a feed read per interval, and one at either end
    assert len(spent) == WORKERS and all(n <= bound for n in spent.values()), (spent, seconds)


def test_a_change_reaches_every_worker_while_the_shared_store_is_unreachable(
    workers: Stack,
) -> None:
    env = {**workers.env, "REDIS_URL": "redis://127.0.0.1:1/0"}  # refused: a Redis outage
    item = workers.tenant("storeless")
    with gunicorn(env, workers.home, "no-store") as web:
        workers.import_tenants(item)
        seen_within(web, OK, "/t/storeless/api/public", PROPAGATION)

        workers.import_tenants({**item, "active": False})

        seen_within(web, NOT_FOUND, "/t/storeless/api/public", PROPAGATION)
