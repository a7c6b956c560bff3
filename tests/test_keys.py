"""Key sets on the request path: rotation, the unknown-kid cooldown, outages, the warm path."""

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
import requests
from django.core.cache import cache

from authz.jwks import lock_key, read_record
from authz.keys import WAIT_GRACE, WAIT_MAX_POLL
from authz.store import derived_key
from authz.tasks import refresh_key_set
from devissuer.issuer import start_in_thread
from tenants.directory import jwks_urls
from tests.fixtures import bearer, jwks_url_of

PRIVATE = "/t/{slug}/api/private"


def get_private(client, slug, token):
    """GET /t/<slug>/api/private with a bearer token."""
    return client.get(PRIVATE.format(slug=slug), **bearer(token))


def test_warm_request_makes_no_query_and_no_fetch(
    client, acme, acme_tokens, issuer, django_assert_num_queries
):
    token = acme_tokens.token()
    assert get_private(client, "acme", token).status_code == 200
    fetches = issuer.hits("/acme/.well-known/jwks.json")

    with django_assert_num_queries(0):
        response = get_private(client, "acme", acme_tokens.token(sub="another"))

    assert response.status_code == 200
    assert issuer.hits("/acme/.well-known/jwks.json") == fetches


def test_rotated_key_is_accepted_on_its_first_request(client, make_tenant, tokens, issuer):
    make_tenant("rotor")
    refresh_key_set.delay(jwks_url_of("rotor"))  # what beat does in the background
    factory = tokens("rotor")
    assert get_private(client, "rotor", factory.token()).status_code == 200

    new_kid = requests.post(f"{issuer.url_for('rotor')}rotate", timeout=5).json()["kid"]
    response = get_private(client, "rotor", factory.token())

    assert response.status_code == 200
    assert new_kid in {key["kid"] for key in read_record(jwks_url_of("rotor")).keys}


def test_flood_of_unknown_kids_fetches_once_per_cooldown(client, acme, acme_tokens, issuer):
    refresh_key_set.delay(jwks_url_of("acme"))
    before = issuer.hits("/acme/.well-known/jwks.json")

    statuses = {
        get_private(client, "acme", acme_tokens.token(headers={"kid": uuid.uuid4().hex})).json()[
            "code"
        ]
        for _ in range(50)
    }

    assert statuses == {"unknown_key"}
    assert issuer.hits("/acme/.well-known/jwks.json") - before == 1


def test_cooldown_of_one_tenant_does_not_starve_another(client, make_tenant, tokens, issuer):
    make_tenant("flooded")
    make_tenant("calm")
    refresh_key_set.delay(jwks_url_of("flooded"))
    for _ in range(5):
        get_private(client, "flooded", tokens("flooded").token(headers={"kid": "made-up"}))

    response = get_private(client, "calm", tokens("calm").token())

    assert response.status_code == 200


@pytest.fixture
def own_issuer(issuer_keys):
    """A development issuer that a test may stop (the session one stays up)."""
    server = start_in_thread(issuer_keys)
    yield server
    server.stop()


def test_a_failed_refresh_keeps_the_last_good_keys(client, make_tenant, tokens, own_issuer):
    make_tenant("downcached", issuer=own_issuer.url_for("downcached"))
    factory = tokens("downcached")
    factory.server = own_issuer
    assert get_private(client, "downcached", factory.token()).status_code == 200

    own_issuer.stop()
    refresh_key_set.delay(jwks_url_of("downcached"))  # fails: the last good keys must stay
    response = get_private(client, "downcached", factory.token())

    assert response.status_code == 200
    record = read_record(jwks_url_of("downcached"))
    assert record.keys and "could not be reached" in record.last_error


def test_issuer_down_without_keys_is_503_not_401(client, make_tenant, tokens, own_issuer):
    make_tenant("downcold", issuer=own_issuer.url_for("downcold"))
    factory = tokens("downcold")
    factory.server = own_issuer
    token = factory.token()
    own_issuer.stop()

    response = get_private(client, "downcold", token)

    assert response.status_code == 503
    assert response.json()["code"] == "issuer_unavailable"
    assert response["Retry-After"] == "30"
    assert "WWW-Authenticate" not in response


