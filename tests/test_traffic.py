"""The tenant page's traffic: counts by outcome in both stores, the panel, the list's filter.

tests/test_control_plane.py shows two gunicorn workers' counts added up in both modes.
"""

import time

import pytest
from django.core.cache import caches

from devissuer import dpop
from tenants.traffic import (
    REPLAY,
    DatabaseTraffic,
    RedisTraffic,
    bucket_of,
    last,
    refusal_shares,
    sentence_for,
    tenant_traffic,
    traffic_counter,
)


@pytest.fixture(autouse=True)
def nothing_pending():
    """Each test counts only its own requests."""
    traffic_counter.clear()
    yield
    traffic_counter.clear()


def outcomes_of(counts) -> dict[tuple[int, str], int]:
    """A Counter of outcomes as a plain dict."""
    return dict(counts)


@pytest.mark.parametrize("store", ["redis", "database"])
def test_both_stores_add_up_flushes_per_tenant_and_bucket(store, db):
    traffic = RedisTraffic(caches["default"]) if store == "redis" else DatabaseTraffic()
    now = bucket_of(time.time())
    flush = {(now, "acme", 200, "ok"): 3, (now, "acme", 401, "invalid_signature"): 2}

    traffic.add(flush)
    traffic.add({**flush, (now - 1, "acme", 200, "ok"): 5, (now, "globex", 403, "x"): 1})

    per_bucket = traffic.outcomes("acme", range(now - 1, now + 1))
    assert outcomes_of(per_bucket[now]) == {(200, "ok"): 6, (401, "invalid_signature"): 4}
    assert outcomes_of(per_bucket[now - 1]) == {(200, "ok"): 5}
    assert traffic.totals(range(now, now + 1), None) == {"acme": (10, 4), "globex": (1, 1)}
    assert traffic.totals(range(now, now + 1), ["globex", "nobody"]) == {"globex": (1, 1)}
    assert traffic.totals(range(now, now + 1), []) == {}  # an empty page reads nothing


def test_old_buckets_are_pruned_from_the_database(db):
    traffic = DatabaseTraffic()
    now = bucket_of(time.time())
    traffic.add({(now - 400, "acme", 200, "ok"): 1, (now, "acme", 200, "ok"): 1})

    assert traffic.prune() == 1
    assert traffic.totals(range(now - 500, now + 1), None) == {"acme": (1, 0)}


def test_requests_are_counted_by_outcome_once_flushed(client, acme, acme_tokens):
    scoped = f"Bearer {acme_tokens.token(scope='read:messages')}"
    for _ in range(3):
        client.get("/t/acme/api/private-scoped", HTTP_AUTHORIZATION=scoped)
    client.get("/t/acme/api/private-scoped", HTTP_AUTHORIZATION=f"Bearer {acme_tokens.token()}")
    client.get("/t/acme/api/private")
    assert tenant_traffic("acme").day == {}  # nothing written before the flush

    traffic_counter.flush()
    traffic = tenant_traffic("acme")

    assert outcomes_of(traffic.hour) == {
        (200, "ok"): 3,
        (403, "insufficient_scope"): 1,
        (401, "not_authenticated"): 1,
    }
    assert traffic.hour == traffic.day
    assert traffic.top_refusals() == [
        ("insufficient_scope", 1, sentence_for("insufficient_scope")),
        ("not_authenticated", 1, "The request carried no access token."),
    ]
    assert sum(ok + refused for _, ok, refused in traffic.hourly) == 5
    assert refusal_shares(["acme"]) == {"acme": (5, 2)}


def test_a_replayed_proof_is_counted_apart_from_other_bad_proofs(client, acme, acme_tokens):
    key = dpop.new_key()
    bound = acme_tokens.token(cnf={"jkt": dpop.key_thumbprint(key)})
    proof = dpop.make_proof(key, "GET", "http://testserver/t/acme/api/private", access_token=bound)
    headers = {"HTTP_AUTHORIZATION": f"DPoP {bound}", "HTTP_DPOP": proof}
    for _ in range(3):
        client.get("/t/acme/api/private", **headers)
    client.get("/t/acme/api/private", HTTP_AUTHORIZATION=f"DPoP {bound}", HTTP_DPOP="garbage")

    traffic_counter.flush()
    traffic = tenant_traffic("acme")

    assert traffic.of_code(REPLAY) == 2
    assert traffic.of_code("invalid_dpop_proof") == 1
    assert sentence_for(REPLAY) == "A DPoP proof was sent again (replayed)."


def test_every_refusal_code_has_its_own_sentence():
    for code in ("token_expired", "invalid_signature", "invalid_audience", "invalid_dpop_proof"):
        assert sentence_for(code) != "Refused.", code
    assert sentence_for("token_expired") == "The access token has expired."


def test_the_tenant_page_shows_its_traffic_with_a_chart(admin_client, client, acme, acme_tokens):
    client.get("/t/acme/api/private", HTTP_AUTHORIZATION=f"Bearer {acme_tokens.token()}")
    client.get("/t/acme/api/private", HTTP_AUTHORIZATION="Bearer not-a-jwt")
    traffic_counter.flush()

    page = admin_client.get(f"/admin/tenants/tenant/{acme.pk}/change/").content.decode()

    assert 'id="traffic-panel"' in page
    assert "2 requests, 1 refused (50%)" in page
    assert '<svg id="traffic-chart"' in page and 'class="refused"' in page
    assert "malformed_token" in page and "The access token is not a well-formed JWT." in page
    assert 'id="traffic-replays">0<' in page


def test_the_list_shows_and_filters_tenants_refusing_more_than_a_share(
    admin_client, client, make_tenant, tokens
):
    make_tenant("healthy")
    make_tenant("failing")
    make_tenant("quiet")
    good = tokens("healthy").token()
    for _ in range(9):
        client.get("/t/healthy/api/private", HTTP_AUTHORIZATION=f"Bearer {good}")
    client.get("/t/healthy/api/private")
    for _ in range(3):
        client.get("/t/failing/api/private")
    traffic_counter.flush()

    listing = admin_client.get("/admin/tenants/tenant/").content.decode()
    refusing = admin_client.get("/admin/tenants/tenant/?refusing=50").content.decode()
    garbage = admin_client.get("/admin/tenants/tenant/?refusing=%00x")

    assert "10% of 10" in listing and "100% of 3" in listing and "no requests" in listing
    assert ">failing<" in refusing and ">healthy<" not in refusing and ">quiet<" not in refusing
    assert garbage.status_code in (200, 302)


def test_the_last_hour_is_twelve_buckets_ending_now():
    hour = last(3600)

    assert len(hour) == 12 and hour.stop - 1 == bucket_of(time.time())
