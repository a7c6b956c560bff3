"""The forward-auth decision endpoint, in process: what a proxy sends, and what it gets back."""

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from devissuer import dpop
from devissuer.issuer import start_in_thread
from tenants.decision import header_value

pytestmark = pytest.mark.django_db

SECRET = "a-proxy-secret-of-enough-length-0123456789"
DECISION = "/authz/decision"
ROUTES = [
    {"methods": ["GET"], "path": "/orders/{id}", "scopes": ["read:orders", "admin"]},
    {"methods": ["GET"], "path": "/orders/admin", "scopes": ["admin"]},
    {"methods": ["POST"], "path": "/orders", "scopes": ["read:orders write:orders"]},
    {"methods": ["GET"], "path": "/health", "public": True},
    {"methods": ["GET"], "path": "/files/{path...}", "public": True},
    {"methods": ["*"], "path": "/any/{rest...}"},
]


@pytest.fixture(autouse=True)
def proxy_secret(settings: Any) -> None:
    """The endpoint on, as an operator turns it on."""
    settings.AUTHZ_PROXY_SECRET = SECRET


@pytest.fixture
def shop(make_tenant: Callable[..., Any]) -> Any:
    """A tenant with routes, reached at shop.localhost."""
    return make_tenant("shop", routes=ROUTES)


@pytest.fixture
def shop_tokens(tokens: Callable[..., Any]) -> Any:
    """Tokens of the shop's issuer."""
    return tokens("shop")


def forwarded(method: str, uri: str, host: str = "shop.localhost", **extra: str) -> dict[str, str]:
    """Traefik's and Caddy's description of the original request, with the secret."""
    return {
        "HTTP_X_AUTHZ_PROXY_SECRET": SECRET,
        "HTTP_X_FORWARDED_METHOD": method,
        "HTTP_X_FORWARDED_PROTO": "https",
        "HTTP_X_FORWARDED_HOST": host,
        "HTTP_X_FORWARDED_URI": uri,
        **extra,
    }


def decide(client: Any, method: str, uri: str, token: str | None = None, **extra: str) -> Any:
    """Ask for a decision as Traefik or Caddy would (a GET carrying the original request)."""
    if token is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client.get(DECISION, **forwarded(method, uri, **extra))


def identity(response: Any) -> dict[str, str]:
    """The X-Authz-* headers of a decision."""
    return {name: value for name, value in response.items() if name.startswith("X-Authz-")}


# 1. Invisible without the secret.


@pytest.mark.parametrize(
    "headers",
    [{}, {"HTTP_X_AUTHZ_PROXY_SECRET": "wrong"}, {"HTTP_X_AUTHZ_PROXY_SECRET": SECRET + "x"}],
)
def test_without_the_secret_the_endpoint_answers_like_an_unknown_url(client, shop, headers):
    unknown = client.get("/authz/nothing-here", **headers)
    for path in (DECISION, DECISION + "/orders/1"):
        response = client.get(path, HTTP_X_FORWARDED_URI="/health", **headers)

        assert response.status_code == unknown.status_code == 404
        assert response.content == unknown.content
        assert response["Content-Type"] == unknown["Content-Type"]


def test_with_no_secret_configured_even_an_empty_secret_header_is_refused(client, shop, settings):
    settings.AUTHZ_PROXY_SECRET = ""

    response = client.get(DECISION, HTTP_X_AUTHZ_PROXY_SECRET="", HTTP_X_FORWARDED_URI="/health")

    assert response.status_code == 404


# 2. Allow, with identity headers.


def test_an_allowed_request_gets_200_no_body_and_the_callers_identity(client, shop, shop_tokens):
    token = shop_tokens.token(sub="auth0|ann", scope="read:orders", org_id="org_1", azp="client-9")

    response = decide(client, "GET", "/orders/17?expand=1", token)

    assert response.status_code == 200, response.content
    assert response.content == b""
    assert identity(response) == {
        "X-Authz-Tenant": "shop",
        "X-Authz-Subject": "auth0|ann",
        "X-Authz-Scopes": "read:orders",
        "X-Authz-Organization": "org_1",
        "X-Authz-Client-Id": "client-9",
        "X-Authz-Route": "/orders/{id}",
    }


