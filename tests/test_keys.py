"""Key sets on the request path: rotation, the unknown-kid cooldown, outages, the warm path."""

import os
import time
import uuid

import pytest
import redis
import requests

from authz.devissuer import start_in_thread
from authz.jwks import read_record
from authz.keys import key_cache
from authz.tasks import refresh_key_set
from tests.fixtures import bearer

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
    refresh_key_set.delay("rotor")  # what beat does in the background
    factory = tokens("rotor")
    assert get_private(client, "rotor", factory.token()).status_code == 200

    new_kid = requests.post(f"{issuer.url_for('rotor')}rotate", timeout=5).json()["kid"]
    response = get_private(client, "rotor", factory.token())

    assert response.status_code == 200
    assert new_kid in {key["kid"] for key in read_record("rotor").keys}


def test_flood_of_unknown_kids_fetches_once_per_cooldown(client, acme, acme_tokens, issuer):
    refresh_key_set.delay("acme")
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
    refresh_key_set.delay("flooded")
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


def test_issuer_down_with_keys_cached_keeps_serving(client, make_tenant, tokens, own_issuer):
    make_tenant("downcached", issuer=own_issuer.url_for("downcached"))
    factory = tokens("downcached")
    factory.server = own_issuer
    assert get_private(client, "downcached", factory.token()).status_code == 200

    own_issuer.stop()
    refresh_key_set.delay("downcached")  # fails: the last good keys must stay
    key_cache.clear()  # as in another web process: keys come from the shared record
    response = get_private(client, "downcached", factory.token())

    assert response.status_code == 200
    record = read_record("downcached")
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
    refresh_key_set.delay("retire")
    response = get_private(client, "retire", old_token)

    assert (response.status_code, response.json()["code"]) == (401, "unknown_key")


def test_warm_request_among_10000_tenants_makes_no_query_and_no_fetch(
    client, acme, acme_tokens, issuer, django_assert_num_queries
):
    from tenants.directory import directory
    from tenants.models import Tenant, TenantAudience, TenantHost

    others = Tenant.objects.bulk_create(
        Tenant(slug=f"t{index:05d}", name=f"T{index}", issuer_override=acme_tokens.issuer)
        for index in range(9_999)
    )
    TenantAudience.objects.bulk_create(
        TenantAudience(tenant=tenant, audience="https://api.other.test") for tenant in others
    )
    TenantHost.objects.bulk_create(
        TenantHost(tenant=tenant, hostname=f"{tenant.slug}.localhost") for tenant in others
    )
    directory.clear()  # bulk_create sends no signals
    assert len(directory.active_slugs()) == 10_000
    assert get_private(client, "acme", acme_tokens.token()).status_code == 200
    fetches = issuer.hits("/acme/.well-known/jwks.json")

    with django_assert_num_queries(0):
        by_host = client.get(
            "/api/private", HTTP_HOST="acme.localhost", **bearer(acme_tokens.token(sub="x"))
        )

    assert by_host.status_code == 200
    assert issuer.hits("/acme/.well-known/jwks.json") == fetches


def redis_get_calls() -> int:
    """GET commands the test Redis server has answered so far."""
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        return client.info("commandstats").get("cmdstat_get", {}).get("calls", 0)
    finally:
        client.close()


def test_warm_requests_read_no_key_set_while_none_changes(client, make_tenant, tokens, settings):
    settings.AUTHZ = {**settings.AUTHZ, "CONFIG_RECHECK_INTERVAL": 1.0}
    slugs = [f"spread{index}" for index in range(30)]
    factories = {slug: tokens("acme", f"https://api.{slug}.test") for slug in slugs}
    for slug in slugs:
        make_tenant(slug, issuer_name="acme")
        refresh_key_set.delay(slug)  # what the worker does once the tenant is saved
    for slug in slugs:
        assert get_private(client, slug, factories[slug].token()).status_code == 200
    time.sleep(1.1)  # every tenant's entry is past its recheck interval
    before = redis_get_calls()

    statuses = {get_private(client, slug, factories[slug].token()).status_code for slug in slugs}

    assert statuses == {200}
    # One read of the key set stamp and one of the tenant config version, not one per tenant.
    assert redis_get_calls() - before <= 4
