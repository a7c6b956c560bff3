"""Which tenant a request belongs to: path prefix, host, default; and tenants kept apart."""

import pytest

from tests.fixtures import bearer

NOT_FOUND = {"message": "No tenant is served at this address.", "code": "tenant_not_found"}
PUBLIC = "Hello from a public endpoint! You don't need to be authenticated to see this."


@pytest.mark.parametrize(
    ("path", "host"),
    [
        ("/api/private", "acme.localhost"),
        ("/api/private", "acme.localhost:8000"),
        ("/api/private", "ACME.LOCALHOST"),
        ("/api/private", "Acme.Localhost:8443"),
        ("/t/acme/api/private", "testserver"),
        ("/t/acme/api/private", "unknown.localhost"),
    ],
)
def test_a_tenant_is_resolved_by_host_or_path_prefix(client, acme, acme_tokens, path, host):
    response = client.get(path, HTTP_HOST=host, **bearer(acme_tokens.token()))

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("path", "host"),
    [
        ("/t/nobody/api/private", "testserver"),
        ("/t/nobody/api/public", "testserver"),
        ("/api/private", "nobody.localhost"),
        ("/api/private", "testserver"),
        ("/api/private", "acme.localhost.localhost"),
        ("/api/private", "www.acme.localhost"),
    ],
)
def test_an_unknown_tenant_is_404_before_any_token_work(client, acme, issuer, path, host):
    fetches = issuer.hits("/jwks.json")

    response = client.get(path, HTTP_HOST=host, HTTP_AUTHORIZATION="Bearer garbage")

    assert (response.status_code, response.json()) == (404, NOT_FOUND)
    assert "WWW-Authenticate" not in response
    assert issuer.hits("/jwks.json") == fetches


def test_an_unknown_tenant_fetches_no_key_even_for_a_well_formed_token(
    client, acme, acme_tokens, issuer
):
    fetches = issuer.hits("/jwks.json")

    response = client.get("/t/nobody/api/private", **bearer(acme_tokens.token()))

    assert (response.status_code, issuer.hits("/jwks.json")) == (404, fetches)


@pytest.mark.parametrize(
    ("path", "host"),
    [
        ("/t/acme/api/private", "testserver"),
        ("/t/acme/api/public", "testserver"),
        ("/api/private", "acme.localhost"),
        ("/api/public", "acme.localhost"),
    ],
)
def test_an_inactive_tenant_is_404(client, make_tenant, acme_tokens, path, host):
    make_tenant("acme", active=False)

    response = client.get(path, HTTP_HOST=host, **bearer(acme_tokens.token()))

    assert (response.status_code, response.json()) == (404, NOT_FOUND)


def test_the_default_tenant_serves_an_unmatched_host(client, acme, settings):
    settings.AUTHZ = {**settings.AUTHZ, "DEFAULT_TENANT": "acme"}

    response = client.get("/api/public", HTTP_HOST="other.localhost")

    assert (response.status_code, response.json()) == (200, {"message": PUBLIC})


def test_the_default_tenant_verifies_tokens_as_that_tenant(client, acme, acme_tokens, settings):
    settings.AUTHZ = {**settings.AUTHZ, "DEFAULT_TENANT": "acme"}

    response = client.get("/api/private", HTTP_HOST="testserver", **bearer(acme_tokens.token()))

    assert response.status_code == 200


def test_there_is_no_default_tenant_by_default(client, acme):
    response = client.get("/api/public", HTTP_HOST="other.localhost")

    assert (response.status_code, response.json()) == (404, NOT_FOUND)


@pytest.mark.parametrize("path", ["/t/nobody/api/public", "/t/beta/api/public"])
def test_the_default_tenant_never_answers_for_an_unknown_slug(
    client, acme, make_tenant, settings, path
):
    make_tenant("beta", active=False)
    settings.AUTHZ = {**settings.AUTHZ, "DEFAULT_TENANT": "acme"}

    response = client.get(path)

    assert (response.status_code, response.json()) == (404, NOT_FOUND)


def test_an_inactive_default_tenant_serves_nothing(client, make_tenant, settings):
    make_tenant("acme", active=False)
    settings.AUTHZ = {**settings.AUTHZ, "DEFAULT_TENANT": "acme"}

    response = client.get("/api/public", HTTP_HOST="other.localhost")

    assert (response.status_code, response.json()) == (404, NOT_FOUND)


# --- tenants kept apart ------------------------------------------------------------------------


@pytest.mark.parametrize(("issued_by", "sent_to"), [("acme", "beta"), ("beta", "acme")])
def test_a_token_of_another_issuer_is_refused(client, make_tenant, tokens, issued_by, sent_to):
    make_tenant("acme")
    make_tenant("beta")

    own = client.get(f"/t/{issued_by}/api/private", **bearer(tokens(issued_by).token()))
    other = client.get(f"/t/{sent_to}/api/private", **bearer(tokens(issued_by).token()))

    assert own.status_code == 200
    assert (other.status_code, other.json()["code"]) == (401, "invalid_issuer")
    assert f'realm="{sent_to}", error="invalid_token"' in other["WWW-Authenticate"]


def test_another_issuers_claims_signed_with_its_own_key_are_refused(client, make_tenant, tokens):
    make_tenant("acme")
    make_tenant("beta")
    token = tokens("acme").token(iss=tokens("beta").issuer, aud="https://api.beta.test")

    response = client.get("/t/beta/api/private", **bearer(token))

    assert (response.status_code, response.json()["code"]) == (401, "unknown_key")


@pytest.fixture
def same_issuer(make_tenant):
    """Acme and beta trust the same issuer, each for its own audience."""
    make_tenant("acme", audiences=["https://api.acme.test"])
    make_tenant("beta", issuer_name="acme", audiences=["https://api.beta.test"])


@pytest.mark.parametrize(
    ("audience", "tenant", "status", "code"),
    [
        ("https://api.acme.test", "acme", 200, None),
        ("https://api.beta.test", "beta", 200, None),
        ("https://api.acme.test", "beta", 401, "invalid_audience"),
        ("https://api.beta.test", "acme", 401, "invalid_audience"),
    ],
)
def test_tenants_of_one_issuer_are_kept_apart_by_audience(
    client, same_issuer, tokens, audience, tenant, status, code
):
    token = tokens("acme", audience).token()

    response = client.get(f"/t/{tenant}/api/private", **bearer(token))

    assert (response.status_code, response.json().get("code")) == (status, code)


def test_the_path_prefix_wins_over_the_host(client, make_tenant, tokens):
    make_tenant("acme")
    make_tenant("beta")
    token = tokens("acme").token()

    to_beta = client.get("/t/beta/api/private", HTTP_HOST="acme.localhost", **bearer(token))
    to_acme = client.get("/t/acme/api/private", HTTP_HOST="beta.localhost", **bearer(token))

    assert (to_beta.status_code, to_beta.json()["code"]) == (401, "invalid_issuer")
    assert 'realm="beta"' in to_beta["WWW-Authenticate"]
    assert to_acme.status_code == 200


def test_a_host_serves_only_its_own_tenant(client, make_tenant, tokens):
    make_tenant("acme")
    make_tenant("beta")

    response = client.get(
        "/api/private", HTTP_HOST="beta.localhost", **bearer(tokens("acme").token())
    )

    assert (response.status_code, response.json()["code"]) == (401, "invalid_issuer")