def test_an_allowed_decision_carries_the_headers_drf_gave_it_in_their_order(
    client, make_tenant, tokens
):
    make_tenant("shop", routes=ROUTES, rate_limit_per_subject="100/min")
    token = tokens("shop").token(sub="ann", scope="admin")

    response = decide(client, "GET", "/orders/admin", token)

    # The allowed path answers without DRF; this is what DRF's answer carried (merge21).
    assert [name for name, _ in response.items()] == [
        "X-Authz-Tenant",
        "X-Authz-Route",
        "X-Authz-Subject",
        "X-Authz-Scopes",
        "RateLimit-Policy",
        "RateLimit",
        "Allow",
        "X-Frame-Options",
        "Content-Length",
        "X-Content-Type-Options",
        "Referrer-Policy",
        "Cross-Origin-Opener-Policy",
    ]
    assert response["Allow"] == "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS, TRACE"
    assert response["Content-Length"] == "0" and response.content == b""


def test_a_public_route_reads_no_token_and_names_no_subject(client, shop):
    response = decide(client, "GET", "/health", token="not-even-a-token")

    assert response.status_code == 200
    assert identity(response) == {"X-Authz-Tenant": "shop", "X-Authz-Route": "/health"}


def test_header_values_never_carry_a_newline_or_non_ascii(client, shop, shop_tokens):
    token = shop_tokens.token(
        sub="\u00e8ve 100%", azp="app\r\nX-Authz-Tenant: other", scope="admin"
    )

    response = decide(client, "GET", "/orders/admin", token)

    assert response.status_code == 200, response.content
    assert response["X-Authz-Subject"] == "%C3%A8ve 100%25"
    assert response["X-Authz-Client-Id"] == "app%0D%0AX-Authz-Tenant: other"
    assert response["X-Authz-Tenant"] == "shop"
    assert header_value("auth0|plain user") == "auth0|plain user"


# 3. Refusals, as the in-process API gives them.


def test_no_route_is_403_no_route_before_any_token_work(client, shop):
    response = decide(client, "DELETE", "/orders/17", token="garbage")

    assert response.status_code == 403
    assert response.json()["code"] == "no_route"
    assert "No route matches DELETE /orders/17" in response.json()["message"]


def test_a_missing_token_is_401_with_the_tenants_challenges(client, shop):
    response = decide(client, "GET", "/orders/17")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith('Bearer realm="shop"')
    assert response.json()["code"] == "not_authenticated"


def test_a_short_token_gets_403_naming_every_alternative(client, shop, shop_tokens):
    token = shop_tokens.token(scope="write:orders")

    response = decide(client, "GET", "/orders/17", token)

    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "insufficient_scope"
    assert body["scopes"] == ["read:orders", "admin"]
    assert 'error="insufficient_scope", scope="read:orders"' in response["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("scope", "status"),
    [("read:orders", 403), ("write:orders", 403), ("read:orders write:orders", 200)],
)
def test_a_conjunctive_alternative_needs_every_scope(client, shop, shop_tokens, scope, status):
    response = decide(client, "POST", "/orders", shop_tokens.token(scope=scope))

    assert response.status_code == status


def test_the_literal_route_beats_the_parameter_route(client, shop, shop_tokens):
    reader = shop_tokens.token(scope="read:orders")

    assert decide(client, "GET", "/orders/17", reader).status_code == 200
    assert decide(client, "GET", "/orders/admin", reader).status_code == 403