def hold_fetch(jwks_url: str) -> None:
    """What another process does when it has claimed the one fetch of this URL."""
    cache.add(derived_key("jwks-cooldown", jwks_url), 1, timeout=30)
    cache.add(lock_key(jwks_url), "another-process", timeout=30)


def test_a_request_waits_for_the_fetch_in_flight_and_uses_what_it_stored(
    client, acme, acme_tokens, issuer
):
    url = jwks_url_of("acme")
    hold_fetch(url)
    fetches = issuer.hits("/acme/.well-known/jwks.json")

    def finish_the_fetch() -> None:
        time.sleep(0.3)
        cache.delete(lock_key(url))
        refresh_key_set.delay(url)

    finisher = threading.Thread(target=finish_the_fetch)
    started = time.monotonic()
    finisher.start()
    response = get_private(client, "acme", acme_tokens.token())
    waited = time.monotonic() - started
    finisher.join()

    assert response.status_code == 200
    assert 0.3 <= waited < 0.3 + WAIT_MAX_POLL + 0.5, waited
    assert issuer.hits("/acme/.well-known/jwks.json") == fetches + 1  # the other's, not its own


def test_a_fetch_that_never_ends_is_waited_for_until_the_deadline(
    client, acme, acme_tokens, settings
):
    settings.AUTHZ = {**settings.AUTHZ, "JWKS_FETCH_DEADLINE": 0.5}
    hold_fetch(jwks_url_of("acme"))

    started = time.monotonic()
    response = get_private(client, "acme", acme_tokens.token())
    waited = time.monotonic() - started

    assert (response.status_code, response.json()["code"]) == (503, "issuer_unavailable")
    assert 0.5 <= waited < 1.5, waited


def test_an_issuer_that_is_down_costs_later_requests_no_wait(
    client, make_tenant, tokens, own_issuer
):
    make_tenant("downfast", issuer=own_issuer.url_for("downfast"))
    factory = tokens("downfast")
    factory.server = own_issuer
    own_issuer.stop()
    assert get_private(client, "downfast", factory.token()).status_code == 503  # its own fetch

    started = time.monotonic()
    response = get_private(client, "downfast", factory.token())  # in the cooldown: no fetch
    waited = time.monotonic() - started

    assert (response.status_code, response.json()["code"]) == (503, "issuer_unavailable")
    assert waited < WAIT_GRACE / 2, waited


def test_keys_older_than_max_stale_are_not_used(client, make_tenant, tokens, own_issuer, settings):
    settings.AUTHZ = {**settings.AUTHZ, "KEYSET_MAX_STALE": 0.5, "CONFIG_RECHECK_INTERVAL": 0}
    make_tenant("stale", issuer=own_issuer.url_for("stale"))
    factory = tokens("stale")
    factory.server = own_issuer
    assert get_private(client, "stale", factory.token()).status_code == 200

    own_issuer.stop()
    time.sleep(0.6)
    response = get_private(client, "stale", factory.token())

    assert response.status_code == 503


def test_key_removed_from_the_set_stops_verifying(client, make_tenant, tokens, issuer, settings):
    settings.AUTHZ = {**settings.AUTHZ, "CONFIG_RECHECK_INTERVAL": 0}
    make_tenant("retire")
    factory = tokens("retire")
    old_token = factory.token()
    assert get_private(client, "retire", old_token).status_code == 200

    issuer.store.rotate("retire")
    issuer.store.rotate("retire")  # the first key is now unpublished
    refresh_key_set.delay(jwks_url_of("retire"))
    response = get_private(client, "retire", old_token)

    assert (response.status_code, response.json()["code"]) == (401, "unknown_key")


