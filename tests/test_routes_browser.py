"""Routes in the admin in headless Chromium: added inline, then tried in the "try a request" box."""

import pytest

from tenants.models import Tenant
from tests.test_admin_browser import add_tenant, navigate, open_page, superuser  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def test_operator_adds_a_route_and_tries_a_request(open_page, superuser, issuer):  # noqa: F811
    page = open_page("root")
    add_tenant(page, "routed", issuer.url_for("routed"))

    page.get_by_text("Add another Route").click()
    page.fill("#id_routes-0-methods", "GET")
    page.fill("#id_routes-0-path", "/orders/{id}")
    page.fill("#id_routes-0-scopes", "read:orders\nadmin")
    navigate(page, "input[name=_continue]")
    assert "was changed successfully" in page.inner_text(".messagelist")
    route = Tenant.objects.get(slug="routed").routes.get()
    assert (route.methods, route.path, route.scopes) == (
        ["GET"],
        "/orders/{id}",
        ["read:orders", "admin"],
    )

    page.select_option("select[name=try_method]", "GET")
    page.fill("input[name=try_path]", "/orders/42?x=1")
    navigate(page, "#try-route-button")
    assert page.inner_text("#try-route-code") == "matched"
    assert "route 1 (GET /orders/{id})" in page.inner_text("#try-route-reason")
    assert "all of: read:orders or all of: admin" in page.inner_text("#try-route-demands")

    page.fill("input[name=try_path]", "/orders/..%2Fadmin")
    navigate(page, "#try-route-button")
    assert page.inner_text("#try-route-code") == "encoded_slash"
