"""No admin URL answers 500: every admin route, found from the URL configuration (so a view added
later is covered too), asked with malformed ids and garbage bodies, as a superuser and as a tenant
operator. Each case expects a 4xx, a redirect, or a page re-rendered with its errors."""

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

pytestmark = pytest.mark.django_db

PASSWORD = "Kx7-operator-passphrase"
MALFORMED_IDS = ["abc", "-1", "1.5", "%00", "_00", "9" * 1000, "%C3%BC", "%E2%80%AE1", "%FF", "0x1"]
PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")
# Not followed with a body: logout ends the session the sweep runs in.
LOGOUT = "/admin/logout/"


def routes(patterns: list, prefix: str = "") -> Iterator[str]:
    """Every route under ``prefix``, as its pattern text (regex groups and ``<converters>``)."""
    for entry in patterns:
        text = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from routes(entry.url_patterns, text)
        elif isinstance(entry, URLPattern):
            yield text


def admin_routes() -> list[str]:
    """The admin's routes and ours under /admin/."""
    return sorted(
        {route for route in routes(get_resolver().url_patterns) if route.startswith("admin/")}
    )


def fill(route: str, value: str) -> str | None:
    """The URL of ``route`` with every parameter set to ``value``; None for regex routes."""
    if route.startswith("admin/^") or "(?P<" in route:
        return None
    return "/" + PARAMETER.sub(value, route)


def regex_urls() -> list[str]:
    """URLs for the admin's regex routes: each app's index, and the catch-all."""
    return [
        "/admin/auth/",
        "/admin/tenants/",
        "/admin/nothing-here/",
        "/admin/%00/",
        "/admin/x" * 300,
    ]


BODIES: dict[str, dict[str, Any]] = {
    "empty form": {"data": {}},
    "half a tenant": {
        "data": {"slug": "x", "name": "", "leeway": "abc", "audiences-TOTAL_FORMS": "1"}
    },
    "wrong types": {
        "data": {
            "leeway": ["1", "2"],
            "active": "maybe",
            "operators": "abc",
            "algorithms": "HS256",
            "audiences-TOTAL_FORMS": "abc",
            "audiences-INITIAL_FORMS": "-5",
            "is_superuser": "yes",
            "groups": ["x", "-1"],
            "user_permissions": "9" * 50,
            "date_joined_0": "not a date",
            "last_login_1": "25:99",
        }
    },
    "huge values": {
        "data": {
            "slug": "s" * 100_000,
            "name": "n" * 100_000,
            "leeway": "9" * 5000,
            "audiences-TOTAL_FORMS": "9" * 30,
            "audiences-INITIAL_FORMS": "9" * 30,
            "username": "u" * 100_000,
            "password1": "p" * 100_000,
            "password2": "p" * 100_000,
        }
    },
    "null bytes": {
        "data": {
            "slug": "a\x00b",
            "name": "\x00",
            "domain": "a\x00.test",
            "username": "\x00",
            "name\x00": "x",
            "audiences-TOTAL_FORMS": "1\x00",
            "audiences-0-audience": "\x00",
        }
    },
    "bad action": {
        "data": {"action": "refresh_keys_action", "index": "0", "_selected_action": ["abc", "-1"]}
    },
    "huge id action": {
        "data": {"action": "refresh_keys_action", "index": "0", "_selected_action": ["9" * 1000]}
    },
    "unknown action": {
        "data": {"action": "no_such_action", "index": "0", "_selected_action": ["9" * 1000]}
    },
    "delete action on garbage": {
        "data": {"action": "delete_selected", "index": "0", "_selected_action": ["%00", "\x00"]}
    },
    "binary": {"data": bytes(range(256)) * 64, "content_type": "application/octet-stream"},
    "json": {"data": '{"slug": [1, {"x": null}]', "content_type": "application/json"},
    "multipart without boundary": {"data": b"--x\r\n\r\n", "content_type": "multipart/form-data"},
    "broken multipart": {
        "data": b'--b\r\nContent-Disposition: form-data; name="slug"\r\n\r\nx',
        "content_type": "multipart/form-data; boundary=b",
    },
    "urlencoded garbage": {
        "data": b"%%%=&&=%ZZ&slug=%00&\xff\xfe=\xff",
        "content_type": "application/x-www-form-urlencoded",
    },
}
QUERIES = [
    "?q=%00",
    "?q=" + "x" * 5000,
    "?o=abc",
    "?o=-99.x",
    "?p=-1",
    "?p=abc",
    "?health=bogus",
    "?active__exact=maybe",
    "?_to_field=password",
    "?e=1",
    "?all=&_popup=abc",
    "?id__gt=abc",
]


@pytest.fixture
def objects(make_tenant) -> dict[str, Any]:
    """A tenant (with an operator), a superuser and a group: the ids a sweep also uses."""
    acme = make_tenant("acme")
    operator = User.objects.create_user("op", "op@example.test", PASSWORD, is_staff=True)
    acme.operators.add(operator)
    root = User.objects.create_superuser("root", "root@example.test", PASSWORD)
    group = Group.objects.create(name="ops")
    return {"tenant": acme, "operator": operator, "root": root, "group": group}


def bodies_for(route: str, real_id: bool) -> list[str]:
    """Every body, except where one would delete the sweep's own objects (any POST confirms)."""
    if real_id and route.endswith("/delete/"):
        return ["empty form"]
    if real_id or "<" not in route:
        return list(BODIES)
    return ["empty form", "wrong types", "binary"]


def sweep(user: User, objects: dict[str, Any]) -> list[str]:
    """Every admin URL with every malformed id and body; the cases that answered 5xx."""
    client = Client(raise_request_exception=False)
    client.force_login(user)
    real_ids = sorted({str(obj.pk) for obj in objects.values()})
    failures: list[str] = []

    def ask(method: str, url: str, body: str | None = None) -> None:
        options = BODIES[body] if body else {}
        response = getattr(client, method)(url, **options)
        if response.status_code >= 500:
            failures.append(f"{method.upper()} {url[:120]} [{body}] -> {response.status_code}")
        if not response.wsgi_request.user.is_authenticated:
            client.force_login(user)

    for route in admin_routes():
        for value in (MALFORMED_IDS if "<" in route else [""]) + real_ids:
            url = fill(route, value)
            if url is None or url == LOGOUT:
                continue
            ask("get", url)
            for query in QUERIES if "<" not in route else []:
                ask("get", url + query)
            for body in bodies_for(route, value in real_ids):
                ask("post", url, body)
    for url in regex_urls():
        ask("get", url)
        ask("post", url, "wrong types")
    return failures


def test_the_sweep_covers_every_custom_admin_view():
    found = admin_routes()

    for route in (
        "admin/tenants/tenant/<path:object_id>/refresh-keys/",
        "admin/tenants/tenant/<path:object_id>/check-issuer/",
        "admin/login-lockouts/",
        "admin/auth/user/<id>/password/",
        "admin/tenants/tenant/<path:object_id>/change/",
        "admin/auth/group/<path:object_id>/delete/",
        "admin/auth/user/<path:object_id>/history/",
        "admin/r/<path:content_type_id>/<path:object_id>/",
    ):
        assert route in found, found


@pytest.mark.parametrize("who", ["root", "operator"])
def test_no_admin_url_answers_500_to_malformed_ids_or_garbage(objects, who):
    failures = sweep(objects[who], objects)

    assert failures == [], "\n".join(failures)
    assert objects["tenant"].__class__.objects.filter(slug="acme").exists()