def test_warm_request_among_10000_tenants_makes_no_query_and_no_fetch(
    client, acme, acme_tokens, issuer, django_assert_num_queries
):
    from tenants.directory import directory
    from tenants.models import Tenant, TenantAudience, TenantHost, TenantIssuer

    others = Tenant.objects.bulk_create(
        Tenant(slug=f"t{index:05d}", name=f"T{index}") for index in range(9_999)
    )
    TenantIssuer.objects.bulk_create(
        TenantIssuer(tenant=tenant, issuer_override=acme_tokens.issuer) for tenant in others
    )
    TenantAudience.objects.bulk_create(
        TenantAudience(tenant=tenant, audience="https://api.other.test") for tenant in others
    )
    TenantHost.objects.bulk_create(
        TenantHost(tenant=tenant, hostname=f"{tenant.slug}.localhost") for tenant in others
    )
    directory.clear()  # bulk_create sends no signals
    assert Tenant.objects.filter(active=True).count() == 10_000
    assert jwks_urls() == {jwks_url_of("acme")}  # one key set for all of them
    assert get_private(client, "acme", acme_tokens.token()).status_code == 200
    warm_host = client.get(
        "/api/private", HTTP_HOST="acme.localhost", **bearer(acme_tokens.token())
    )
    assert warm_host.status_code == 200  # the host name is known to this process too
    fetches = issuer.hits("/acme/.well-known/jwks.json")

    with django_assert_num_queries(0):
        by_host = client.get(
            "/api/private", HTTP_HOST="acme.localhost", **bearer(acme_tokens.token(sub="x"))
        )

    assert by_host.status_code == 200
    assert issuer.hits("/acme/.well-known/jwks.json") == fetches


@contextmanager
def redis_commands() -> Iterator[list[str]]:
    """The commands the test Redis server runs inside the block, as MONITOR reports them."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    seen: list[str] = []
    marker = f"end-of-watch-{uuid.uuid4().hex}"
    with client.monitor() as monitor:
        watcher = threading.Thread(target=_watch, args=(monitor, seen, marker), daemon=True)
        watcher.start()
        commands: list[str] = []
        try:
            yield commands
        finally:
            client.echo(marker)
            watcher.join(timeout=10)
            client.close()
        assert not watcher.is_alive(), "MONITOR never reported the end of the watch"
        commands += seen


def _watch(monitor: "redis.client.Monitor", seen: list[str], marker: str) -> None:
    for command in monitor.listen():
        if marker in command["command"]:
            return
        seen.append(command["command"])


def test_warm_requests_read_no_key_set_while_none_changes(client, make_tenant, tokens, settings):
    settings.AUTHZ = {**settings.AUTHZ, "CONFIG_RECHECK_INTERVAL": 1.0}
    slugs = [f"spread{index}" for index in range(30)]
    issuers = {slug: f"spread-issuer{index % 10}" for index, slug in enumerate(slugs)}
    factories = {slug: tokens(issuers[slug], f"https://api.{slug}.test") for slug in slugs}
    for slug in slugs:
        make_tenant(slug, issuer_name=issuers[slug])
    for url in jwks_urls():
        refresh_key_set.delay(url)  # what the worker does once the tenants are saved
    for slug in slugs:
        assert get_private(client, slug, factories[slug].token()).status_code == 200
    time.sleep(1.1)  # every key set's entry is past its recheck interval

    with redis_commands() as commands:
        for slug in slugs:
            assert get_private(client, slug, factories[slug].token()).status_code == 200

    reads = [command for command in commands if command.split(" ", 1)[0] in ("GET", "MGET")]
    assert not [command for command in reads if "jwks-record" in command], reads
    # One read of the key set stamp, not one per key set or per tenant.
    assert len([command for command in reads if "jwks-stamp" in command]) == 1, reads


def test_unknown_kid_cooldown_is_shared_by_tenants_of_one_url(client, make_tenant, tokens, issuer):
    make_tenant("cool-a", issuer_name="cool-keys")
    make_tenant("cool-b", issuer_name="cool-keys")
    refresh_key_set.delay(jwks_url_of("cool-a"))
    before = issuer.hits("/cool-keys/.well-known/jwks.json")

    codes = {
        get_private(
            client,
            slug,
            tokens("cool-keys", f"https://api.{slug}.test").token(
                headers={"kid": uuid.uuid4().hex}
            ),
        ).json()["code"]
        for slug in ("cool-a", "cool-b") * 5
    }

    assert codes == {"unknown_key"}
    assert issuer.hits("/cool-keys/.well-known/jwks.json") - before == 1
