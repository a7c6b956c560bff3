"""The basic tenant admin: one page with hosts, audiences and scope rules inline."""

import pytest
from django.contrib.messages import get_messages

from tenants.models import Tenant
from tests.fixtures import kids_of

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
        **inline_management("issuers", 1),
        "issuers-0-position": "0",
        "issuers-0-domain": "initech.eu.auth0.com",
        "algorithms": "RS256",
        "leeway": "60",
        "scope_claims": "scope",
        "token_profile": "auth0",
        "organizations": "",
        "dpop": "allowed",
        "dpop_algorithms": "ES256",
        **inline_management("hosts", 1),
        "hosts-0-hostname": "Initech.localhost",
        **inline_management("audiences", 1),
        "audiences-0-audience": "https://api.initech.test",
        **inline_management("scope_rules", 1),
        "scope_rules-0-endpoint": "messages:private-scoped",
        "scope_rules-0-scopes": "read:reports",
        **inline_management("cors_origins", 0),
        **inline_management("routes", 0),
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
        ({"issuers-0-domain": "https://initech.eu.auth0.com"}, "without https://"),
        ({"audiences-0-audience": ""}, "This field is required."),
        ({"scope_rules-0-scopes": 'read "x"'}, "is not a valid scope"),
        ({"algorithms": "HS256"}, "Select a valid choice"),
        ({"issuers-0-domain": ""}, "Enter the Auth0 domain, or an issuer override."),
    ],
)
def test_bad_input_shows_the_error_and_saves_nothing(operator, overrides, error):
    response = operator.post(ADD_URL, tenant_post(**overrides))

    assert response.status_code == 200
    assert error in response.content.decode()
    assert not Tenant.objects.exists()


@pytest.fixture
def operated(make_tenant, django_user_model, client):
    """A staff operator of acme only (globex exists too), logged in."""
    acme, globex = make_tenant("acme"), make_tenant("globex")
    operator = django_user_model.objects.create_user("op", password="pw-op-123", is_staff=True)
    acme.operators.add(operator)
    client.force_login(operator)
    return client, acme, globex


def change_post(tenant, **overrides: str) -> dict[str, str]:
    """The change form of an imported tenant as an operator submits it."""
    audience, issuer = tenant.audiences.get(), tenant.issuers.get()
    data = {
        "name": tenant.name,
        "active": "on",
        "issuers-TOTAL_FORMS": "1",
        "issuers-INITIAL_FORMS": "1",
        "issuers-0-id": str(issuer.pk),
        "issuers-0-tenant": str(tenant.pk),
        "issuers-0-position": str(issuer.position),
        "issuers-0-domain": issuer.domain,
        "issuers-0-issuer_override": issuer.issuer_override,
        "issuers-0-jwks_url_override": issuer.jwks_url_override,
        "algorithms": "RS256",
        "leeway": "60",
        "scope_claims": "scope",
        "token_profile": tenant.token_profile,
        "organizations": "\n".join(tenant.organizations),
        "dpop": tenant.dpop,
        "dpop_algorithms": tenant.dpop_algorithms,
        "audiences-TOTAL_FORMS": "1",
        "audiences-INITIAL_FORMS": "1",
        "audiences-0-id": str(audience.pk),
        "audiences-0-tenant": str(tenant.pk),
        "audiences-0-audience": audience.audience,
        **inline_management("hosts", 0),
        **inline_management("scope_rules", 0),
        **inline_management("cors_origins", 0),
        **inline_management("routes", 0),
    }
    data.update(overrides)
    return data


def change_url(tenant) -> str:
    return f"/admin/tenants/tenant/{tenant.pk}/change/"


def test_operator_lists_only_their_tenants(operated):
    client, _acme, _globex = operated

    page = client.get("/admin/tenants/tenant/").content.decode()

    assert ">acme<" in page and ">globex<" not in page


CHANGELIST = "/admin/tenants/tenant/"