@pytest.mark.parametrize(
    ("uri", "code"),
    [
        ("/files/..%2Forders%2Fadmin", "encoded_slash"),
        ("/files/../orders/admin", "dot_segment"),
        ("/files/%2e%2e/orders/admin", "dot_segment"),
        ("/any/x/../../orders/admin", "dot_segment"),
        ("/orders/7/../../files/x", "dot_segment"),  # the public route, through a stricter one
    ],
)
def test_encoded_and_dot_paths_are_refused_whichever_route_they_would_reach(
    client, shop, shop_tokens, uri, code
):
    reader = shop_tokens.token(scope="read:orders")

    response = decide(client, "GET", uri, reader)

    assert response.status_code == 403
    assert response.json()["code"] == code
    assert not identity(response)


def test_another_tenants_token_is_refused(client, shop, make_tenant, tokens):
    make_tenant("mall", routes=ROUTES)
    mall_token = tokens("mall").token(scope="admin")

    assert decide(client, "GET", "/orders/1", mall_token, host="mall.localhost").status_code == 200
    response = decide(client, "GET", "/orders/1", mall_token)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_issuer"  # shop does not list mall's issuer
    assert not identity(response)


def test_an_unknown_host_is_404_tenant_not_found(client, shop):
    response = decide(client, "GET", "/health", host="nobody.localhost")

    assert response.status_code == 404
    assert response.json()["code"] == "tenant_not_found"


@pytest.mark.parametrize(
    "extra",
    [
        {"HTTP_X_FORWARDED_METHOD": "GET POST"},
        {"HTTP_X_FORWARDED_PROTO": "gopher"},
        {"HTTP_X_FORWARDED_HOST": "a.localhost, shop.localhost"},
        {"HTTP_X_FORWARDED_URI": "orders/1"},
        {"HTTP_X_FORWARDED_URI": "/caf\xe9"},  # latin-1 bytes, not UTF-8
        {"HTTP_X_FORWARDED_URI": ""},  # a method without its URI: not decided as GET /
    ],
)
def test_an_unreadable_original_request_is_400(client, shop, extra):
    response = client.get(DECISION, **{**forwarded("GET", "/health"), **extra})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_forwarded_request"


def test_nginx_form_without_its_uri_is_400_not_the_decisions_own_path(client, shop):
    headers = {"HTTP_X_AUTHZ_PROXY_SECRET": SECRET, "HTTP_X_ORIGINAL_METHOD": "GET"}

    response = client.get(DECISION, HTTP_HOST="shop.localhost", **headers)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_forwarded_request"


def test_for_nginx_a_refusal_also_carries_its_body_in_a_header(client, shop):
    response = decide(client, "GET", "/orders/17", HTTP_X_AUTHZ_BODY_IN_HEADER="1")

    assert response.status_code == 401
    assert json.loads(response["X-Authz-Body"]) == response.json()
    assert "X-Authz-Body" not in decide(client, "GET", "/orders/17")


def test_the_clients_accept_header_is_not_negotiated(client, shop):
    response = decide(client, "GET", "/orders/17", HTTP_ACCEPT="text/html")

    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"


# 4. Every proxy's form of the original request.


def test_nginx_form_x_original(client, shop, shop_tokens):
    token = shop_tokens.token(scope="admin")
    headers = {
        "HTTP_X_AUTHZ_PROXY_SECRET": SECRET,
        "HTTP_X_ORIGINAL_METHOD": "GET",
        "HTTP_X_ORIGINAL_URI": "/orders/admin?x=1",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
    }

    response = client.get(DECISION, HTTP_HOST="shop.localhost", **headers)

    assert response.status_code == 200
    assert response["X-Authz-Route"] == "/orders/admin"


