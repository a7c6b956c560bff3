"""The token debugger checks a token against a tenant's route: method and path, not endpoint."""

from collections.abc import Callable
from typing import Any

import pytest

from tests.test_debugger import debugger_url

pytestmark = pytest.mark.django_db

ROUTES = [
    {"methods": ["GET"], "path": "/orders/{id}", "scopes": ["read:orders", "admin"]},
    {"methods": ["POST"], "path": "/orders", "scopes": ["read:orders write:orders"]},
    {"methods": ["GET"], "path": "/health", "public": True},
    {"methods": ["*"], "path": "/any/{rest...}"},
]


@pytest.fixture
def shop(make_tenant: Callable[..., Any]) -> Any:
    """A tenant with routes on its own issuer."""
    return make_tenant("shop", routes=ROUTES)


def run_route(client: Any, tenant: Any, token: str, method: str, path: str) -> Any:
    """POST the debugger form with a route method and path; the answer."""
    data = {"endpoint": "", "route_method": method, "route_path": path, "token": token}
    response = client.post(debugger_url(tenant), {"url": "", "proof": "", **data})
    assert response.status_code == 200
    assert response.context["problem"] is None, response.context["problem"]
    return response.context["answer"]


@pytest.mark.parametrize(
    ("method", "path", "scope", "served", "code"),
    [
        ("GET", "/orders/7", "read:orders", True, ""),
        ("GET", "/orders/7", "admin", True, ""),
        ("GET", "/orders/7", "write:orders", False, "insufficient_scope"),
        ("POST", "/orders", "read:orders", False, "insufficient_scope"),
        ("POST", "/orders", "read:orders write:orders", True, ""),
        ("PUT", "/any/a/b", "", True, ""),
        ("DELETE", "/orders/7", "admin", False, "no_route"),
        ("GET", "/orders/..%2Fadmin", "admin", False, "encoded_slash"),
    ],
)
def test_a_token_is_checked_against_the_routes_scope_alternatives(
    admin_client: Any,
    shop: Any,
    tokens: Callable[..., Any],
    method: str,
    path: str,
    scope: str,
    served: bool,
    code: str,
) -> None:
    token = tokens("shop").token(scope=scope)

    answer = run_route(admin_client, shop, token, method, path)

    assert (answer.served, answer.code) == (served, code)
    if code == "insufficient_scope":
        assert answer.status == 403
        assert any("one of these sets in full" in note for note in answer.notes)


def test_a_public_route_needs_no_token(admin_client: Any, shop: Any) -> None:
    answer = run_route(admin_client, shop, "not-a-token", "GET", "/health")

    assert answer.served
    assert "A public route: no token is looked at." in answer.notes


def test_a_bad_token_on_a_route_gets_the_apis_refusal(
    admin_client: Any, shop: Any, tokens: Callable[..., Any]
) -> None:
    token = tokens("shop").token(scope="admin", aud="https://elsewhere.test")

    answer = run_route(admin_client, shop, token, "GET", "/orders/7")

    assert (answer.status, answer.code) == (401, "invalid_audience")
    assert [c.name for c in answer.checks if c.state == "failed"] == ["audience"]


def test_neither_endpoint_nor_route_path_is_a_form_error(admin_client: Any, shop: Any) -> None:
    data = {"endpoint": "", "route_path": "", "token": "x", "url": "", "proof": ""}
    response = admin_client.post(debugger_url(shop), data)

    assert "Choose an endpoint, or enter a route path." in response.content.decode()
