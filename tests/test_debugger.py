"""The token debugger on the tenant page: the API's own answer, check by check, without effects."""

import base64
import json
import logging
import time
import uuid
from urllib.parse import quote

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.test import Client
from django.utils.html import escape

from devissuer import dpop
from tests.fixtures import bearer

PRIVATE_SCOPED = ("messages:private-scoped", "/t/acme/api/private-scoped")


def debugger_url(tenant) -> str:
    """The debugger page of a tenant."""
    return f"/admin/tenants/tenant/{tenant.pk}/debug-token/"


def run(client, tenant, token: str, endpoint: str = PRIVATE_SCOPED[0], **fields: str):
    """POST the debugger form; the page's text."""
    data = {"endpoint": endpoint, "token": token, "url": "", "proof": "", **fields}
    response = client.post(debugger_url(tenant), data)
    assert response.status_code == 200
    return response


def states(response) -> dict[str, str]:
    """Each check's state, by name."""
    return {check.name: check.state for check in response.context["answer"].checks}


def api_answer(client, token: str, path: str = PRIVATE_SCOPED[1], **headers: str):
    """What the API itself answers to the token."""
    response = client.get(path, **bearer(token), **headers)
    return response.status_code, response.json()["code"], response.get("WWW-Authenticate")


@pytest.fixture
def expired(acme_tokens) -> str:
    """An access token that expired an hour ago."""
    return acme_tokens.token(exp=int(time.time()) - 3600, scope="read:messages")


def test_a_good_token_is_served_and_passes_every_check(admin_client, acme, acme_tokens):
    response = run(admin_client, acme, acme_tokens.token(scope="read:messages"))

    answer = response.context["answer"]
    assert answer.served and answer.status is None
    assert set(states(response).values()) == {"passed", "not applicable"}
    assert states(response)["proof"] == "not applicable"  # sent as Bearer
    assert "Served" in response.content.decode()
    assert "&quot;sub&quot;: &quot;auth0|user-1&quot;" in response.content.decode()  # decoded


@pytest.mark.parametrize(
    "make, failed",
    [
        (lambda t: t.token(exp=int(time.time()) - 3600), "time"),
        (lambda t: t.token(aud="https://elsewhere.test"), "audience"),
        (lambda t: t.token(iss="https://evil.example.com/"), "issuer"),
        (lambda t: t.token()[:-6] + "AAAAAA", "signature"),
        (lambda t: t.token(headers={"kid": uuid.uuid4().hex}), "key"),
        (lambda t: t.token(headers={"typ": "dpop+jwt"}), "type"),
        (lambda t: t.token(), "scopes"),  # valid, without read:messages
        (lambda t: t.token(cnf={"jkt": "x" * 43}), "binding"),  # bound, sent as Bearer
        (lambda t: "not.a.jwt", "format"),
    ],
)
def test_a_refused_token_gets_exactly_the_apis_answer_and_its_check(
    admin_client, client, acme, acme_tokens, make, failed
):
    token = make(acme_tokens)
    status, code, challenge = api_answer(client, token)

    response = run(admin_client, acme, token)

    answer = response.context["answer"]
    assert (answer.status, answer.code, answer.headers.get("WWW-Authenticate")) == (
        status,
        code,
        challenge,
    )
    assert json.loads(answer.body)["code"] == code
    checks = states(response)
    assert checks[failed] == "failed"
    names = list(checks)
    assert all(checks[n] in ("passed", "not applicable") for n in names[: names.index(failed)])
    assert all(
        checks[n] in ("not reached", "not applicable") for n in names[names.index(failed) + 1 :]
    )


@pytest.mark.parametrize(
    "claims, failed",
    [
        ({"aud": ""}, "audience"),
        ({"exp": "tomorrow"}, "time"),
        ({"exp": None}, "required"),
        ({"scope": 7}, "scope_claims"),
    ],
)
def test_a_repeated_refusal_names_the_same_check(admin_client, acme, acme_tokens, claims, failed):
    token = acme_tokens.token(**claims)

    first = run(admin_client, acme, token)
    again = run(admin_client, acme, token)  # answered from the refused-token cache

    assert states(first)[failed] == "failed"
    assert states(again) == states(first)
    assert again.context["answer"].body == first.context["answer"].body


