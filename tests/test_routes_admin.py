"""Routes in the admin: edited inline, overlaps shown on the page, the "try a request" box."""

from collections.abc import Callable
from typing import Any

import pytest

from tenants.models import Route
from tests.test_admin import change_post, change_url, inline_management

pytestmark = pytest.mark.django_db

ROUTES = [
    {"methods": ["GET"], "path": "/orders/{id}", "scopes": ["read:orders", "admin"]},
    {"methods": ["*"], "path": "/orders/{rest...}", "scopes": []},
    {"methods": ["GET"], "path": "/health", "public": True},
]


def route_rows(*rows: tuple[str, str, str, str]) -> dict[str, str]:
    """The routes inline with new rows of (methods, path, public, scopes)."""
    data = inline_management("routes", len(rows))
    for index, (methods, path, public, scopes) in enumerate(rows):
        data |= {
            f"routes-{index}-position": str(index),
            f"routes-{index}-methods": methods,
            f"routes-{index}-path": path,
            f"routes-{index}-scopes": scopes,
        }
        if public:
            data[f"routes-{index}-public"] = "on"
    return data


@pytest.fixture
def operated(make_tenant: Callable[..., Any], django_user_model: Any, client: Any) -> tuple:
    """A staff operator of shop only (other exists too), logged in."""
    shop = make_tenant("shop", routes=ROUTES)
    other = make_tenant("other", routes=[{"methods": ["GET"], "path": "/secret"}])
    user = django_user_model.objects.create_user("op", password="pw-op-123", is_staff=True)
    shop.operators.add(user)
    client.force_login(user)
    return client, shop, other


def test_operator_adds_routes_inline_normalized_and_in_order(operated: tuple) -> None:
    client, shop, _ = operated
    shop.routes.all().delete()
    rows = route_rows(
        ("get, head", "/items/%7Eall/", "", "read:items\nadmin  all"), ("POST", "/items", "", "")
    )

    response = client.post(change_url(shop), change_post(shop, **rows))

    assert response.status_code == 302, response.content.decode()[:3000]
    stored = list(shop.routes.values_list("methods", "path", "scopes"))
    assert stored == [
        (["GET", "HEAD"], "/items/~all", ["read:items", "admin all"]),
        (["POST"], "/items", []),
    ]


def test_overlapping_routes_are_refused_on_the_page_naming_both(operated: tuple) -> None:
    client, shop, _ = operated
    shop.routes.all().delete()
    rows = route_rows(("GET POST", "/a/{x}", "", ""), ("POST", "/a/{y}", "", ""))

    response = client.post(change_url(shop), change_post(shop, **rows))

    page = response.content.decode()
    assert response.status_code == 200
    assert "route 1 (GET,POST /a/{x}) and route 2 (POST /a/{y}) match exactly" in page
    assert not shop.routes.exists()


@pytest.mark.parametrize(
    ("row", "error"),
    [
        (("GET", "/a//b", "", ""), "A path has no empty segment"),
        (("FETCH", "/a", "", ""), "is not one of"),
        (("GET", "/a", "on", "read"), "A public route takes no scopes."),
        (("GET", "/{id}/{id}", "", ""), "Each parameter name appears once"),
    ],
)
def test_a_bad_route_shows_its_error_and_saves_nothing(
    operated: tuple, row: tuple[str, str, str, str], error: str
) -> None:
    client, shop, _ = operated
    shop.routes.all().delete()

    response = client.post(change_url(shop), change_post(shop, **route_rows(row)))

    assert response.status_code == 200
    assert error in response.content.decode()
    assert not shop.routes.exists()


def test_the_try_box_shows_the_route_hit_and_why(operated: tuple) -> None:
    client, shop, _ = operated

    page = client.get(change_url(shop), {"try_method": "GET", "try_path": "/orders/42"})

    text = page.content.decode()
    assert 'id="try-route-code">matched<' in text
    assert "route 1 (GET /orders/{id}) is the most specific route for GET /orders/42." in text
    assert "all of: read:orders or all of: admin" in text
    assert "<code>id</code> = <code>42</code>" in text
    assert "route 2 (* /orders/{rest...}) matches too, but is less specific." in text


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "/nothing", "no_route"),
        ("POST", "/health", "no_route"),
        ("GET", "/orders/..%2Fadmin", "encoded_slash"),
        ("GET", "/a//b", "empty_segment"),
    ],
)
def test_the_try_box_shows_refusals_never_a_500(
    operated: tuple, method: str, path: str, code: str
) -> None:
    client, shop, _ = operated

    page = client.get(change_url(shop), {"try_method": method, "try_path": path})

    assert page.status_code == 200
    assert f'id="try-route-code">{code}<' in page.content.decode()


def test_the_try_box_of_another_tenant_is_out_of_an_operators_reach(operated: tuple) -> None:
    client, _, other = operated

    page = client.get(change_url(other), {"try_method": "GET", "try_path": "/secret"})

    assert page.status_code in (302, 403, 404)
    assert "try-route-code" not in page.content.decode()


def test_routes_stored_past_validation_are_shown_as_refusing_everything(operated: tuple) -> None:
    client, shop, _ = operated
    Route.objects.create(tenant=shop, position=9, methods=["GET"], path="/orders/{other}")

    page = client.get(change_url(shop), {"try_method": "GET", "try_path": "/health"})

    text = page.content.decode()
    assert 'id="try-route-code">no_route<' in text
    assert "match exactly the same requests" in text
