"""The messages API over HTTP: CRUD per tenant, isolation, authorship, pages and bad input."""

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from django.test import Client

from messages.models import Message
from tests.fixtures import TokenFactory, bearer

ALL_SCOPES = "read:messages write:messages delete:messages"
VIAS = ("host", "prefix")
NOT_FOUND = {"message": "No such message.", "code": "not_found"}
BAD_PAGE_SIZE = {
    "message": "Invalid input.",
    "code": "invalid",
    "errors": {"page_size": ["A page size is from 1 to 100."]},
}
BAD_ID = {
    "message": "Invalid input.",
    "code": "invalid",
    "errors": {"id": ["A message id is a positive integer."]},
}


def api_root(slug: str, via: str) -> tuple[str, str]:
    """A tenant's API root and Host header, by hostname or by /t/<slug>/ prefix."""
    return ("/api/", f"{slug}.localhost") if via == "host" else (f"/t/{slug}/api/", "testserver")


@dataclass
class Api:
    """One tenant's messages API, called with one token unless told otherwise."""

    client: Client
    root: str
    host: str
    token: str

    def call(self, method: str, path: str = "", token: str | None = None, **extra: Any) -> Any:
        """``method`` on /messages``path`` with this API's host and a bearer token."""
        headers = bearer(token or self.token) if token != "" else {}
        url = f"{self.root}messages{path}"
        return getattr(self.client, method)(url, HTTP_HOST=self.host, **headers, **extra)

    def post(self, body: Any, token: str | None = None) -> Any:
        """POST a JSON body (a str is sent as is, so it may be broken JSON)."""
        data = body if isinstance(body, str) else json.dumps(body)
        return self.call("post", "", token, data=data, content_type="application/json")

    def get(self, message_id: object, token: str | None = None) -> Any:
        """GET one message."""
        return self.call("get", f"/{message_id}", token)

    def delete(self, message_id: object, token: str | None = None) -> Any:
        """DELETE one message."""
        return self.call("delete", f"/{message_id}", token)

    def page(self, token: str | None = None, **params: Any) -> Any:
        """GET the list, with query parameters."""
        return self.call("get", "", token, data=params)

    def listing(self) -> list[dict[str, Any]]:
        """Every message of a first page of up to 100, asserting the listing succeeded."""
        response = self.page(page_size=100)
        assert response.status_code == 200, response.content
        return response.json()["results"]

    def follow(self, url: str) -> Any:
        """GET an absolute URL the API returned, on the host it names."""
        parts = urlsplit(url)
        path = f"{parts.path}?{parts.query}" if parts.query else parts.path
        return self.client.get(path, HTTP_HOST=parts.netloc, **bearer(self.token))


@pytest.fixture
def globex(make_tenant: Callable[..., Any]) -> Any:
    """A second tenant on its own issuer, at globex.localhost or /t/globex/."""
    return make_tenant("globex")


@pytest.fixture
def beta(make_tenant: Callable[..., Any]) -> Any:
    """A tenant sharing acme's issuer and audience: acme's tokens are good here too."""
    return make_tenant("beta", issuer_name="acme", audiences=["https://api.acme.test"])


@pytest.fixture
def api(client: Client, tokens: Callable[..., TokenFactory]) -> Callable[..., Api]:
    """An Api for a tenant slug, with a token of its issuer carrying every message scope."""

    def make(slug: str, via: str = "prefix", issuer: str | None = None, **claims: Any) -> Api:
        factory = tokens(issuer or slug, f"https://api.{issuer or slug}.test")
        root, host = api_root(slug, via)
        return Api(client, root, host, factory.token(**{"scope": ALL_SCOPES, **claims}))

    return make


def rows(tenant: Any) -> list[int]:
    """Ids of a tenant's messages in the database, newest first."""
    return list(Message.objects.for_tenant(tenant).values_list("id", flat=True))


def seed(tenant: Any, count: int) -> list[int]:
    """Create ``count`` messages directly; their ids, oldest first."""
    scoped = Message.objects.for_tenant(tenant)
    return [scoped.create(text=f"m{i}", author="auth0|seed").id for i in range(count)]


