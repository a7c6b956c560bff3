"""Rate limits in one process, on both stores; tests/test_control_plane.py runs two workers."""

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


def counts_of(store: str) -> RedisCounts | DatabaseCounts:
    """The counters of one store: Redis, or the database."""
    return RedisCounts(caches["default"]) if store == "redis" else DatabaseCounts()


@pytest.mark.parametrize("store", ["redis", "database"])
def test_both_stores_count_every_limit_in_its_window(store, db):
    counts = counts_of(store)
    tenant, subject = Limit("tenant", "t-key", Rate(5, 60)), Limit("subject", "s-key", Rate(2, 60))
    start = 1_000_000 * 60.0

    first = counts.count([tenant, subject], [0, 0], start)
    second = counts.count([tenant, subject], [0, 0], start + 1)
    refused = counts.count([tenant, subject], [0, 0], start + 2)  # subject: 2/60
    next_window = counts.count([tenant], [0], start + 61)
    far_later = counts.count([tenant], [0], start + 600)

    assert first == ([(0, 1, 0), (0, 1, 0)], True)
    assert second == ([(0, 2, 0), (0, 2, 0)], True)
    assert refused == ([(0, 2, 0), (0, 2, 0)], False)  # taken back from both limits
    assert next_window == ([(2, 1, 0)], True)
    assert far_later == ([(0, 1, 0)], True)


@pytest.mark.parametrize("store", ["redis", "database"])
def test_a_lease_is_counted_with_its_request_and_only_under_half_the_limit(store, db):
    counts = counts_of(store)
    limit = Limit("subject", "lease-key", Rate(100, 60))
    start = 1_000_000 * 60.0

    leased = counts.count([limit], [5], start)  # 1 + 5: under half of 100
    for _ in range(38):
        counts.count([limit], [0], start)  # 44
    last_lease = counts.count([limit], [5], start)  # 45 + 5 = 50: half, still granted
    none_left = counts.count([limit], [5], start)  # 51 + 5: over half, the request only

    assert leased == ([(0, 6, 5)], True)
    assert last_lease == ([(0, 50, 5)], True)
    assert none_left == ([(0, 51, 0)], True)


@pytest.mark.parametrize("store", ["redis", "database"])
def test_a_caller_whose_clock_is_behind_never_moves_a_window_back(store, db):
    counts = counts_of(store)
    limit = Limit("subject", "clock-key", Rate(3, 60))
    start = 1_000_000 * 60.0
    counts.count([limit], [0], start)
    counts.count([limit], [0], start + 60)  # the next window: 1, with 1 before

    behind = counts.count([limit], [1], start + 59)  # a clock a little behind
    full = counts.count([limit], [0], start + 59)

    assert behind == ([(1, 2, 0)], True)  # in the store's window, the one before at full weight
    assert full == ([(1, 2, 0)], False)  # 1 + 2 + 1 > 3


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
    retry_after = int(refused["Retry-After"])
    assert refused.json() == {  # the README's body, nothing added
        "message": f"Too many requests for this caller (3/min); retry in {retry_after} s.",
        "code": "rate_limited",
    }
    assert 1 <= retry_after <= 120  # the window must fade below 3
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
    # An address over its limit is refused before any token is read, valid or not (clients
    # behind one NAT share it); a valid token from another address is served.
    assert client.get(SCOPED, **good).status_code == 429
    assert client.get(SCOPED, REMOTE_ADDR="10.0.0.9", **good).status_code == 200


def test_refusals_before_authentication_spend_no_quota_of_authenticated_callers(
    client, make_tenant, tokens
):
    make_tenant("acme", rate_limit_per_tenant="4/min")
    good = bearer(tokens("acme").token(scope="read:messages"))

    malformed = [client.get(SCOPED, HTTP_AUTHORIZATION="Bearer").status_code for _ in range(2)]
    html = [client.get(SCOPED, HTTP_ACCEPT="text/html").status_code for _ in range(2)]
    over = client.get(SCOPED, HTTP_AUTHORIZATION="Bearer a b")
    served = [client.get(SCOPED, REMOTE_ADDR="10.0.0.9", **good).status_code for _ in range(4)]

    assert malformed + html == [400, 400, 406, 406]
    assert over.status_code == 429
    assert "this tenant's unauthenticated requests (4/min)" in over.json()["message"]
    assert over["RateLimit"].startswith('"unauthenticated";r=0;')
    assert served == [200, 200, 200, 200]  # the tenant's own quota is whole
    assert client.get(SCOPED, REMOTE_ADDR="10.0.0.9", **good).status_code == 429


