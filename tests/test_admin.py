"""The basic tenant admin: one page with hosts, audiences and scope rules inline."""

import pytest

from tenants.models import Tenant

ADD_URL = "/admin/tenants/tenant/add/"


def inline_management(prefix: str, total: int) -> dict[str, str]:
    """Management form fields of an empty admin inline."""
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def tenant_post(**overrides: str) -> dict[str, str]:
    """A complete add-tenant form submission."""
    data = {
        "slug": "initech",
        "name": "Initech",
        "active": "on",
        "domain": "initech.eu.auth0.com",
        "algorithms": "RS256",
        "leeway": "60",
        "scope_claims": "scope",
        **inline_management("hosts", 1),
        "hosts-0-hostname": "Initech.localhost",
        **inline_management("audiences", 1),
        "audiences-0-audience": "https://api.initech.test",
        **inline_management("scope_rules", 1),
        "scope_rules-0-endpoint": "messages:private-scoped",
        "scope_rules-0-scopes": "read:reports",
        **inline_management("cors_origins", 0),
    }
    data.update(overrides)
    return data


@pytest.fixture
def operator(admin_client):
    return admin_client


def test_add_page_lists_registered_endpoints_with_their_defaults(operator):
    page = operator.get(ADD_URL).content.decode()

    assert "messages:private-scoped (default: read:messages)" in page
    assert "messages:private (default: any valid token)" in page


def test_operator_creates_a_tenant_with_its_parts(operator):
    response = operator.post(ADD_URL, tenant_post())

    assert response.status_code == 302
    tenant = Tenant.objects.get(slug="initech")
    assert tenant.issuer == "https://initech.eu.auth0.com/"
    assert [h.hostname for h in tenant.hosts.all()] == ["initech.localhost"]
    assert tenant.scope_rules.get().scopes == "read:reports"


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"domain": "https://initech.eu.auth0.com"}, "without https://"),
        ({"audiences-0-audience": ""}, "This field is required."),
        ({"scope_rules-0-scopes": 'read "x"'}, "is not a valid scope"),
        ({"algorithms": "HS256"}, "Select a valid choice"),
        ({"domain": "", "issuer_override": ""}, "Enter the Auth0 domain, or an issuer override."),
    ],
)
def test_bad_input_shows_the_error_and_saves_nothing(operator, overrides, error):
    response = operator.post(ADD_URL, tenant_post(**overrides))

    assert response.status_code == 200
    assert error in response.content.decode()
    assert not Tenant.objects.exists()