# CRUD


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("slug", ["acme", "globex"])
def test_create_read_list_delete_per_tenant(acme, globex, api, slug, via):
    messages = api(slug, via)

    created = messages.post({"text": "hello"})
    body = created.json()

    assert created.status_code == 201
    assert set(body) == {"id", "text", "author", "created_at"}
    assert (body["text"], body["author"]) == ("hello", "auth0|user-1")
    assert messages.get(body["id"]).json() == body
    assert messages.listing() == [body]
    assert messages.delete(body["id"]).status_code == 204
    assert messages.get(body["id"]).status_code == 404
    assert messages.listing() == []


@pytest.mark.parametrize(
    ("via", "location"),
    [
        ("host", "http://acme.localhost/api/messages/{id}"),
        ("prefix", "http://testserver/t/acme/api/messages/{id}"),
    ],
)
def test_location_names_the_new_message_under_the_same_host_or_prefix(acme, api, via, location):
    messages = api("acme", via)

    created = messages.post({"text": "hello"})

    assert created["Location"] == location.format(id=created.json()["id"])
    fetched = messages.follow(created["Location"])
    assert (fetched.status_code, fetched.json()) == (200, created.json())


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("  hi \n", "hi"),
        ("x", "x"),
        ("é" * 1000, "é" * 1000),
        (" " + "x" * 1000 + " ", "x" * 1000),
    ],
    ids=["trimmed", "one-char", "1000-unicode", "1000-after-trim"],
)
def test_text_is_trimmed_and_may_be_1_to_1000_characters(acme, api, sent, stored):
    response = api("acme").post({"text": sent})

    assert (response.status_code, response.json()["text"]) == (201, stored)
    assert Message.objects.for_tenant(acme).get().text == stored


def test_author_is_the_token_subject(acme, api):
    response = api("acme", sub="auth0|alice").post({"text": "hi"})

    assert response.json()["author"] == "auth0|alice"
    assert Message.objects.for_tenant(acme).get().author == "auth0|alice"


def test_a_subject_of_any_length_posts_and_deletes_its_own_message(acme, api):
    author = api("acme", sub="auth0|" + "x" * 4000)  # longer than any varchar column would take

    created = author.post({"text": "hi"})

    assert created.status_code == 201, created.content
    assert Message.objects.for_tenant(acme).get().author == "auth0|" + "x" * 4000
    assert author.delete(created.json()["id"]).status_code == 204


def test_client_cannot_choose_the_author(acme, api):
    response = api("acme", sub="auth0|alice").post({"text": "hi", "author": "auth0|bob"})

    assert response.status_code == 400
    assert response.json()["errors"] == {"author": ["This field cannot be set."]}
    assert rows(acme) == []


# Isolation between tenants


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("method", ["get", "delete"])
def test_another_tenants_message_is_not_found(acme, globex, api, method, via):
    secret = api("acme", via).post({"text": "acme secret"}).json()

    response = getattr(api("globex", via), method)(secret["id"])

    assert (response.status_code, response.json()) == (404, NOT_FOUND)
    assert b"acme secret" not in response.content
    assert rows(acme) == [secret["id"]]


@pytest.mark.parametrize("via", VIAS)
def test_each_tenant_lists_only_its_own_messages(acme, globex, api, via):
    acme_api, globex_api = api("acme", via), api("globex", via)
    for client_api, text in [(acme_api, "a1"), (globex_api, "g1"), (acme_api, "a2")]:
        assert client_api.post({"text": text}).status_code == 201

    assert [m["text"] for m in acme_api.listing()] == ["a2", "a1"]
    assert [m["text"] for m in globex_api.listing()] == ["g1"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "", None),
        ("post", "", {"text": "intruder"}),
        ("get", "/{id}", None),
        ("delete", "/{id}", None),
    ],
)
def test_a_tenants_token_is_refused_by_another_tenant(
    acme, globex, api, acme_tokens, method, path, body
):
    own = api("globex").post({"text": "globex secret"}).json()
    extra = {"data": json.dumps(body), "content_type": "application/json"} if body else {}

    response = api("globex").call(
        method, path.format(id=own["id"]), acme_tokens.token(scope=ALL_SCOPES), **extra
    )

    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert b"globex secret" not in response.content
    assert rows(globex) == [own["id"]] and rows(acme) == []


