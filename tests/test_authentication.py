"""The bearer header, parsed defensively, and the principal it becomes."""

import base64
import hashlib
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from authz.authentication import Principal, TenantTokenAuthentication
from tenants.directory import directory
from tests.fixtures import bearer

PRIVATE = "/t/acme/api/private"
BARE_CHALLENGE = 'Bearer realm="acme", DPoP algs="ES256"'
INVALID_REQUEST_CHALLENGE = (
    'Bearer realm="acme", error="invalid_request", '
    'error_description="The Authorization header must be: Bearer <access token>.", '
    'DPoP algs="ES256"'
)


def b64url(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def wsgi(text: str) -> str:
    """A header value as a WSGI server hands it to Django: the UTF-8 bytes read as latin-1."""
    return text.encode("utf-8").decode("latin-1")


def jws(header: bytes) -> str:
    """A bearer header carrying a three-part token with this raw JOSE header."""
    return f"Bearer {b64url(header)}.e30.c2ln"


NOT_A_BEARER = [
    pytest.param("", id="empty"),
    pytest.param("   ", id="blank"),
    pytest.param("Basic dXNlcjpwYXNz", id="basic"),
    pytest.param('Digest username="u", realm="r"', id="digest"),
    pytest.param("Bearerabc.def.ghi", id="scheme-glued-to-token"),
    pytest.param("Token abc", id="drf-token-scheme"),
    pytest.param("A" * 10_240, id="10kb-without-scheme"),
    # Only ASCII whitespace separates (as DRF splits the header's bytes): not U+00A0 or U+001C.
    pytest.param("Bearer\xa0abc.def.ghi", id="no-break-space"),
    pytest.param("Bearer\x1cabc.def.ghi", id="file-separator"),
]
MALFORMED_BEARER = [
    pytest.param("Bearer", id="scheme-only"),
    pytest.param("Bearer ", id="scheme-and-space"),
    pytest.param("Bearer a b", id="two-tokens"),
    pytest.param("Bearer Bearer abc", id="scheme-twice"),
    pytest.param("Bearer\t\t", id="scheme-and-tabs"),
    pytest.param("Bearer \xe9\xe8\xff", id="latin-1-bytes"),
    pytest.param(wsgi("Bearer jétón"), id="utf-8-bytes"),
    pytest.param(wsgi("Bearer 令牌.令牌.令牌"), id="unicode-jwt"),
    pytest.param(wsgi("Bearer \U0001f511"), id="emoji"),
]
BAD_TOKEN = [
    pytest.param("Bearer\tabc", "malformed_token", id="tab-separated-junk"),
    pytest.param("Bearer ....", "malformed_token", id="dots"),
    pytest.param("Bearer a.b.c", "malformed_token", id="a.b.c"),
    pytest.param("Bearer ..", "malformed_token", id="empty-segments"),
    pytest.param("Bearer null", "malformed_token", id="null"),
    pytest.param(
        "Bearer " + base64.b64encode(bytes(range(256))).decode(),
        "malformed_token",
        id="base64-junk",
    ),
    pytest.param("Bearer " + "A" * 10_240, "malformed_token", id="10kb-token"),
    pytest.param(jws(b"[1, 2]"), "malformed_token", id="array-header"),
    pytest.param(jws(b"not json"), "malformed_token", id="non-json-header"),
    pytest.param(jws(b'"RS256"'), "malformed_token", id="string-header"),
    pytest.param(jws(b'{"alg": "RS256"'), "malformed_token", id="truncated-header"),
    pytest.param(jws(b"{}"), "disallowed_algorithm", id="empty-header"),
    pytest.param(jws(b'{"alg": ["RS256"]}'), "disallowed_algorithm", id="alg-list"),
    pytest.param(jws(b'{"alg": "RS256", "kid": 1}'), "malformed_token", id="kid-int"),
    # The issuer is checked before any key is looked up: this payload ({}) names none.
    pytest.param(jws('{"alg": "RS256", "kid": "令"}'.encode()), "invalid_claims", id="unicode-kid"),
    pytest.param("Bearer eyJhbGciOiJSUzI1NiJ9", "malformed_token", id="header-only"),
    pytest.param("Bearer " + "e30." * 50, "malformed_token", id="many-segments"),
]


@pytest.mark.parametrize("header", NOT_A_BEARER)
def test_a_header_of_another_scheme_counts_as_no_token(client, acme, header):
    response = client.get(PRIVATE, HTTP_AUTHORIZATION=header)

    assert (response.status_code, response.json()["code"]) == (401, "not_authenticated")
    assert response["WWW-Authenticate"] == BARE_CHALLENGE


@pytest.mark.parametrize("header", MALFORMED_BEARER)
def test_a_malformed_bearer_header_is_400_invalid_request(client, acme, header):
    response = client.get(PRIVATE, HTTP_AUTHORIZATION=header)

    assert (response.status_code, response.json()["code"]) == (400, "invalid_request")
    assert response["WWW-Authenticate"] == INVALID_REQUEST_CHALLENGE


@pytest.mark.parametrize(("header", "code"), BAD_TOKEN)
def test_a_bearer_token_that_is_not_a_valid_jwt_is_401_invalid_token(client, acme, header, code):
    response = client.get(PRIVATE, HTTP_AUTHORIZATION=header)

    assert (response.status_code, response.json()["code"]) == (401, code)
    assert response["WWW-Authenticate"].startswith(
        'Bearer realm="acme", error="invalid_token", error_description="'
    )


@pytest.mark.parametrize("endpoint", ["private", "private-scoped"])
@pytest.mark.parametrize(
    "header",
    NOT_A_BEARER + MALFORMED_BEARER + [pytest.param(p.values[0], id=p.id) for p in BAD_TOKEN],
)
def test_no_malformed_authorization_header_gives_a_server_error(client, acme, header, endpoint):
    response = client.get(f"/t/acme/api/{endpoint}", HTTP_AUTHORIZATION=header)

    assert response.status_code in (400, 401)
    assert set(response.json()) == {"message", "code"}


@pytest.mark.parametrize(
    "shape",
    ["Bearer {}", "bearer {}", "BEARER {}", "bEaReR {}", "Bearer  {}", " Bearer {} ", "Bearer\t{}"],
)
def test_the_scheme_is_case_insensitive_and_spacing_lenient(client, acme, acme_tokens, shape):
    response = client.get(PRIVATE, HTTP_AUTHORIZATION=shape.format(acme_tokens.token()))

    assert response.status_code == 200


# --- the principal -----------------------------------------------------------------------------


def authenticate(header: dict[str, str], tenant: Any = None) -> tuple[Any, Principal] | None:
    """Run the authentication class on a bare request resolved to a tenant (acme by default)."""
    request = Request(APIRequestFactory().get("/api/private", **header))
    request.tenant = tenant or directory.by_slug("acme")
    return TenantTokenAuthentication().authenticate(request)


def test_the_principal_carries_tenant_subject_scopes_and_claims(acme, acme_tokens):
    token = acme_tokens.token(scope="openid read:messages", sub="auth0|abc")

    user, principal = authenticate(bearer(token))

    assert (principal.tenant, principal.subject) == ("acme", "auth0|abc")
    assert principal.scopes == frozenset({"openid", "read:messages"})
    assert principal.claims.payload["aud"] == "https://api.acme.test"
    assert (user, principal.user, principal.is_authenticated) == (principal, None, True)


def test_the_tenant_needs_only_a_slug_a_policy_its_issuers_and_provision_users(acme, acme_tokens):
    config = directory.by_slug("acme")
    tenant = SimpleNamespace(
        slug="acme", policy=config.policy, issuers=config.issuers, provision_users=False
    )

    user, principal = authenticate(bearer(acme_tokens.token()), tenant)

    assert (principal.tenant, principal.subject, user) == ("acme", "auth0|user-1", principal)


def test_no_header_authenticates_nobody(acme):
    assert authenticate({}) is None


def test_the_principal_of_a_provisioning_tenant_carries_its_user(make_tenant, acme_tokens):
    make_tenant("acme", provision_users=True)

    user, principal = authenticate(bearer(acme_tokens.token()))

    assert user.username == "acme:auth0.user-1"
    assert principal.user == user
    assert not user.has_usable_password()


def test_provisioning_namespaces_users_by_tenant(client, make_tenant, tokens):
    make_tenant("acme", provision_users=True)
    make_tenant("beta", provision_users=True)

    acme = client.get("/t/acme/api/private", **bearer(tokens("acme").token(sub="auth0|user-1")))
    beta = client.get("/t/beta/api/private", **bearer(tokens("beta").token(sub="auth0|user-1")))

    assert (acme.status_code, beta.status_code) == (200, 200)
    usernames = get_user_model().objects.values_list("username", flat=True)
    assert sorted(usernames) == ["acme:auth0.user-1", "beta:auth0.user-1"]


def test_provisioning_reuses_the_user_of_a_known_subject(client, make_tenant, acme_tokens):
    from authz.users import provisioned_users

    make_tenant("acme", provision_users=True)
    client.get(PRIVATE, **bearer(acme_tokens.token()))
    provisioned_users.forget()

    response = client.get(PRIVATE, **bearer(acme_tokens.token()))

    assert response.status_code == 200
    assert get_user_model().objects.filter(username="acme:auth0.user-1").count() == 1


def test_a_tenant_that_does_not_provision_creates_no_user(client, acme, acme_tokens):
    response = client.get(PRIVATE, **bearer(acme_tokens.token()))

    assert response.status_code == 200
    assert not get_user_model().objects.exists()


def test_a_subject_too_long_for_a_username_is_hashed(client, make_tenant, acme_tokens):
    make_tenant("acme", provision_users=True)
    subject = "auth0|" + "x" * 200

    response = client.get(PRIVATE, **bearer(acme_tokens.token(sub=subject)))

    assert response.status_code == 200
    expected = f"acme:#{hashlib.sha256(subject.encode()).hexdigest()}"
    assert list(get_user_model().objects.values_list("username", flat=True)) == [expected]


def test_usernames_are_one_per_subject(client, make_tenant, tokens):
    make_tenant("acme", provision_users=True)
    subjects = ["auth0|alice", "auth0.alice", "auth0%7Calice", "auth0%2Ealice", "a:b", "a b"]

    for subject in subjects:
        response = client.get(PRIVATE, **bearer(tokens("acme").token(sub=subject)))
        assert response.status_code == 200

    usernames = set(get_user_model().objects.values_list("username", flat=True))
    assert len(usernames) == len(subjects)
    assert "acme:auth0.alice" in usernames  # the quickstart's | to . where no . could clash


@pytest.mark.parametrize(
    ("subject", "other"),
    [("sha256|" + "0" * 64, "x" * 200), ("auth0|alice", "auth0.alice"), ("a.b", "a|b")],
)
def test_username_for_is_injective_where_mappings_usually_clash(subject, other):
    from authz.users import username_for

    assert username_for("acme", subject) != username_for("acme", other)


def test_a_deleted_user_is_provisioned_again_not_served_from_memory(
    client, make_tenant, acme_tokens
):
    make_tenant("acme", provision_users=True)
    token = acme_tokens.token()
    assert client.get(PRIVATE, **bearer(token)).status_code == 200
    get_user_model().objects.get(username="acme:auth0.user-1").delete()

    user, _ = authenticate(bearer(token))

    assert user.pk is not None and get_user_model().objects.filter(pk=user.pk).exists()


@pytest.mark.parametrize("provision_users", [True, False])
def test_a_repeated_token_costs_no_sql_query(
    client, make_tenant, acme_tokens, django_assert_num_queries, provision_users
):
    make_tenant("acme", provision_users=provision_users)
    token = acme_tokens.token()
    assert client.get(PRIVATE, **bearer(token)).status_code == 200

    with django_assert_num_queries(0):
        response = client.get(PRIVATE, **bearer(token))

    assert response.status_code == 200