def test_envoy_form_path_after_the_prefix(client, shop, shop_tokens):
    token = shop_tokens.token(scope="read:orders write:orders")
    headers = {"HTTP_X_AUTHZ_PROXY_SECRET": SECRET, "HTTP_AUTHORIZATION": f"Bearer {token}"}

    allowed = client.post(DECISION + "/orders?z=1", HTTP_HOST="shop.localhost", **headers)
    wrong_method = client.put(DECISION + "/orders", HTTP_HOST="shop.localhost", **headers)
    custom = client.generic("PROPFIND", DECISION + "/any/x", HTTP_HOST="shop.localhost", **headers)

    assert allowed.status_code == 200, allowed.content
    assert allowed["X-Authz-Route"] == "/orders"
    assert wrong_method.status_code == 403
    assert wrong_method.json()["code"] == "no_route"
    assert custom.status_code == 200
    assert custom["X-Authz-Route"] == "/any/{rest...}"


# 5. DPoP: htu is the URL the client addressed.


def test_dpop_proof_names_the_original_url(client, shop, shop_tokens):
    key = dpop.new_key()
    token = shop_tokens.token(scope="admin", cnf={"jkt": dpop.key_thumbprint(key)})
    right = dpop.make_proof(key, "GET", "https://shop.localhost/orders/admin", access_token=token)
    wrong = dpop.make_proof(key, "GET", "http://testserver/authz/decision", access_token=token)
    headers = forwarded("GET", "/orders/admin?q=1", HTTP_AUTHORIZATION=f"DPoP {token}")

    served = client.get(DECISION, HTTP_DPOP=right, **headers)
    replayed = client.get(DECISION, HTTP_DPOP=right, **headers)
    misaddressed = client.get(DECISION, HTTP_DPOP=wrong, **headers)
    as_bearer = decide(client, "GET", "/orders/admin", token)

    assert served.status_code == 200, served.content
    assert (replayed.status_code, replayed.json()["code"]) == (401, "invalid_dpop_proof")
    assert "already used" in replayed.json()["message"]
    assert misaddressed.status_code == 401
    assert "htu" in misaddressed.json()["message"]
    assert (as_bearer.status_code, as_bearer.json()["code"]) == (401, "dpop_bound_token")


# 6. Limits, log, metrics, and the warm path.


