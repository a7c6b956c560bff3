"""The OpenAPI document and the Swagger UI page, served from local assets only."""

import json
import re
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from openapi_spec_validator import validate

from authz.endpoints import get_endpoint
from messages.schema import WHITESPACE

OPERATIONS = {
    ("/api/public", "get"): None,
    ("/api/private", "get"): "messages:private",
    ("/api/private-scoped", "get"): "messages:private-scoped",
    ("/api/messages", "get"): "messages:list",
    ("/api/messages", "post"): "messages:create",
    ("/api/messages/{message_id}", "get"): "messages:read",
    ("/api/messages/{message_id}", "delete"): "messages:delete",
}
PROTECTED = {operation: key for operation, key in OPERATIONS.items() if key}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']""")


@pytest.fixture
def schema(client, db) -> dict[str, Any]:
    """The OpenAPI document as JSON."""
    response = client.get("/api/schema", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


@pytest.mark.parametrize(
    ("query", "headers"),
    [({"format": "json"}, {}), ({}, {"HTTP_ACCEPT": "application/vnd.oai.openapi+json"})],
    ids=["format-param", "accept-header"],
)
def test_schema_is_valid_openapi_3(client, db, query, headers):
    response = client.get("/api/schema", query, **headers)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    document = json.loads(response.content)
    assert document["openapi"].startswith("3.")
    validate(document)


def test_schema_lists_every_operation_once_at_its_api_path(schema):
    operations = {
        (path, method)
        for path, item in schema["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }

    assert operations == set(OPERATIONS)
    assert not [path for path in schema["paths"] if path.startswith("/t/")]


def test_bearer_and_dpop_schemes_are_declared(schema):
    schemes = schema["components"]["securitySchemes"]

    assert (schemes["bearerAuth"]["type"], schemes["bearerAuth"]["scheme"]) == ("http", "bearer")
    assert (schemes["dpopAuth"]["type"], schemes["dpopAuth"]["scheme"]) == ("http", "dpop")


@pytest.mark.parametrize(("path", "method"), list(PROTECTED))
def test_protected_operations_use_bearer_and_state_their_default_scopes(schema, path, method):
    operation = schema["paths"][path][method]
    scopes = list(get_endpoint(PROTECTED[path, method]).default_scopes)

    assert {"bearerAuth": []} in operation["security"]
    assert {"dpopAuth": []} in operation["security"]  # either one
    assert operation["x-required-scopes"] == scopes
    stated = ", ".join(f"`{scope}`" for scope in scopes) or "none (any valid token)"
    assert f"Required scopes by default: {stated}." in operation["description"]
    assert {"401", "403"} <= set(operation["responses"])


def test_public_operation_needs_no_token(schema):
    operation = schema["paths"]["/api/public"]["get"]

    assert "x-required-scopes" not in operation
    assert "bearerAuth" not in json.dumps(operation.get("security", []))


@pytest.fixture
def docs_assets(client, db) -> list[str]:
    """URLs of every script, stylesheet and icon the docs page loads."""
    response = client.get("/api/docs")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    return ASSET.findall(response.content.decode())


def test_docs_load_no_asset_from_another_origin(docs_assets):
    assert docs_assets
    assert [url for url in docs_assets if re.match(r"(?i)(https?:)?//", url)] == []


@pytest.mark.parametrize("asset", ["swagger-ui-bundle.js", "swagger-ui.css"])
def test_docs_load_swagger_ui_from_local_static(docs_assets, asset):
    urls = [url for url in docs_assets if url.endswith(f"/{asset}")]

    assert len(urls) == 1
    assert urls[0].startswith("/static/")


def test_every_docs_asset_is_served(client, docs_assets):
    for url in docs_assets:
        response = client.get(url)

        assert response.status_code == 200, url
        assert b"".join(response.streaming_content), url
        response.close()
        assert finders.find(url.removeprefix("/static/")), url


def test_servers_offer_a_tenant_by_slug_and_the_tenant_of_the_host(schema):
    by_slug, by_host = schema["servers"]

    assert by_slug["url"] == "/t/{tenant}"
    assert by_slug["variables"]["tenant"]["default"] == "demo"
    assert by_host["url"] == "/"


def test_the_message_body_allows_no_other_property(schema):
    body = schema["paths"]["/api/messages"]["post"]["requestBody"]["content"]["application/json"]

    assert body["schema"] == {"$ref": "#/components/schemas/MessageRequest"}
    assert schema["components"]["schemas"]["MessageRequest"]["additionalProperties"] is False


@pytest.mark.parametrize(
    ("text", "taken"),
    [
        ("hi", True),
        (" " + "x" * 1000 + "\n", True),
        ("\ufeff", True),  # not whitespace to Python's strip()
        ("x" * 1001, False),
        ("", False),
        (" \t\x1c\x1f\x85\u3000 ", False),  # whitespace to Python, though not all to ECMAScript
        ("hi\x00", False),
    ],
)
def test_the_text_pattern_takes_what_the_server_takes(schema, text, taken):
    text_schema = schema["components"]["schemas"]["MessageRequest"]["properties"]["text"]

    assert "maxLength" not in text_schema  # it would count the untrimmed text
    assert (re.search(text_schema["pattern"], text) is not None) is taken


def test_the_text_patterns_whitespace_is_exactly_what_strip_removes():
    space = re.compile(f"[{WHITESPACE}]")

    assert [c for c in map(chr, range(0x110000)) if bool(space.fullmatch(c)) != c.isspace()] == []


def test_message_id_is_declared_as_the_positive_64_bit_integer_the_server_takes(schema):
    for method in ("get", "delete"):
        (parameter,) = schema["paths"]["/api/messages/{message_id}"][method]["parameters"]

        assert parameter["in"] == "path"
        assert parameter["schema"] == {
            "type": "integer",
            "format": "int64",
            "minimum": 1,
            "maximum": 2**63 - 1,
        }


def test_page_size_is_declared_with_the_range_the_server_takes(schema):
    parameters = {p["name"]: p for p in schema["paths"]["/api/messages"]["get"]["parameters"]}

    assert parameters["page_size"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 20,
    }
    assert "invalid_cursor" in parameters["cursor"]["description"]


@pytest.mark.parametrize(("path", "method"), list(OPERATIONS))
def test_every_error_status_the_server_gives_is_declared_with_the_error_body(schema, path, method):
    operation = schema["paths"][path][method]
    expected = {"404", "406", "429"}
    if OPERATIONS[path, method]:
        expected |= {"400", "401", "403", "503"}
    if "requestBody" in operation:
        expected.add("415")
    errors = {s: r for s, r in operation["responses"].items() if s.startswith(("4", "5"))}

    assert set(errors) == expected
    for response in errors.values():
        assert response["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