@pytest.mark.parametrize(
    ("method", "url", "data", "status"),
    [
        ("get", ADD_URL, {}, 403),
        ("post", ADD_URL, tenant_post(), 403),
        ("get", "/admin/tenants/tenant/{acme}/delete/", {}, 403),
        ("post", "/admin/tenants/tenant/{acme}/delete/", {"post": "yes"}, 403),
        ("post", "/admin/tenants/tenant/{globex}/refresh-keys/", {}, 404),
        ("post", "/admin/tenants/tenant/{globex}/check-issuer/", {}, 404),
        # An action on another tenant's id: the operator's queryset does not hold it.
        (
            "post",
            CHANGELIST,
            {"action": "refresh_keys_action", "_selected_action": "{globex}"},
            302,
        ),
    ],
    ids=["add", "add-post", "delete", "delete-post", "refresh", "check", "refresh-action"],
)
def test_operator_cannot_create_delete_or_act_on_other_tenants(
    operated, issuer, django_capture_on_commit_callbacks, method, url, data, status
):
    client, acme, globex = operated
    ids = {"acme": acme.pk, "globex": globex.pk}
    globex_fetches = [f"/globex/.well-known/{doc}" for doc in ("jwks.json", "openid-configuration")]
    before = [issuer.hits(path) for path in globex_fetches]

    with django_capture_on_commit_callbacks(execute=True):  # a queued refresh would run
        response = getattr(client, method)(
            url.format(**ids), {k: str(v).format(**ids) for k, v in data.items()}
        )

    assert response.status_code == status
    assert set(Tenant.objects.values_list("slug", flat=True)) == {"acme", "globex"}
    assert [issuer.hits(path) for path in globex_fetches] == before


def test_operator_cannot_open_another_tenants_page(operated):
    client, _acme, globex = operated

    response = client.get(change_url(globex))

    assert response.status_code == 302  # the admin's "does not exist" redirect
    assert client.get(response.url).status_code == 200


def test_operator_edits_name_and_audiences_but_not_slug_or_hosts(operated):
    client, acme, _globex = operated
    data = change_post(
        acme,
        slug="stolen",
        name="Acme Renamed",
        **{"audiences-0-audience": "https://new.acme.test"},
        **inline_management("hosts", 1),
        **{"hosts-0-hostname": "evil.localhost"},
    )

    response = client.post(change_url(acme), data)

    assert response.status_code == 302
    acme.refresh_from_db()
    assert (acme.slug, acme.name) == ("acme", "Acme Renamed")
    assert [a.audience for a in acme.audiences.all()] == ["https://new.acme.test"]
    assert [h.hostname for h in acme.hosts.all()] == ["acme.localhost"]


def test_repointing_a_tenant_fetches_the_new_keys_once_the_save_commits(
    operated, issuer, django_capture_on_commit_callbacks
):
    client, acme, _globex = operated
    new_issuer = issuer.url_for("acme-moved")

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            change_url(acme), change_post(acme, **{"issuers-0-issuer_override": new_issuer})
        )

    assert response.status_code == 302
    acme.refresh_from_db()
    assert issuer.store.current("acme-moved")[0] in kids_of(acme.jwks_url)


def test_saving_a_tenant_without_issuer_changes_fetches_nothing(
    operated, issuer, django_capture_on_commit_callbacks
):
    client, acme, _globex = operated
    before = issuer.hits("/acme/.well-known/jwks.json")

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(change_url(acme), change_post(acme, name="Acme Saved"))

    assert response.status_code == 302
    assert issuer.hits("/acme/.well-known/jwks.json") == before


def test_every_change_is_recorded_in_the_admin_history(operated):
    from django.contrib.admin.models import LogEntry

    client, acme, _globex = operated
    client.post(change_url(acme), change_post(acme, name="Acme Logged"))

    entry = LogEntry.objects.get(object_id=str(acme.pk))
    assert entry.user.username == "op" and "Name" in entry.get_change_message()


