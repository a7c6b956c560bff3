"""Validators of operator input (tenants/validation.py), model clean(), forms, scope lookup."""

from types import MappingProxyType
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from authz.policy import IssuerPolicy, trusting_one
from tenants.directory import TenantConfig
from tenants.forms import HostForm, IssuerForm, TenantForm
from tenants.models import ScopeRule, Tenant, TenantIssuer
from tenants.validation import (
    ASYMMETRIC_ALGORITHMS,
    validate_algorithms,
    validate_domain,
    validate_hostname,
    validate_issuer_url,
    validate_scopes,
)


@pytest.fixture(params=[True, False], ids=["insecure-on", "insecure-off"])
def either_policy(request: pytest.FixtureRequest, settings: Any) -> bool:
    """Run the test under both insecure-issuer policies."""
    settings.AUTHZ = {**settings.AUTHZ, "ALLOW_INSECURE_ISSUERS": request.param}
    return request.param


@pytest.fixture
def insecure_on(settings: Any) -> None:
    """Development policy: http and loopback issuers allowed."""
    settings.AUTHZ = {**settings.AUTHZ, "ALLOW_INSECURE_ISSUERS": True}


@pytest.fixture
def insecure_off(settings: Any) -> None:
    """Production policy: https only, public hostnames only."""
    settings.AUTHZ = {**settings.AUTHZ, "ALLOW_INSECURE_ISSUERS": False}


def refusal_code(validator: Any, value: Any) -> str:
    """The code of the ValidationError a validator raises for a value."""
    with pytest.raises(ValidationError) as refused:
        validator(value)
    return refused.value.code


@pytest.mark.parametrize(
    "value",
    [
        "api.example.com",
        "acme.localhost",
        "localhost",
        "a",
        "x-1.example.com",
        "API.Example.COM",
        "123.example.com",
        f"{'a' * 63}.com",
        ".".join(["a" * 63] * 3 + ["a" * 61]),
    ],
)
def test_hostname_accepts_dns_names(value):
    validate_hostname(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "-acme.com",
        "acme-.com",
        "acme..com",
        "acme.com.",
        ".acme.com",
        "acme_x.com",
        "acme.com:80",
        "https://acme.com",
        "ex ample.com",
        "exämple.com",
        f"{'a' * 64}.com",
        ".".join(["a" * 63] * 3 + ["a" * 62]),
    ],
)
def test_hostname_refuses_anything_else(value):
    assert refusal_code(validate_hostname, value) == "invalid_hostname"


@pytest.mark.parametrize("value", ["acme.eu.auth0.com", "login.acme.com", "Acme.Auth0.com"])
def test_domain_accepts_bare_public_domains(either_policy, value):
    validate_domain(value)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("https://acme.auth0.com", "invalid_domain"),
        ("acme.auth0.com/path", "invalid_domain"),
        ("acme.auth0.com/", "invalid_domain"),
        ("user@acme.auth0.com", "invalid_domain"),
        ("acme.auth0.com:abc", "invalid_domain"),
        ("acme_x.auth0.com", "invalid_hostname"),
        ("", "invalid_hostname"),
    ],
)
def test_domain_refuses_urls_and_malformed_names(either_policy, value, code):
    assert refusal_code(validate_domain, value) == code


@pytest.mark.parametrize("value", ["acme.auth0.com?x=1", "acme.auth0.com#x", "acme.auth0.com:"])
def test_domain_refuses_query_fragment_and_empty_port(either_policy, value):
    with pytest.raises(ValidationError):
        validate_domain(value)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("acme.auth0.com:8443", "issuer_port"),
        ("127.0.0.1", "internal_issuer"),
        ("10.0.0.1", "internal_issuer"),
        ("[::1]", "internal_issuer"),
        ("localhost", "internal_issuer"),
        ("dev.localhost", "internal_issuer"),
        ("localhost:8000", "internal_issuer"),
    ],
)
def test_domain_refuses_ports_and_internal_hosts_when_insecure_off(insecure_off, value, code):
    assert refusal_code(validate_domain, value) == code


@pytest.mark.parametrize("value", ["127.1", "2130706433", "0x7f000001", "10.1"])
def test_domain_refuses_shorthand_ipv4_when_insecure_off(insecure_off, value):
    # The resolver reads these as IPv4 addresses (127.1 is 127.0.0.1): they are IP literals.
    with pytest.raises(ValidationError):
        validate_domain(value)


@pytest.mark.parametrize(
    "value", ["acme.auth0.com:8443", "127.0.0.1", "[::1]", "localhost", "dev.localhost:8000"]
)
def test_domain_accepts_ports_and_internal_hosts_when_insecure_on(insecure_on, value):
    validate_domain(value)