def test_a_subject_over_its_limit_gets_429_with_retry_after(client, make_tenant, tokens):
    make_tenant("shop", routes=ROUTES, rate_limit_per_subject="2/min")
    token = tokens("shop").token(scope="admin")

    answers = [decide(client, "GET", "/orders/admin", token) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert int(answers[2]["Retry-After"]) > 0
    assert answers[2].json()["code"] == "rate_limited"
    assert "RateLimit" in answers[0] and "RateLimit-Policy" in answers[0]


def test_a_decision_is_logged_as_the_request_it_decided(client, shop, shop_tokens, caplog):
    token = shop_tokens.token(sub="auth0|ann", scope="read:orders")

    with caplog.at_level(logging.INFO, logger="ops.middleware"):
        decide(client, "GET", "/orders/9?secret=1", token)
        client.get(DECISION, HTTP_X_FORWARDED_URI="/health")  # no secret: not a decision

    [line] = [record for record in caplog.records if getattr(record, "event", "") == "api_request"]
    assert (line.method, line.path, line.status) == ("GET", "/orders/9", 200)
    assert (line.tenant, line.subject) == ("shop", "auth0|ann")


def test_metrics_label_a_decision_with_its_route_template(client, shop, shop_tokens):
    from ops.metrics import REQUESTS

    def count(endpoint: str, status: str) -> float:
        return REQUESTS.labels(
            "shop", endpoint, status, "ok" if status == "200" else "no_route"
        )._value.get()

    before = count("/orders/{id}", "200"), count("no_route", "403")
    decide(client, "GET", "/orders/5", shop_tokens.token(scope="admin"))
    decide(client, "GET", "/nowhere", shop_tokens.token(scope="admin"))

    assert count("/orders/{id}", "200") == before[0] + 1
    assert count("no_route", "403") == before[1] + 1


def test_a_warm_decision_makes_no_query(client, shop, shop_tokens):
    token = shop_tokens.token(scope="read:orders")
    assert decide(client, "GET", "/orders/1", token).status_code == 200

    with CaptureQueriesContext(connection) as queries:
        response = decide(client, "GET", "/orders/2", token)

    assert response.status_code == 200
    assert [query["sql"] for query in queries] == []


def test_refusals_count_against_the_address_the_proxy_saw(client, shop, settings):
    settings.AUTHZ = {**settings.AUTHZ, "RATE_LIMIT_ANONYMOUS_PER_ADDRESS": "2/min"}

    def anonymous(address: str) -> int:
        forwarded_for = f"10.9.9.9, {address}"  # the client's own entry first, never trusted
        return decide(client, "GET", "/orders/1", HTTP_X_FORWARDED_FOR=forwarded_for).status_code

    assert [anonymous("192.0.2.1") for _ in range(3)] == [401, 401, 429]
    assert anonymous("192.0.2.2") == 401


def test_a_short_proxy_secret_stops_the_platform(settings):
    from tenants.checks import proxy_secret_check

    settings.AUTHZ_PROXY_SECRET = "short"
    [error] = proxy_secret_check(None)
    settings.AUTHZ_PROXY_SECRET = SECRET

    assert error.id == "tenants.E003" and "at least 32" in error.msg
    assert proxy_secret_check(None) == []


def test_an_issuer_down_with_no_keys_held_is_503_with_retry_after(
    client, make_tenant, tokens, issuer_keys
):
    own_issuer = start_in_thread(issuer_keys)
    make_tenant("shop", routes=ROUTES, issuer=own_issuer.url_for("shop"))
    factory = tokens("shop")
    factory.server = own_issuer
    token = factory.token(scope="admin")
    own_issuer.stop()

    response = decide(client, "GET", "/orders/admin", token, HTTP_X_AUTHZ_BODY_IN_HEADER="1")

    assert response.status_code == 503
    assert response.json()["code"] == "issuer_unavailable"
    assert response["Retry-After"] == "30"
    assert json.loads(response["X-Authz-Body"])["code"] == "issuer_unavailable"


def test_a_nonce_tenant_gets_use_dpop_nonce_then_is_served(client, make_tenant, tokens):
    make_tenant("shop", routes=ROUTES, dpop_nonce=True)
    key = dpop.new_key()
    token = tokens("shop").token(scope="admin", cnf={"jkt": dpop.key_thumbprint(key)})
    url = "https://shop.localhost/orders/admin"
    headers = forwarded("GET", "/orders/admin", HTTP_AUTHORIZATION=f"DPoP {token}")

    first = client.get(
        DECISION, HTTP_DPOP=dpop.make_proof(key, "GET", url, access_token=token), **headers
    )
    nonce = first["DPoP-Nonce"]
    proof = dpop.make_proof(key, "GET", url, access_token=token, nonce=nonce)
    second = client.get(DECISION, HTTP_DPOP=proof, **headers)

    assert (first.status_code, first.json()["code"]) == (401, "use_dpop_nonce")
    assert second.status_code == 200, second.content
    assert second["DPoP-Nonce"] == nonce


def test_head_is_decided_as_get_and_options_as_itself(client, shop):
    head = decide(client, "HEAD", "/health")
    options = decide(client, "OPTIONS", "/health")

    assert head.status_code == 200  # the public route names GET: upstreams run it for HEAD
    assert head["X-Authz-Route"] == "/health"
    assert options.status_code == 403  # nothing implies OPTIONS
    assert options.json()["code"] == "no_route"


def test_a_catch_all_for_every_method_never_opens_head_on_a_protected_get(client, make_tenant):
    routes = [
        {"methods": ["GET"], "path": "/admin/{rest...}", "scopes": ["admin"]},
        {"methods": ["*"], "path": "/{any...}", "public": True},
    ]
    make_tenant("open", routes=routes)

    head = decide(client, "HEAD", "/admin/users", host="open.localhost")

    assert head.status_code == 401
    assert head.json()["code"] == "not_authenticated"
    assert decide(client, "HEAD", "/elsewhere", host="open.localhost").status_code == 200