def test_staff_without_tenants_sees_no_tenant_admin(make_tenant, django_user_model, client):
    make_tenant("acme")
    staff = django_user_model.objects.create_user("nobody", password="pw-x-123", is_staff=True)
    client.force_login(staff)

    assert client.get("/admin/tenants/tenant/").status_code == 403
    assert "Tenants" not in client.get("/admin/").content.decode()


def test_superuser_sees_health_and_can_filter_by_it(admin_client, make_tenant, issuer):
    make_tenant("healthy")
    make_tenant("unfetched")
    admin_client.post(
        "/admin/tenants/tenant/",
        {
            "action": "refresh_keys_action",
            "_selected_action": [Tenant.objects.get(slug="healthy").pk],
        },
    )

    listing = admin_client.get("/admin/tenants/tenant/?health=ok").content.decode()
    missing = admin_client.get("/admin/tenants/tenant/?health=missing").content.decode()

    assert ">healthy<" in listing and ">unfetched<" not in listing
    assert ">unfetched<" in missing and "OK · 1 key(s)" in listing


def test_check_issuer_twice_within_the_cooldown_warns_and_fetches_nothing(
    admin_client, make_tenant, issuer
):
    tenant = make_tenant("checked")
    url = f"/admin/tenants/tenant/{tenant.pk}/check-issuer/"
    discovery = "/checked/.well-known/openid-configuration"
    before = issuer.hits(discovery)
    first = admin_client.post(url, follow=True)  # the change page shows (and uses up) its messages

    second = admin_client.post(url)

    assert issuer.hits(discovery) - before == 1
    assert {m.level_tag for m in first.context["messages"]} == {"success"}
    assert [(m.level_tag, m.message) for m in get_messages(second.wsgi_request)] == [
        ("warning", "The issuer of checked was checked less than 10 s ago; try again in a moment.")
    ]


def test_the_key_set_panel_names_the_dpop_mode_and_proof_algorithms(admin_client, make_tenant):
    tenant = make_tenant("acme", dpop_algorithms=["ES256", "EdDSA"], dpop_nonce=True)

    page = admin_client.get(f"/admin/tenants/tenant/{tenant.pk}/change/").content.decode()

    assert "allowed: Bearer or DPoP; proofs signed with ES256, EdDSA, carrying a nonce" in page
    for field in ("token_profile", "organizations", "dpop", "dpop_algorithms", "dpop_nonce"):
        assert f'name="{field}"' in page, field


def test_organizations_are_entered_one_per_line_and_validated(operator):
    saved = operator.post(ADD_URL, tenant_post(organizations="org_A1\r\norg_B2, org_C3"))
    refused = operator.post(ADD_URL, tenant_post(slug="other", organizations="org_A1 acme"))

    assert saved.status_code == 302
    assert Tenant.objects.get(slug="initech").organizations == ["org_A1", "org_B2", "org_C3"]
    assert refused.status_code == 200
    assert "acme is not an Auth0 organization id" in refused.content.decode()


@pytest.mark.parametrize("action", ["refresh-keys", "check-issuer"])
@pytest.mark.parametrize("object_id", ["abc", "1.5", "%00", "9" * 30])
def test_an_action_on_an_id_that_is_no_tenant_is_404_not_500(operator, action, object_id):
    response = operator.post(f"/admin/tenants/tenant/{object_id}/{action}/")

    assert response.status_code == 404


@pytest.mark.parametrize("changelist", ["/admin/tenants/tenant/", "/admin/auth/user/"])
@pytest.mark.parametrize("selected", [["abc"], ["1", "\x00"], ["-1.5"]])
def test_an_action_on_a_selection_that_holds_no_id_is_refused_with_a_message(
    operator, make_tenant, changelist, selected
):
    make_tenant("acme")
    action = "refresh_keys_action" if "tenant" in changelist else "delete_selected"

    response = operator.post(
        changelist, {"action": action, "index": "0", "_selected_action": selected}, follow=True
    )

    assert response.status_code == 200
    assert (
        "no id of" in response.content.decode()
        and "nothing was changed" in response.content.decode()
    )
    assert Tenant.objects.filter(slug="acme").exists()