@pytest.mark.parametrize(
    "value",
    [
        "https://acme.eu.auth0.com/",
        "https://login.acme.com/oauth/",
        "https://keys.acme.com/.well-known/jwks.json",
        "https://acme.com",
    ],
)
def test_issuer_url_accepts_https_on_public_hosts(either_policy, value):
    validate_issuer_url(value)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("ftp://acme.com/", "insecure_url"),
        ("acme.com", "insecure_url"),
        ("//acme.com/", "insecure_url"),
        ("https://user:pw@acme.com/", "invalid_url"),
        ("https://user@acme.com/", "invalid_url"),
        ("https://acme.com/?tenant=1", "invalid_url"),
        ("https://acme.com/#top", "invalid_url"),
        ("https://acme.com:abc/", "invalid_url"),
        ("https:///path", "invalid_hostname"),
        ("https://acme_x.com/", "invalid_hostname"),
    ],
)
def test_issuer_url_refuses_malformed_addresses(either_policy, value, code):
    assert refusal_code(validate_issuer_url, value) == code


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("http://acme.com/", "insecure_url"),
        ("http://127.0.0.1:8000/acme/", "insecure_url"),
        ("https://127.0.0.1/", "internal_issuer"),
        ("https://[::1]/", "internal_issuer"),
        ("https://169.254.169.254/", "internal_issuer"),
        ("https://localhost/", "internal_issuer"),
        ("https://LOCALHOST/", "internal_issuer"),
        ("https://dev.localhost/", "internal_issuer"),
        ("https://acme.com:8443/", "issuer_port"),
    ],
)
def test_issuer_url_refuses_insecure_addresses_when_insecure_off(insecure_off, value, code):
    assert refusal_code(validate_issuer_url, value) == code


@pytest.mark.parametrize("value", ["https://127.1/", "https://2130706433/", "https://0x7f.1/"])
def test_issuer_url_refuses_shorthand_ipv4_when_insecure_off(insecure_off, value):
    with pytest.raises(ValidationError):
        validate_issuer_url(value)


@pytest.mark.parametrize(
    "value",
    [
        "http://acme.com/",
        "http://127.0.0.1:8000/acme/",
        "http://localhost:5000/",
        "http://[::1]:8000/",
        "https://acme.com:8443/",
    ],
)
def test_issuer_url_accepts_http_loopback_and_ports_when_insecure_on(insecure_on, value):
    validate_issuer_url(value)


@pytest.mark.parametrize(
    "value", ["", "   ", "read:messages", "read:messages write:messages", "a!#$[]~", " x  y "]
)
def test_scopes_accept_rfc6749_tokens(value):
    validate_scopes(value)


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ('read messages"', 'messages"'),
        ("a\\b", "a\\b"),
        ("read:messages lecture:é", "lecture:é"),
        ("bell\x07", "bell\x07"),
        ("del\x7f", "del\x7f"),
    ],
)
def test_scopes_refuse_other_characters_and_name_the_token(value, token):
    with pytest.raises(ValidationError) as refused:
        validate_scopes(value)

    assert refused.value.code == "invalid_scope"
    assert refused.value.messages[0].startswith(f"{token} is not a valid scope")


@pytest.mark.parametrize(
    "value", [["RS256"], ["ES256", "EdDSA"], ["PS512", "RS384"], list(ASYMMETRIC_ALGORITHMS)]
)
def test_algorithms_accept_asymmetric_lists(value):
    validate_algorithms(value)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ([], "no_algorithms"),
        (None, "no_algorithms"),
        ("RS256", "no_algorithms"),
        ({"RS256": True}, "no_algorithms"),
        (["HS256"], "invalid_algorithm"),
        (["RS256", "HS512"], "invalid_algorithm"),
        (["none"], "invalid_algorithm"),
        (["rs256"], "invalid_algorithm"),
    ],
)
def test_algorithms_refuse_empty_or_symmetric(value, code):
    assert refusal_code(validate_algorithms, value) == code


@pytest.mark.parametrize(
    "fields",
    [{"domain": "acme.eu.auth0.com"}, {"issuer_override": "https://login.acme.test/"}],
    ids=["domain", "issuer-override"],
)
def test_issuer_clean_accepts_a_domain_or_an_issuer_override(fields):
    TenantIssuer(**fields).clean()


def test_issuer_clean_requires_a_domain_or_an_issuer_override():
    with pytest.raises(ValidationError) as refused:
        TenantIssuer().clean()

    error = refused.value.error_dict["domain"][0]
    assert (error.message, error.code) == (
        "Enter the Auth0 domain, or an issuer override.",
        "no_issuer",
    )