def test_tenants_sharing_an_issuer_and_audience_still_see_only_their_own_rows(
    acme, beta, api, acme_tokens
):
    token = acme_tokens.token(scope=ALL_SCOPES)
    acme_api, beta_api = api("acme"), api("beta", issuer="acme")
    acme_api.token = beta_api.token = token
    in_acme = acme_api.post({"text": "in acme"}).json()
    in_beta = beta_api.post({"text": "in beta"}).json()

    assert [m["id"] for m in acme_api.listing()] == [in_acme["id"]]
    assert [m["id"] for m in beta_api.listing()] == [in_beta["id"]]
    assert beta_api.get(in_acme["id"]).json() == NOT_FOUND
    assert acme_api.get(in_beta["id"]).json() == NOT_FOUND
    assert beta_api.delete(in_acme["id"]).status_code == 404
    assert rows(acme) == [in_acme["id"]] and rows(beta) == [in_beta["id"]]


# Who may delete


def test_deleting_someone_elses_message_is_403_not_author(acme, api):
    message = api("acme", sub="auth0|alice").post({"text": "mine"}).json()

    response = api("acme", sub="auth0|bob").delete(message["id"])

    assert response.status_code == 403
    assert response.json() == {
        "message": "Only the author of this message may delete it.",
        "code": "not_author",
    }
    assert rows(acme) == [message["id"]]


@pytest.mark.parametrize(
    ("admin_scope", "scopes", "status", "code"),
    [
        ("admin:messages", f"{ALL_SCOPES} admin:messages", 204, None),
        ("admin:messages", ALL_SCOPES, 403, "not_author"),
        ("admin:messages", "admin:messages", 403, "insufficient_scope"),
        ("", f"{ALL_SCOPES} admin:messages", 403, "not_author"),
        ("admin:messages", f"{ALL_SCOPES} admin:other", 403, "not_author"),
    ],
    ids=["admin", "no-admin-scope", "admin-without-delete", "tenant-has-none", "other-admin"],
)
def test_the_tenants_admin_scope_deletes_any_message(
    make_tenant, api, admin_scope, scopes, status, code
):
    acme = make_tenant("acme", admin_scope=admin_scope)
    message = api("acme", sub="auth0|alice").post({"text": "mine"}).json()

    response = api("acme", sub="auth0|admin", scope=scopes).delete(message["id"])

    assert response.status_code == status
    assert (response.json()["code"] if code else None) == code
    assert rows(acme) == ([] if status == 204 else [message["id"]])


def test_an_empty_permission_is_no_admin_scope_when_the_tenant_has_none(make_tenant, api):
    acme = make_tenant("acme", scope_claims="permissions")
    message = api("acme", sub="auth0|alice", scope=None, permissions=ALL_SCOPES.split()).post(
        {"text": "mine"}
    )
    permissions = [*ALL_SCOPES.split(), ""]

    response = api("acme", sub="auth0|bob", scope=None, permissions=permissions).delete(
        message.json()["id"]
    )

    assert response.status_code == 403
    assert response.json()["code"] == "not_author"
    assert rows(acme) == [message.json()["id"]]


# Scopes


def test_a_tenant_scope_rule_replaces_the_default_for_its_endpoint(make_tenant, api):
    acme = make_tenant(
        "acme", scope_rules=[{"endpoint": "messages:create", "scopes": ["post:notes"]}]
    )

    refused = api("acme", scope="write:messages").post({"text": "hi"})
    allowed = api("acme", scope="post:notes").post({"text": "hi"})
    listing = api("acme", scope="post:notes").page()

    assert (refused.status_code, refused.json()["code"]) == (403, "insufficient_scope")
    assert 'scope="post:notes"' in refused["WWW-Authenticate"]
    assert allowed.status_code == 201
    assert rows(acme) == [allowed.json()["id"]]
    assert (listing.status_code, listing.json()["code"]) == (403, "insufficient_scope")


@pytest.mark.parametrize(
    ("method", "path", "scopes", "needed"),
    [
        ("get", "", "write:messages delete:messages", "read:messages"),
        ("post", "", "read:messages delete:messages", "write:messages"),
        ("get", "/{other}", "write:messages delete:messages", "read:messages"),
        ("delete", "/{other}", "read:messages write:messages", "delete:messages"),
        ("get", "/not-a-number", "write:messages", "read:messages"),
        ("delete", "/0", "read:messages", "delete:messages"),
    ],
    ids=["list", "create", "read-foreign", "delete-foreign", "read-bad-id", "delete-bad-id"],
)
def test_missing_scope_is_403_before_any_lookup(acme, globex, api, method, path, scopes, needed):
    other = api("globex").post({"text": "globex"}).json()["id"]
    extra = {"data": '{"text": "hi"}', "content_type": "application/json"}

    response = api("acme", scope=scopes).call(
        method, path.format(other=other), **(extra if method == "post" else {})
    )

    assert (response.status_code, response.json()["code"]) == (403, "insufficient_scope")
    assert f'scope="{needed}"' in response["WWW-Authenticate"]
    assert rows(acme) == [] and rows(globex) == [other]