def test_a_pasted_proof_is_checked_but_not_used_up(admin_client, client, acme, acme_tokens):
    key = dpop.new_key()
    bound = acme_tokens.token(cnf={"jkt": dpop.key_thumbprint(key)}, scope="read:messages")
    url = "http://testserver/t/acme/api/private-scoped"
    proof = dpop.make_proof(key, "GET", url, access_token=bound)

    before = run(admin_client, acme, bound, proof=proof, url=url)
    api = client.get(
        "/t/acme/api/private-scoped", HTTP_AUTHORIZATION=f"DPoP {bound}", HTTP_DPOP=proof
    )
    after = run(admin_client, acme, bound, proof=proof, url=url)

    assert before.context["answer"].served and states(before)["proof"] == "passed"
    assert api.status_code == 200  # the debugger did not use the proof up
    assert states(after)["proof"] == "failed"  # the API did
    assert "already used" in after.context["answer"].body


@pytest.fixture
def operator(acme, django_user_model) -> Client:
    """A staff operator of acme alone, not a superuser: other tenants are secret to them."""
    user = django_user_model.objects.create_user("op", password="pw-op-123", is_staff=True)
    acme.operators.add(user)
    browser = Client()
    browser.force_login(user)
    return browser


def unsigned(claims: dict, kid: str = "made-up") -> str:
    """A token with an RS256 header and a signature that no key made."""
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    parts = (json.dumps(header).encode(), json.dumps(claims).encode(), b"not a signature")
    return ".".join(base64.urlsafe_b64encode(part).decode().rstrip("=") for part in parts)


def foreign_notes(response) -> list[str]:
    """The notes that speak of another tenant."""
    return [note for note in response.context["answer"].notes if "another tenant" in note]


def test_a_token_of_another_tenant_is_said_to_be_so_without_naming_it(
    either_store, operator, client, acme, make_tenant, tokens
):
    globex, token = make_tenant("globex"), tokens("globex").token(scope="read:messages")
    assert client.get("/t/globex/api/private", **bearer(token)).status_code == 200  # keys stored

    response = run(operator, acme, token)

    page = response.content.decode()
    assert "issued for another tenant of this platform" in page
    assert globex.slug not in page.replace(escape(response.context["answer"].claims_text), "")


@pytest.mark.parametrize(
    "forge",
    [
        lambda t, kid: unsigned(t.claims()),
        lambda t, kid: unsigned(t.claims(), kid),  # globex's kid, no signature of its key
        lambda t, kid: t.token()[:-6] + "AAAAAA",  # globex's key, another signature
        lambda t, kid: tokens_with_stranger_key(t, kid),
    ],
    ids=["unknown-kid", "globex-kid", "tampered", "stranger-key"],
)
def test_an_unverified_token_naming_another_tenants_issuer_says_nothing_of_it(
    either_store, operator, client, acme, make_tenant, tokens, forge
):
    make_tenant("globex")
    globex_tokens = tokens("globex")
    genuine = globex_tokens.token(scope="read:messages")
    assert client.get("/t/globex/api/private", **bearer(genuine)).status_code == 200  # stored
    kid = jwt.get_unverified_header(genuine)["kid"]

    response = run(operator, acme, forge(globex_tokens, kid))

    assert response.context["answer"].status == 401
    assert foreign_notes(response) == []


def tokens_with_stranger_key(factory, kid: str) -> str:
    """A token naming the issuer and its kid, signed by a key the issuer never had."""
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(factory.claims(), stranger, algorithm="RS256", headers={"kid": kid})


def test_the_debugger_never_fetches_another_tenants_keys(
    operator, issuer, acme, make_tenant, tokens
):
    make_tenant("globex")  # nobody called it yet: its key set is not stored
    jwks = "GET /globex/.well-known/jwks.json"
    before = issuer.stats().get(jwks, 0)

    response = run(operator, acme, tokens("globex").token(scope="read:messages"))

    assert foreign_notes(response) == []  # not known without its stored keys
    assert issuer.stats().get(jwks, 0) == before


def test_operators_debug_only_their_own_tenants(make_tenant, django_user_model, client, tokens):
    acme, globex = make_tenant("acme"), make_tenant("globex")
    operator = django_user_model.objects.create_user("op", password="pw-op-123", is_staff=True)
    acme.operators.add(operator)
    client.force_login(operator)

    assert client.get(debugger_url(acme)).status_code == 200
    assert client.get(debugger_url(globex)).status_code == 404
    assert client.post(debugger_url(globex), {"token": "x"}).status_code == 404
    assert client.get("/admin/tenants/tenant/abc/debug-token/").status_code == 404


