"""The quickstart's three endpoints, per tenant, by host and by /t/<slug>/ prefix."""

import pytest

from tests.fixtures import bearer

PUBLIC = "Hello from a public endpoint! You don't need to be authenticated to see this."
PRIVATE = "Hello from a private endpoint! You need to be authenticated to see this."
SCOPED = (
    "Hello from a private endpoint! You need to be authenticated and have a scope of "
    "read:messages to see this."
)


@pytest.mark.parametrize(
    ("path", "host"), [("/t/acme/api/", "testserver"), ("/api/", "acme.localhost")]
)
def test_three_endpoints_answer_with_the_quickstart_messages(client, acme, acme_tokens, path, host):
    token = acme_tokens.token(scope="read:messages")

    public = client.get(f"{path}public", HTTP_HOST=host)
    private = client.get(f"{path}private", HTTP_HOST=host, **bearer(token))
    scoped = client.get(f"{path}private-scoped", HTTP_HOST=host, **bearer(token))

    assert (public.status_code, public.json()) == (200, {"message": PUBLIC})
    assert (private.status_code, private.json()) == (200, {"message": PRIVATE})
    assert (scoped.status_code, scoped.json()) == (200, {"message": SCOPED})


def test_public_ignores_a_garbage_token(client, acme):
    response = client.get("/t/acme/api/public", HTTP_AUTHORIZATION="Bearer garbage")

    assert response.status_code == 200


def test_private_without_token_is_401_with_bare_challenge(client, acme):
    response = client.get("/t/acme/api/private")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="acme", DPoP algs="ES256"'
    assert response.json()["code"] == "not_authenticated"


def test_scoped_without_scope_is_403_insufficient_scope(client, acme, acme_tokens):
    response = client.get("/t/acme/api/private-scoped", **bearer(acme_tokens.token(scope="other")))

    assert response.status_code == 403
    assert response.json() == {
        "message": "You don't have access to this resource",
        "code": "insufficient_scope",
    }
    assert response["WWW-Authenticate"] == (
        'Bearer realm="acme", error="insufficient_scope", scope="read:messages", DPoP algs="ES256"'
    )


@pytest.mark.parametrize(
    "path", ["/t/acme/api/messages/1/2", "/t/acme/api/nothing", "/api/messages/", "/t/x y/api/"]
)
def test_an_unrouted_api_path_is_the_apis_json_404(client, acme, path):
    response = client.get(path, HTTP_HOST="acme.localhost")

    assert response.status_code == 404
    assert response.json() == {"message": "No such endpoint.", "code": "not_found"}


def test_an_unrouted_path_elsewhere_is_djangos_404_page(client, db):
    response = client.get("/nothing-here")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_an_accept_header_without_json_is_406_with_the_error_body(client, acme):
    response = client.get("/t/acme/api/public", HTTP_ACCEPT="application/xml")

    assert response.status_code == 406
    assert response.json()["code"] == "not_acceptable"