# Pages


def test_no_messages_is_one_empty_page(acme, api):
    response = api("acme").page()

    assert (response.status_code, response.json()) == (
        200,
        {"next": None, "previous": None, "results": []},
    )


@pytest.mark.parametrize(
    ("count", "params", "first_page", "has_next"),
    [
        (5, {"page_size": 5}, 5, False),
        (6, {"page_size": 5}, 5, True),
        (1, {"page_size": 1}, 1, False),
        (20, {}, 20, False),
        (21, {}, 20, True),
        (101, {"page_size": 100}, 100, True),
    ],
    ids=[
        "exactly-page-size",
        "page-size-plus-one",
        "single",
        "default-exact",
        "default-plus-one",
        "max",
    ],
)
def test_page_boundaries(acme, api, count, params, first_page, has_next):
    ids = seed(acme, count)

    body = api("acme").page(**params).json()

    assert [m["id"] for m in body["results"]] == ids[::-1][:first_page]
    assert (body["next"] is not None, body["previous"]) == (has_next, None)


@pytest.mark.parametrize(
    "page_size",
    ["0", "101", "1000", "-1", "+5", "5.0", "1e1", " 5", "lots", "", "\u0665", "9" * 5000],
)
def test_a_page_size_outside_1_to_100_is_400_as_the_schema_says(acme, api, page_size):
    seed(acme, 3)

    response = api("acme").page(page_size=page_size)

    assert (response.status_code, response.json()) == (400, BAD_PAGE_SIZE)


@pytest.mark.parametrize(
    ("via", "next_prefix"),
    [
        ("host", "http://acme.localhost/api/messages?"),
        ("prefix", "http://testserver/t/acme/api/messages?"),
    ],
)
def test_following_next_visits_every_message_once_newest_first(acme, api, via, next_prefix):
    ids = seed(acme, 23)
    messages = api("acme", via)
    response, visited, sizes = messages.page(page_size=5), [], []

    while True:
        body = response.json()
        sizes.append(len(body["results"]))
        visited += [m["id"] for m in body["results"]]
        if body["next"] is None:
            break
        assert body["next"].startswith(next_prefix)
        response = messages.follow(body["next"])

    assert visited == ids[::-1]
    assert sizes == [5, 5, 5, 5, 3]


def test_pages_stay_stable_when_messages_arrive_meanwhile(acme, api):
    ids = seed(acme, 6)
    messages = api("acme")
    first = messages.page(page_size=3).json()

    seed(acme, 2)
    second = messages.follow(first["next"]).json()

    assert [m["id"] for m in first["results"] + second["results"]] == ids[::-1]


def encoded(querystring: str) -> str:
    """A cursor as DRF builds it: base64 of a query string."""
    return base64.b64encode(querystring.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    ["garbage", encoded("o=abc"), encoded("p=garbage"), encoded("r=1&p=2026-13-01")],
    ids=["not-base64", "bad-offset", "bad-position", "bad-date"],
)
def test_a_garbage_cursor_is_404_invalid_cursor_never_500(acme, client, api, cursor):
    client.raise_request_exception = False
    seed(acme, 3)

    response = api("acme").page(cursor=cursor)

    assert response.status_code != 500, "a crafted cursor must not crash the listing"
    assert response.json() == {"message": "Invalid cursor", "code": "invalid_cursor"}
    assert response.status_code == 404


# Bad input