def test_a_client_address_pays_for_its_own_refusals_first(client, make_tenant, settings):
    settings.AUTHZ = {**settings.AUTHZ, "RATE_LIMIT_ANONYMOUS_PER_ADDRESS": "2/min"}
    make_tenant("acme", rate_limit_per_tenant="3/min")

    flood = [client.get(SCOPED, HTTP_ACCEPT="text/html").status_code for _ in range(5)]
    others = [client.get(SCOPED, REMOTE_ADDR=f"10.0.0.{n}").status_code for n in (1, 2)]

    assert flood == [406, 406, 429, 429, 429]  # the address's refusals took no more
    assert others == [401, 429]  # 2 + 1 of the tenant's 3 unauthenticated; then none


def test_an_outage_counts_against_the_tenant(client, make_tenant, tokens, issuer_keys):
    from devissuer.issuer import start_in_thread

    own_issuer = start_in_thread(issuer_keys)
    make_tenant("down", issuer=own_issuer.url_for("down"), rate_limit_per_tenant="2/min")
    factory = tokens("down")
    factory.server = own_issuer
    token = bearer(factory.token(scope="read:messages"))
    own_issuer.stop()

    statuses = [client.get("/t/down/api/private-scoped", **token).status_code for _ in range(3)]

    assert statuses == [503, 503, 429]


@pytest.mark.parametrize(
    "prefix, neighbour",
    [(64, 429), (128, 401)],
)
def test_ipv6_addresses_are_limited_by_their_network(client, acme, settings, prefix, neighbour):
    settings.AUTHZ = {
        **settings.AUTHZ,
        "RATE_LIMIT_ANONYMOUS_PER_ADDRESS": "1/min",
        "RATE_LIMIT_IPV6_PREFIX": prefix,
    }

    first = client.get(SCOPED, REMOTE_ADDR="2001:db8:1:2::1").status_code
    same_network = client.get(SCOPED, REMOTE_ADDR="2001:db8:1:2:abcd::7").status_code
    next_network = client.get(SCOPED, REMOTE_ADDR="2001:db8:1:3::1").status_code

    assert (first, same_network, next_network) == (401, neighbour, 401)


def test_rotating_addresses_leave_at_most_ten_thousand_limits_remembered(acme, settings):
    from tenants.ratelimit import MAX_REMEMBERED, Limiter, early_limits

    settings.AUTHZ = {**settings.AUTHZ, "RATE_LIMIT_ANONYMOUS_PER_ADDRESS": "1/min"}
    here = Limiter()
    largest = 0
    for batch in range(500):  # 50,000 networks, each counted once and then refused
        networks = [f"2001:db8:{batch:x}:{n:x}::1" for n in range(100)]
        limits = [early_limits(acme, address)[0] for address in networks]
        assert here.count(limits)[0].allowed and not here.count(limits)[0].allowed
        largest = max(largest, here.remembered())

    assert len({limit.key for limit in limits}) == 100
    assert MAX_REMEMBERED * 9 // 10 <= largest <= MAX_REMEMBERED == 10_000
    assert here.known_over(limits) is not None  # the newest are kept


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


def test_far_from_its_limits_a_process_admits_only_what_the_store_counted(db):
    from tenants.ratelimit import Limiter

    here, elsewhere = Limiter(), Limiter()  # two processes
    limit = Limit("tenant", "far-key", Rate(1000, 60))

    verdicts = [here.count([limit])[0] for _ in range(11)]
    seen_elsewhere = elsewhere.count([limit])[0]

    # Leases of 1, 3 and 7 slots came with the 2nd, 4th and 8th requests: 15 counted, 4 unused.
    assert [v.remaining for v in verdicts] == list(range(999, 988, -1))
    assert seen_elsewhere.remaining == 1000 - 16


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


@pytest.mark.parametrize("prefix", [0, 129, "64", 64.0, None])
def test_an_ipv6_prefix_that_is_no_prefix_length_fails_the_system_check(settings, prefix):
    from tenants.ratelimit import ipv6_prefix_check

    settings.AUTHZ = {**settings.AUTHZ, "RATE_LIMIT_IPV6_PREFIX": prefix}

    [error] = ipv6_prefix_check(None)

    assert error.id == "tenants.E002" and "from 1 to 128" in error.msg


def test_the_default_ipv6_prefix_passes_the_system_check():
    from tenants.ratelimit import ipv6_prefix_check

    assert ipv6_prefix_check(None) == []
