"""Rate limits in one process, on both stores; tests/test_control_plane.py runs two workers."""

import time

import pytest
from django.core.cache import caches
from django.core.exceptions import ValidationError
from prometheus_client import REGISTRY

from tenants.ratelimit import (
    DatabaseCounts,
    Limit,
    Rate,
    RedisCounts,
    _verdict,
    parse_rate,
    validate_rate,
)
from tests.fixtures import bearer

SCOPED = "/t/acme/api/private-scoped"


def sample(name: str, **labels: str) -> float:
    """A metric of this process, 0 before its first count."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    "text, rate",
    [
        ("60/min", Rate(60, 60)),
        ("1000/hour", Rate(1000, 3600)),
        ("20/s", Rate(20, 1)),
        (" 5 / day ", Rate(5, 86400)),
        ("7/Minute", Rate(7, 60)),
        ("", None),
    ],
)
def test_rates_are_read_as_written(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["0/min", "60", "60/minutes", "-1/s", "1e3/s", "60/min/2", "x"])
def test_anything_else_is_refused_with_a_clear_error(text):
    with pytest.raises(ValidationError, match="is not a rate such as 60/min"):
        validate_rate(text)


def test_an_invalid_rate_is_refused_by_the_import(make_tenant):
    with pytest.raises(Exception, match="rate_limit_per_subject"):
        make_tenant("acme", rate_limit_per_subject="lots")


def test_the_sliding_window_weighs_the_previous_window_by_its_overlap():
    limit = Limit("subject", "k", Rate(10, 60))
    quarter_in = 60 * 1000 + 15  # 15 s into a window: the previous one still weighs 0.75

    assert _verdict(limit, previous=8, current=4, now=quarter_in, counted=True).remaining == 0
    refused = _verdict(limit, previous=8, current=4, now=quarter_in, counted=False)  # 6 + 5
    assert not refused.allowed
    assert refused.retry_after == 8  # at 22.5 s in, 8 * 0.625 + 4 + 1 = 10
    assert _verdict(limit, previous=0, current=10, now=quarter_in, counted=False).retry_after == 51


@pytest.mark.parametrize("store", ["redis", "database"])
def test_both_stores_count_every_limit_in_its_window(store, db):
    counts = RedisCounts(caches["default"]) if store == "redis" else DatabaseCounts()
    tenant, subject = Limit("tenant", "t-key", Rate(5, 60)), Limit("subject", "s-key", Rate(2, 60))
    start = 1_000_000 * 60.0

    first = counts.count([tenant, subject], [0, 0], [True, True], start)
    second = counts.count([tenant, subject], [2, 0], [True, True], start + 1)
    refused = counts.count([tenant, subject], [0, 0], [True, True], start + 2)  # subject: 2/60
    next_window = counts.count([tenant], [0], [True], start + 61)
    far_later = counts.count([tenant], [1], [False], start + 600)

    assert first == ([(0, 1), (0, 1)], True)
    assert second == ([(0, 4), (0, 2)], True)
    assert refused == ([(0, 4), (0, 2)], False)  # taken back from both limits
    assert next_window == ([(4, 1)], True)
    assert far_later == ([(0, 1)], True)


def test_a_subject_over_its_limit_gets_429_while_others_are_served(
    client, make_tenant, tokens, settings
):
    make_tenant("acme", rate_limit_per_subject="3/min")
    make_tenant("globex", rate_limit_per_subject="3/min")
    alice = bearer(tokens("acme").token(sub="auth0|alice", scope="read:messages"))
    bob = bearer(tokens("acme").token(sub="auth0|bob", scope="read:messages"))

    served = [client.get(SCOPED, **alice) for _ in range(3)]
    refused = client.get(SCOPED, **alice)

    assert [r.status_code for r in served] == [200, 200, 200]
    assert [r["RateLimit"] for r in served] == [
        f'"subject";r={n};t={served[i]["RateLimit"].split("t=")[1]}'
        for i, n in enumerate((2, 1, 0))
    ]
    assert served[0]["RateLimit-Policy"] == '"subject";q=3;w=60'
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert "Too many requests for this caller (3/min)" in refused.json()["message"]
    assert 1 <= int(refused["Retry-After"]) <= 120  # the window must fade below 3
    assert refused["RateLimit"].startswith('"subject";r=0;')
    assert client.get(SCOPED, **bob).status_code == 200
    globex = bearer(tokens("globex").token(sub="auth0|alice", scope="read:messages"))
    assert client.get("/t/globex/api/private-scoped", **globex).status_code == 200


def test_a_tenant_limit_caps_every_subject_together_and_refuses_before_token_work(
    client, make_tenant, tokens
):
    make_tenant("acme", rate_limit_per_tenant="4/min")
    callers = [bearer(tokens("acme").token(sub=f"auth0|{n}", scope="read:messages")) for n in "ab"]
    statuses = [client.get(SCOPED, **callers[i % 2]).status_code for i in range(5)]
    fresh = bearer(tokens("acme").token(sub="auth0|c", scope="read:messages"))
    misses = sample("authz_verified_token_cache_total", result="miss")

    known_over = client.get(SCOPED, **fresh)

    assert statuses == [200, 200, 200, 200, 429]
    assert known_over.status_code == 429 and "this tenant" in known_over.json()["message"]
    assert known_over["RateLimit"].startswith('"tenant";r=0;')
    assert sample("authz_verified_token_cache_total", result="miss") == misses  # not verified


def test_anonymous_requests_and_refused_tokens_share_a_limit_per_address(
    client, acme, acme_tokens, settings
):
    settings.AUTHZ = {**settings.AUTHZ, "RATE_LIMIT_ANONYMOUS_PER_ADDRESS": "3/min"}
    good = bearer(acme_tokens.token(scope="read:messages"))

    anonymous = [client.get(SCOPED).status_code for _ in range(2)]
    garbage = client.get(SCOPED, HTTP_AUTHORIZATION="Bearer not-a-jwt").status_code
    limited = client.get(SCOPED, HTTP_AUTHORIZATION="Bearer still-not-a-jwt")
    known_over = client.get(SCOPED)
    other_address = client.get(SCOPED, REMOTE_ADDR="10.0.0.9")

    assert [*anonymous, garbage] == [401, 401, 401]
    assert limited.status_code == 429 and "this address" in limited.json()["message"]
    assert known_over.status_code == 429
    assert other_address.status_code == 401
    assert client.get(SCOPED, **good).status_code == 200  # a valid token is not anonymous


def test_the_client_address_is_the_one_the_trusted_proxy_saw(client, acme, settings):
    settings.AUTHZ = {**settings.AUTHZ, "RATE_LIMIT_ANONYMOUS_PER_ADDRESS": "1/min"}
    settings.TRUSTED_PROXY_COUNT = 1

    def through_proxy(address: str) -> int:
        return client.get(SCOPED, HTTP_X_FORWARDED_FOR=f"6.6.6.6, {address}").status_code

    assert [through_proxy("203.0.113.1"), through_proxy("203.0.113.2")] == [401, 401]
    assert through_proxy("203.0.113.1") == 429


def test_the_public_endpoint_counts_against_the_tenant_only(client, make_tenant, settings):
    settings.AUTHZ = {**settings.AUTHZ, "RATE_LIMIT_ANONYMOUS_PER_ADDRESS": "1/min"}
    make_tenant("acme", rate_limit_per_tenant="3/min")

    statuses = [client.get("/t/acme/api/public").status_code for _ in range(4)]

    assert statuses == [200, 200, 200, 429]


def test_a_platform_default_applies_to_tenants_that_set_none(client, make_tenant, tokens, settings):
    settings.AUTHZ = {**settings.AUTHZ, "RATE_LIMIT_PER_SUBJECT": "1/min"}
    make_tenant("acme")
    make_tenant("globex", rate_limit_per_subject="5/min")
    acme = bearer(tokens("acme").token(scope="read:messages"))
    globex = bearer(tokens("globex").token(scope="read:messages"))

    assert [client.get(SCOPED, **acme).status_code for _ in range(2)] == [200, 429]
    statuses = [client.get("/t/globex/api/private-scoped", **globex).status_code for _ in range(2)]
    assert statuses == [200, 200]


def test_without_a_limit_no_header_and_no_store_round_trip(client, acme, acme_tokens):
    response = client.get(SCOPED, **bearer(acme_tokens.token(scope="read:messages")))

    assert response.status_code == 200
    assert "RateLimit" not in response and "RateLimit-Policy" not in response


def test_when_the_store_cannot_count_requests_are_served_and_it_is_logged(
    client, make_tenant, tokens, settings, caplog
):
    make_tenant("acme", rate_limit_per_subject="1/min")
    token = bearer(tokens("acme").token(scope="read:messages"))
    assert client.get(SCOPED, **token).status_code == 200  # keys held from here on
    before = sample("authz_rate_limiter_unavailable_total")
    settings.CACHES = {
        "default": {
            "BACKEND": "authz.store.SharedRedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",  # nothing listens on the discard port
            "OPTIONS": {"socket_connect_timeout": 0.2},
        }
    }

    statuses = [client.get(SCOPED, **token).status_code for _ in range(3)]

    assert statuses == [200, 200, 200]
    assert "Cannot count requests in the shared store" in caplog.text
    assert sample("authz_rate_limiter_unavailable_total") - before == 3  # tried once, then not


def test_the_token_debugger_counts_nothing(admin_client, client, make_tenant, tokens):
    tenant = make_tenant("acme", rate_limit_per_subject="1/min")
    token = tokens("acme").token(scope="read:messages")
    debugged = admin_client.post(
        f"/admin/tenants/tenant/{tenant.pk}/debug-token/",
        {"endpoint": "messages:private-scoped", "token": token},
    )

    assert debugged.context["answer"].served
    assert client.get(SCOPED, **bearer(token)).status_code == 200  # its one request is left


def test_429_is_in_the_published_schema(client, db):
    schema = client.get("/api/schema", HTTP_ACCEPT="application/json").json()

    operations = [
        op for path in schema["paths"].values() for op in path.values() if "responses" in op
    ]
    assert operations and all("429" in op["responses"] for op in operations)


def test_far_from_its_limits_a_request_is_counted_here_and_written_with_the_next(settings, db):
    from tenants.ratelimit import Limiter

    here, elsewhere, third = Limiter(), Limiter(), Limiter()  # three processes
    limit = Limit("tenant", "far-key", Rate(1000, 60))

    first = here.count([limit])  # unknown here: counted in the store
    local = [here.count([limit]) for _ in range(10)]  # far from 1000: counted here
    seen_elsewhere = elsewhere.count([limit])  # the store has 1 + this one
    time.sleep(0.15)
    flushed = here.count([limit])  # due: the 10, and this one, written
    after = third.count([limit])

    assert first[0].remaining == 999
    assert [v[0].remaining for v in local] == list(range(998, 988, -1))
    assert seen_elsewhere[0].remaining == 998
    assert flushed[0].remaining == 987
    assert after[0].remaining == 986


def test_near_its_limit_every_request_is_counted_in_the_store(db):
    from tenants.ratelimit import Limiter

    here, elsewhere = Limiter(), Limiter()
    small = Limit("subject", "near-key", Rate(19, 60))  # under 20: never counted locally

    for _ in range(5):
        here.count([small])

    assert elsewhere.count([small])[0].remaining == 13


def test_refusals_are_counted_in_metrics_and_in_the_tenant_traffic(client, make_tenant, tokens):
    from tenants.traffic import tenant_traffic, traffic_counter

    make_tenant("acme", rate_limit_per_subject="1/min")
    token = bearer(tokens("acme").token(scope="read:messages"))
    before = sample("authz_rate_limited_total", tenant="acme")
    traffic_counter.clear()

    statuses = [client.get(SCOPED, **token).status_code for _ in range(3)]
    traffic_counter.flush()

    assert statuses == [200, 429, 429]
    assert sample("authz_rate_limited_total", tenant="acme") - before == 2
    assert tenant_traffic("acme").of_code("rate_limited") == 2


def test_limits_are_on_the_tenant_page_and_in_the_export(admin_client, make_tenant):
    from tenants.config_io import export_tenants

    tenant = make_tenant("acme", rate_limit_per_tenant="1000/hour")

    page = admin_client.get(f"/admin/tenants/tenant/{tenant.pk}/change/").content.decode()
    [exported] = export_tenants()["tenants"]

    assert 'name="rate_limit_per_tenant" value="1000/hour"' in page
    assert 'name="rate_limit_per_subject"' in page and "Rate limits" in page
    assert exported["rate_limit_per_tenant"] == "1000/hour"
    assert "rate_limit_per_subject" not in exported  # blank: not written


def test_a_bad_platform_default_fails_the_system_check(settings):
    from tenants.ratelimit import default_rates_check

    settings.AUTHZ = {**settings.AUTHZ, "RATE_LIMIT_PER_TENANT": "lots"}

    [error] = default_rates_check(None)

    assert error.id == "tenants.E001" and "AUTHZ_RATE_LIMIT_PER_TENANT" in error.msg
