"""The per-process tenant directory (tenants/directory.py) and its shared version stamp."""

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from tenants.directory import TenantDirectory, directory
from tenants.models import ScopeRule, Tenant, TenantAudience, TenantHost

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
    return "https://v2.api.acme.test" in lookup.by_slug("acme").audiences


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
    """Recheck the shared version stamp every RECHECK seconds."""
    settings.AUTHZ = {**settings.AUTHZ, "CONFIG_RECHECK_INTERVAL": RECHECK}


def test_lookup_by_slug_and_host(acme):
    config = directory.by_slug("acme")

    assert (config.slug, config.hosts, config.audiences) == (
        "acme",
        ("acme.localhost",),
        ("https://api.acme.test",),
    )
    assert directory.by_host("acme.localhost") is config


def test_host_lookup_ignores_case(acme):
    assert directory.by_host("ACME.Localhost").slug == "acme"


def test_unknown_slug_and_host_are_none(acme):
    assert (directory.by_slug("globex"), directory.by_host("globex.localhost")) == (None, None)


def test_active_slugs_leave_out_inactive_tenants(make_tenant):
    for slug in ("globex", "acme"):
        make_tenant(slug)
    make_tenant("initech", active=False)

    assert directory.active_slugs() == ["acme", "globex"]


def test_config_carries_the_tenant_settings(make_tenant):
    make_tenant("acme", algorithms=["ES256", "RS256"], leeway=5, scope_claims="both")

    config = directory.by_slug("acme")

    assert (config.algorithms, config.leeway, config.scope_claims) == (
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
        directory.active_slugs()


def test_a_cold_load_reads_every_tenant_in_a_fixed_number_of_queries(
    make_tenant, django_assert_max_num_queries
):
    for slug in ("acme", "globex", "initech"):
        make_tenant(slug)
    directory.clear()

    with django_assert_max_num_queries(5):
        assert directory.active_slugs() == ["acme", "globex", "initech"]


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


def test_when_the_cache_is_down_the_loaded_snapshot_is_kept(
    settings, acme, caplog, django_assert_num_queries
):
    other_process = TenantDirectory()
    loaded = other_process.by_slug("acme")
    settings.CACHES = UNREACHABLE_REDIS
    settings.AUTHZ = {**settings.AUTHZ, "CONFIG_RECHECK_INTERVAL": 0}

    with (
        caplog.at_level(logging.WARNING, logger="tenants.directory"),
        django_assert_num_queries(0),
    ):
        assert other_process.by_slug("acme") is loaded

    assert "Cannot read the tenant config version" in caplog.text


def test_when_the_cache_is_down_a_cold_directory_still_loads(settings, acme):
    settings.CACHES = UNREACHABLE_REDIS

    assert TenantDirectory().by_host("acme.localhost").slug == "acme"
