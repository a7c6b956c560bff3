"""CORS per tenant: only a tenant's own origins may call its API from a browser."""

from collections.abc import Callable
from typing import Any

import pytest

ACME_ORIGIN = "https://app.acme.test"
GLOBEX_ORIGIN = "https://app.globex.test"
VIAS = {
    "host": ("/api/messages", "acme.localhost"),
    "prefix": ("/t/acme/api/messages", "testserver"),
}
PREFLIGHT = {
    "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "POST",
    "HTTP_ACCESS_CONTROL_REQUEST_HEADERS": "authorization, content-type",
}


@pytest.fixture
def tenants(make_tenant: Callable[..., Any]) -> None:
    """acme and globex, each listing only its own browser origin."""
    make_tenant("acme", cors_origins=[ACME_ORIGIN])
    make_tenant("globex", cors_origins=[GLOBEX_ORIGIN])


def preflight(client: Any, path: str, host: str, origin: str) -> Any:
    """A browser's preflight for a POST with Authorization and a JSON body."""
    return client.options(path, HTTP_HOST=host, HTTP_ORIGIN=origin, **PREFLIGHT)


def assert_refused_preflight(response: Any) -> None:
    """An empty 200 without CORS headers: the browser refuses, and nothing failed on our side."""
    assert (response.status_code, response.content) == (200, b"")
    assert "Access-Control-Allow-Origin" not in response
    assert "Access-Control-Allow-Headers" not in response


def assert_not_found(response: Any) -> None:
    """The API's 404 for an address no tenant is served at."""
    assert response.status_code == 404
    assert response.json()["code"] == "tenant_not_found"


def allowed_headers(response: Any) -> set[str]:
    """The request headers a preflight response allows, lower-cased."""
    value = response.get("Access-Control-Allow-Headers", "")
    return {name.strip().lower() for name in value.split(",")}


@pytest.mark.parametrize("via", list(VIAS))
def test_preflight_from_the_tenants_origin_is_allowed(client, tenants, via):
    response = preflight(client, *VIAS[via], ACME_ORIGIN)

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ACME_ORIGIN
    assert {"authorization", "content-type"} <= allowed_headers(response)
    assert "POST" in response["Access-Control-Allow-Methods"]


@pytest.mark.parametrize(
    "origin",
    [
        GLOBEX_ORIGIN,
        "http://app.acme.test",
        "https://app.acme.test:8443",
        "https://evil.app.acme.test",
        "https://app.acme.test.evil.test",
        "null",
    ],
    ids=["other-tenants", "http", "other-port", "subdomain", "suffix", "null"],
)
@pytest.mark.parametrize("via", list(VIAS))
def test_preflight_from_any_other_origin_gets_no_cors_headers(client, tenants, via, origin):
    response = preflight(client, *VIAS[via], origin)

    assert_refused_preflight(response)


@pytest.mark.parametrize(
    ("path", "host", "origin"),
    [
        ("/api/public", "acme.localhost", ACME_ORIGIN),
        ("/t/acme/api/public", "testserver", ACME_ORIGIN),
        ("/api/public", "globex.localhost", GLOBEX_ORIGIN),
        ("/t/globex/api/public", "testserver", GLOBEX_ORIGIN),
        ("/t/acme/api/private", "testserver", ACME_ORIGIN),
    ],
    ids=["acme-host", "acme-prefix", "globex-host", "globex-prefix", "error-response"],
)
def test_actual_request_from_the_tenants_origin_gets_the_header(
    client, tenants, path, host, origin
):
    response = client.get(path, HTTP_HOST=host, HTTP_ORIGIN=origin)

    assert response["Access-Control-Allow-Origin"] == origin


