"""The lean API path (ops/middleware.py): what API requests skip, and what they still get."""

import logging
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from messages.views import PublicMessage
from ops.middleware import TOKEN_PATH

pytestmark = pytest.mark.django_db

# Every header an API answer carried before sessions, logins and messages were skipped.
API_HEADERS = {
    "Allow",
    "Content-Length",
    "Content-Type",
    "Cross-Origin-Opener-Policy",
    "Referrer-Policy",
    "Vary",
    "X-Content-Type-Options",
    "X-Frame-Options",
}


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The Django requests the public endpoint served."""
    served: list[Any] = []
    original = PublicMessage.get

    def get(self: PublicMessage, request: Any) -> Any:
        served.append(request._request)
        return original(self, request)

    monkeypatch.setattr(PublicMessage, "get", get)
    return served


@pytest.fixture
def signed_in(client: Any) -> Any:
    """A client with a staff session and a CSRF cookie, as a browser after the admin login."""
    staff = User.objects.create_user("op", password="a-long-password-1", is_staff=True)
    client.force_login(staff)
    client.get("/admin/login/")  # sets csrftoken
    return client


@pytest.mark.parametrize("path", ["/t/acme/api/public", "/api/public"])
def test_api_requests_read_no_session_user_or_message(signed_in, acme, seen, path):
    response = signed_in.get(path, HTTP_HOST="acme.localhost")

    assert response.status_code == 200
    [request] = seen
    assert not hasattr(request, "session")
    assert not hasattr(request, "_messages")
    assert "Set-Cookie" not in response.headers


def test_api_answers_keep_every_header(client, acme):
    response = client.get("/t/acme/api/public")

    assert set(response.headers) == API_HEADERS
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Vary"] == "origin"


def test_api_requests_are_still_logged_and_counted(client, acme, caplog):
    caplog.set_level(logging.INFO, logger="ops.middleware")

    client.get("/t/acme/api/public")

    [record] = [r for r in caplog.records if getattr(r, "event", "") == "api_request"]
    assert (record.tenant, record.status) == ("acme", 200)


def test_the_admin_still_has_sessions_csrf_and_messages(signed_in):
    page = signed_in.get("/admin/")

    assert page.status_code == 200
    assert page.wsgi_request.session.get("_auth_user_id")
    assert page.wsgi_request.user.username == "op"
    assert hasattr(page.wsgi_request, "_messages")
    assert page["X-Frame-Options"] == "DENY"


def test_a_post_to_the_admin_without_a_csrf_token_is_refused(signed_in):
    browser = Client(enforce_csrf_checks=True)
    browser.cookies = signed_in.cookies

    refused = browser.post("/admin/logout/")

    assert refused.status_code == 403


def test_the_api_docs_keep_the_web_middleware(signed_in):
    page = signed_in.get("/api/docs")

    assert page.status_code == 200
    assert hasattr(page.wsgi_request, "session")


@pytest.mark.parametrize(
    ("path", "lean"),
    [
        ("/api/public", True),
        ("/t/acme/api/messages/7", True),
        ("/authz/decision", True),
        ("/authz/decision/orders/1", True),
        ("/api/docs", False),
        ("/api/schema", False),
        ("/admin/login/", False),
        ("/authz/decisions", False),
        ("/t/acme/admin/", False),
    ],
)
def test_token_paths_are_the_api_and_decisions_but_not_the_docs(path, lean):
    assert bool(TOKEN_PATH.match(path)) is lean