@pytest.mark.parametrize("endpoint", ["messages:private", "messages:private-scoped"])
def test_scope_rule_clean_accepts_registered_endpoints(endpoint):
    ScopeRule(endpoint=endpoint, scopes="read:messages").clean()


@pytest.mark.parametrize("endpoint", ["messages:nope", "MESSAGES:PRIVATE"])
def test_scope_rule_clean_refuses_unknown_endpoints(endpoint):
    with pytest.raises(ValidationError) as refused:
        ScopeRule(endpoint=endpoint).clean()

    error = refused.value.error_dict["endpoint"][0]
    assert (error.message, error.code) == (f"Unknown endpoint {endpoint!r}.", "unknown_endpoint")


def tenant_config(rules: dict[str, tuple[str, ...]]) -> TenantConfig:
    """A TenantConfig with the given scope rules."""
    policy = IssuerPolicy(
        issuer="https://acme.eu.auth0.com/",
        jwks_url="https://acme.eu.auth0.com/.well-known/jwks.json",
        audiences=("https://api.acme.test",),
        algorithms=("RS256",),
        leeway=60,
        scope_claims="scope",
    )
    return TenantConfig(
        id=1,
        slug="acme",
        name="Acme",
        issuers=trusting_one(policy),
        hosts=("acme.localhost",),
        provision_users=False,
        scope_rules=MappingProxyType(rules),
    )


@pytest.mark.parametrize(
    ("rules", "endpoint", "expected"),
    [
        ({}, "messages:private-scoped", ("read:messages",)),
        ({}, "messages:private", ()),
        (
            {"messages:private-scoped": ("admin", "audit")},
            "messages:private-scoped",
            ("admin", "audit"),
        ),
        ({"messages:private-scoped": ()}, "messages:private-scoped", ()),
        ({"messages:private": ("read:private",)}, "messages:private", ("read:private",)),
        ({"messages:private": ("read:private",)}, "messages:private-scoped", ("read:messages",)),
    ],
    ids=[
        "default",
        "default-none",
        "rule",
        "empty-rule-means-any-token",
        "rule-on-other",
        "rule-elsewhere-keeps-default",
    ],
)
def test_required_scopes_prefer_the_tenant_rule_over_the_default(rules, endpoint, expected):
    assert tenant_config(rules).required_scopes(endpoint) == expected


def test_required_scopes_of_an_unknown_endpoint_raise_key_error():
    with pytest.raises(KeyError):
        tenant_config({}).required_scopes("messages:nope")


def tenant_form_data(**fields: Any) -> dict[str, Any]:
    """Valid TenantForm data, with fields overridden."""
    return {
        "slug": "acme",
        "name": "Acme",
        "active": True,
        "algorithms": ["RS256"],
        "leeway": 60,
        "scope_claims": "scope",
        "token_profile": "auth0",
        "dpop": "allowed",
        "dpop_algorithms": ["ES256"],
        **fields,
    }


@pytest.mark.django_db
def test_issuer_form_stores_the_domain_lower_case_and_stripped():
    form = IssuerForm({"position": 0, "domain": "  ACME.EU.Auth0.COM "})
    form.instance.tenant = Tenant.objects.create(slug="acme", name="Acme")

    assert form.is_valid(), form.errors
    assert form.save().domain == "acme.eu.auth0.com"


@pytest.mark.django_db
def test_tenant_and_issuer_forms_run_the_model_validators():
    form = TenantForm(tenant_form_data(leeway=601))
    issuer = IssuerForm({"position": 0, "domain": "HTTPS://ACME.AUTH0.COM"})

    assert not form.is_valid() and not issuer.is_valid()
    assert issuer.errors["domain"][0].startswith("Enter the bare domain")
    assert form.errors["leeway"] == ["Ensure this value is less than or equal to 600."]


@pytest.mark.django_db
def test_issuer_form_requires_a_domain_or_an_issuer_override():
    form = IssuerForm({"position": 0, "domain": ""})

    assert form.errors["domain"] == ["Enter the Auth0 domain, or an issuer override."]


@pytest.mark.django_db
def test_host_form_stores_the_hostname_lower_case_and_stripped():
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    form = HostForm({"hostname": " API.Acme.LOCALHOST "})
    form.instance.tenant = tenant

    assert form.is_valid(), form.errors
    assert form.save().hostname == "api.acme.localhost"


@pytest.mark.django_db
def test_host_form_refuses_a_hostname_taken_in_another_case():
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    tenant.hosts.create(hostname="acme.localhost")
    form = HostForm({"hostname": "ACME.localhost"})
    form.instance.tenant = tenant

    assert form.errors["hostname"] == ["Tenant host with this Hostname already exists."]