def test_the_debugger_needs_csrf(acme, admin_user, acme_tokens):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)

    response = browser.post(debugger_url(acme), {"endpoint": PRIVATE_SCOPED[0], "token": "x"})

    assert response.status_code == 403


def test_nothing_pasted_is_stored_logged_or_kept_in_history(
    admin_client, acme, acme_tokens, caplog
):
    caplog.set_level(logging.DEBUG)
    token = acme_tokens.token(scope="read:messages")
    history = LogEntry.objects.count()

    run(admin_client, acme, token)

    assert LogEntry.objects.count() == history
    assert token not in caplog.text and token[-20:] not in caplog.text


def test_a_provisioning_tenant_gets_no_user_from_the_debugger(admin_client, make_tenant, tokens):
    tenant = make_tenant("acme", provision_users=True)
    users = User.objects.count()

    response = run(admin_client, tenant, tokens("acme").token(scope="read:messages"))

    assert response.context["answer"].served
    assert User.objects.count() == users


@pytest.mark.parametrize(
    "url, problem",
    [
        ("javascript:alert(1)", "must be an http or https URL"),
        ("http://testserver/admin/", "not one of the API's endpoints"),
        ("http://testserver/t/globex/api/private-scoped", "not served by the tenant acme"),
        ("http://unknown.invalid/api/private-scoped", "ALLOWED_HOSTS"),
        ("http://testserver/t/acme/api/nowhere", "not one of the API's endpoints"),
        ("http://testserver:99999/t/acme/api/private-scoped", "port"),
        ("http://testserver:http/t/acme/api/private-scoped", "port"),
        ("http://[x/t/acme/api/private-scoped", "not a valid URL"),
        ("http://[::1/t/acme/api/private-scoped", "not a valid URL"),
        ("http://bücher.localhost/api/private-scoped", "ASCII"),
        ("http://testserver:0/t/acme/api/private-scoped", "port"),
        ("http://test server/t/acme/api/private-scoped", "not a valid host name"),
        ("http://user@testserver/t/acme/api/private-scoped", "user name"),
        ("http://testserver/t/acme/api/€", "not one of the API's endpoints"),
    ],
)
def test_a_url_that_is_not_this_tenants_endpoint_is_explained(
    admin_client, acme, make_tenant, acme_tokens, url, problem
):
    make_tenant("globex")

    response = run(admin_client, acme, acme_tokens.token(), url=url)

    assert response.context["answer"] is None
    assert problem in response.context["problem"]


@pytest.mark.parametrize(
    "path",
    ["/t/acme/api/private-scoped?q=€ ü", "/t/acme/api/%70rivate-scoped"],
)
def test_a_url_is_sent_as_a_client_would_send_it(admin_client, client, acme, acme_tokens, path):
    token = acme_tokens.token(scope="read:messages")
    on_the_wire = quote(path, safe="/%?=")
    api = client.get(on_the_wire, **bearer(token))

    response = run(admin_client, acme, token, url=f"http://testserver{path}")

    answer = response.context["answer"]
    assert answer.served == (api.status_code == 200)
    assert answer.served or answer.status == api.status_code


@pytest.mark.parametrize(
    "data",
    [
        {"endpoint": "messages:nope", "token": "x"},
        {"endpoint": PRIVATE_SCOPED[0], "token": ""},
        {"endpoint": PRIVATE_SCOPED[0], "token": "x" * 20000},
        {"endpoint": PRIVATE_SCOPED[0], "token": "a\x00b"},
        {},
    ],
)
def test_garbage_input_is_a_form_error_not_a_500(admin_client, acme, data):
    response = admin_client.post(debugger_url(acme), data)

    assert response.status_code == 200
    assert response.context["form"].errors and response.context["answer"] is None


def test_runs_are_limited_per_operator(admin_client, acme):
    for _ in range(20):
        assert run(admin_client, acme, "not.a.jwt").context["problem"] is None

    limited = run(admin_client, acme, "not.a.jwt")

    assert "At most 20 tokens a minute" in limited.context["problem"]


def test_the_tenant_page_links_to_its_debugger(admin_client, acme):
    page = admin_client.get(f"/admin/tenants/tenant/{acme.pk}/change/").content.decode()

    assert f'href="{debugger_url(acme)}"' in page