@pytest.mark.parametrize(
    ("path", "host", "origin"),
    [
        ("/api/public", "acme.localhost", GLOBEX_ORIGIN),
        ("/t/acme/api/public", "testserver", GLOBEX_ORIGIN),
        ("/api/public", "globex.localhost", ACME_ORIGIN),
        ("/t/globex/api/public", "acme.localhost", ACME_ORIGIN),
    ],
    ids=["acme-host", "acme-prefix", "globex-host", "prefix-beats-host"],
)
def test_actual_request_from_another_tenants_origin_gets_no_header(
    client, tenants, path, host, origin
):
    response = client.get(path, HTTP_HOST=host, HTTP_ORIGIN=origin)

    assert response.status_code == 200
    assert response.json()["message"].startswith("Hello from a public endpoint")
    assert "Access-Control-Allow-Origin" not in response


@pytest.mark.parametrize(
    ("path", "host"),
    [("/api/messages", "nobody.localhost"), ("/t/nobody/api/messages", "testserver")],
    ids=["host", "prefix"],
)
def test_unknown_tenant_gets_no_cors_headers(client, tenants, path, host):
    options = preflight(client, path, host, ACME_ORIGIN)
    response = client.get(path, HTTP_HOST=host, HTTP_ORIGIN=ACME_ORIGIN)

    assert_refused_preflight(options)
    assert_not_found(response)
    assert "Access-Control-Allow-Origin" not in response


def test_a_subdomain_of_a_tenants_host_gets_no_cors_headers(client, tenants):
    # An allowed host (ALLOWED_HOSTS has .localhost), so the tenant lookup of tenants/cors.py runs.
    options = preflight(client, "/api/messages", "evil.acme.localhost", ACME_ORIGIN)
    response = client.get("/api/messages", HTTP_HOST="evil.acme.localhost", HTTP_ORIGIN=ACME_ORIGIN)

    assert_refused_preflight(options)
    assert_not_found(response)
    assert "Access-Control-Allow-Origin" not in response


def test_disallowed_host_gets_no_cors_headers(client, tenants):
    # A preflight is answered before Django checks the host: the lookup meets DisallowedHost.
    options = preflight(client, "/api/messages", "evil.example", ACME_ORIGIN)
    response = client.get("/api/messages", HTTP_HOST="evil.example", HTTP_ORIGIN=ACME_ORIGIN)

    assert_refused_preflight(options)
    assert response.status_code == 400
    assert "Access-Control-Allow-Origin" not in response


@pytest.mark.parametrize(
    ("path", "host", "status"),
    [
        ("/admin/", "acme.localhost", 302),  # to the login page
        ("/admin/login/", "acme.localhost", 200),
        ("/t/acme/admin/", "testserver", 404),
        ("/t/acme/elsewhere", "testserver", 404),
    ],
)
def test_non_api_paths_get_no_cors_headers(client, tenants, path, host, status):
    response = client.get(path, HTTP_HOST=host, HTTP_ORIGIN=ACME_ORIGIN)
    options = preflight(client, path, host, ACME_ORIGIN)

    # Django's own answers, not an empty preflight answer from the CORS middleware.
    assert (response.status_code, options.status_code) == (status, status)
    assert "Access-Control-Allow-Origin" not in response
    assert "Access-Control-Allow-Origin" not in options


def test_a_browser_may_send_a_dpop_proof_and_read_the_nonce_and_challenge(client, tenants):
    path, host = VIAS["prefix"]
    asked = {**PREFLIGHT, "HTTP_ACCESS_CONTROL_REQUEST_HEADERS": "authorization, dpop"}

    options = client.options(path, HTTP_HOST=host, HTTP_ORIGIN=ACME_ORIGIN, **asked)
    refused = client.get(path, HTTP_HOST=host, HTTP_ORIGIN=ACME_ORIGIN)

    assert {"authorization", "dpop"} <= allowed_headers(options)
    exposed = {name.strip().lower() for name in refused["Access-Control-Expose-Headers"].split(",")}
    assert {"dpop-nonce", "www-authenticate"} <= exposed