def test_a_body_that_is_not_json_is_415_and_writes_nothing(acme, api):
    messages = api("acme")

    response = messages.call(
        "post", data="text=hi", content_type="application/x-www-form-urlencoded"
    )

    assert (response.status_code, response.json()["code"]) == (415, "unsupported_media_type")
    assert rows(acme) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param('{"text": ', None, id="invalid-json"),
        pytest.param("{}", "text", id="missing"),
        pytest.param({"text": ""}, "text", id="empty"),
        pytest.param({"text": " \n\t "}, "text", id="whitespace"),
        pytest.param({"text": "x" * 1001}, "text", id="1001-chars"),
        pytest.param({"text": " " + "x" * 1001}, "text", id="1001-chars-after-trim"),
        pytest.param({"text": "\x1d\u0085"}, "text", id="python-whitespace"),
        pytest.param({"text": "hi\x00"}, "text", id="nul"),
        pytest.param({"text": 42}, "text", id="number"),
        pytest.param({"text": 4.5}, "text", id="float"),
        pytest.param({"text": True}, "text", id="bool"),
        pytest.param({"text": ["hi"]}, "text", id="list"),
        pytest.param({"text": {"hi": 1}}, "text", id="object"),
        pytest.param({"text": None}, "text", id="null"),
        pytest.param({"text": "hi", "color": "red"}, "color", id="unknown-field"),
        pytest.param({"text": "hi", "author": "auth0|bob"}, "author", id="read-only-author"),
        pytest.param({"text": "hi", "id": 7}, "id", id="read-only-id"),
        pytest.param({"text": "hi", "created_at": "2020-01-01"}, "created_at", id="created-at"),
        pytest.param([{"text": "hi"}], "non_field_errors", id="array-body"),
        pytest.param('"hi"', "non_field_errors", id="string-body"),
        pytest.param("null", "non_field_errors", id="null-body"),
    ],
)
def test_bad_input_is_400_and_writes_nothing(acme, api, body, field):
    before = seed(acme, 1)

    response = api("acme").post(body)

    assert response.status_code == 400
    if field is None:
        assert response.json()["code"] == "parse_error"
        assert "errors" not in response.json()
    else:
        assert response.json()["message"] == "Invalid input."
        assert response.json()["code"] == "invalid"
        assert field in response.json()["errors"]
    assert rows(acme) == before


@pytest.mark.parametrize(
    "message_id",
    ["abc", "0", "-1", "1.5", "+1", "1e3", " 1", "\u0661", "9223372036854775808", "9" * 40],
    ids=[
        "letters",
        "zero",
        "negative",
        "decimal",
        "plus",
        "exponent",
        "space",
        "arabic-digit",
        "2**63",
        "huge",
    ],
)
@pytest.mark.parametrize("method", ["get", "delete"])
def test_a_bad_id_is_400_on_id_and_deletes_nothing(acme, api, method, message_id):
    before = seed(acme, 1)

    response = getattr(api("acme"), method)(quote(message_id, safe=""))

    assert (response.status_code, response.json()) == (400, BAD_ID)
    assert rows(acme) == before


def test_the_largest_id_is_valid_and_simply_not_found(acme, api):
    response = api("acme").get(2**63 - 1)

    assert (response.status_code, response.json()) == (404, NOT_FOUND)


# Methods


@pytest.mark.parametrize("with_token", [True, False], ids=["token", "no-token"])
@pytest.mark.parametrize(
    ("path", "allow"),
    [("", {"GET", "POST", "HEAD", "OPTIONS"}), ("/1", {"GET", "DELETE", "HEAD", "OPTIONS"})],
    ids=["list", "detail"],
)
@pytest.mark.parametrize("method", ["put", "patch"])
def test_put_and_patch_are_405_with_allow(acme, api, method, path, allow, with_token):
    seed(acme, 1)

    response = api("acme").call(
        method, path, None if with_token else "", data="{}", content_type="application/json"
    )

    assert (response.status_code, response.json()["code"]) == (405, "method_not_allowed")
    assert set(response["Allow"].split(", ")) == allow


def test_head_on_the_list_is_200_without_a_body(acme, api):
    seed(acme, 2)

    response = api("acme").call("head")

    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.parametrize("method", ["INITIAL", "DISPATCH", "GET_QUERYSET", "BREW"])
def test_made_up_methods_named_like_view_internals_are_405(client, acme, method):
    response = client.generic(method, "/t/acme/api/messages")

    assert response.status_code == 405


@pytest.mark.parametrize(
    ("scope", "status", "actions"),
    [("read:messages write:messages", 200, True), ("read:messages", 200, False), ("", 403, False)],
)
def test_options_with_a_valid_token_is_answered_not_a_server_error(
    acme, api, scope, status, actions
):
    response = api("acme", scope=scope).call("options")

    assert response.status_code == status, response.content
    assert ("actions" in response.json()) is actions  # POST's fields only with its scope
