"""The per-process tenant directory (tenants/directory.py) and the change feed that evicts it."""

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db.models import Max

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


@CHANGES
@pytest.mark.django_db(transaction=True)
def test_a_committed_change_reaches_another_process_after_the_interval(
    fast_recheck, make_tenant: Callable[..., Any], change, seen
):
    acme = make_tenant("acme")
    other_process = TenantDirectory()
    assert not seen(other_process)

    change(acme)

    assert not seen(other_process), "picked up before the recheck interval"
    time.sleep(RECHECK * 1.5)
    assert seen(other_process)


@pytest.mark.django_db(transaction=True)
def test_a_change_travels_without_the_shared_store(settings, fast_recheck, make_tenant):
    acme = make_tenant("acme")
    other_process = TenantDirectory()
    assert other_process.by_slug("acme") is not None
    settings.CACHES = UNREACHABLE_REDIS  # a Redis outage, a flush or a lost write: no matter

    deactivate(acme)
    time.sleep(RECHECK * 1.5)

    assert other_process.by_slug("acme") is None


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
