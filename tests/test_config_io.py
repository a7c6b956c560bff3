"""Tenants as JSON: ``manage.py tenants import FILE`` and ``export``, and tenants/config_io.py."""

import io
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from tenants import config_io
from tenants.config_io import ImportSummary, TenantImportError, export_tenants, import_tenants
from tenants.models import Tenant, TenantChange
from tests.fixtures import TokenFactory, bearer

pytestmark = pytest.mark.django_db

TENANTS_PAGE_DOCUMENT = {
    "tenants": [
        {
            "slug": "acme",
            "name": "Acme",
            "domain": "acme.eu.auth0.com",
            "audiences": ["https://api.acme.test"],
            "hosts": ["acme.localhost"],
            "scope_rules": [{"endpoint": "messages:private-scoped", "scopes": ["read:messages"]}],
        }
    ]
}
# Every optional field away from its default, in export's key order with rows sorted.
FULL_DOCUMENT = {
    "tenants": [
        {
            "slug": "globex",
            "name": "Globex Corporation",
            "active": False,
            "domain": "globex.us.auth0.com",
            "issuer": "https://login.globex.test/",
            "jwks_url": "https://keys.globex.test/jwks.json",
            "audiences": ["https://api.globex.test", "https://billing.globex.test"],
            "hosts": ["api.globex.localhost", "globex.localhost"],
            "scope_rules": [
                {"endpoint": "messages:private", "scopes": []},
                {"endpoint": "messages:private-scoped", "scopes": ["read:messages", "read:mail"]},
            ],
            "algorithms": ["ES256", "RS256"],
            "leeway": 5,
            "scope_claims": "both",
            "provision_users": True,
            "admin_scope": "admin:messages",
            "token_profile": "rfc9068",
            "organizations": ["org_W8rUvXaAQ1o6BGRy", "org_b"],
            "dpop": "required",
            "dpop_algorithms": ["ES256", "PS256"],
            "dpop_nonce": True,
            "cors_origins": ["http://localhost:3000", "https://app.globex.test"],
        },
        {
            "slug": "initech",
            "name": "Initech",
            "active": True,
            "domain": "initech.auth0.com",
            "audiences": ["https://api.initech.test"],
            "hosts": [],
            "scope_rules": [],
            "algorithms": ["PS256"],
            "leeway": 600,
            "scope_claims": "permissions",
            "provision_users": False,
            "admin_scope": "",
            "token_profile": "auth0",
            "organizations": [],
            "dpop": "allowed",
            "dpop_algorithms": ["ES256"],
            "dpop_nonce": False,
            "cors_origins": [],
        },
    ]
}


def item(**fields: Any) -> dict[str, Any]:
    """A valid tenant entry for acme, with fields overridden (None removes the field)."""
    entry = {**TENANTS_PAGE_DOCUMENT["tenants"][0], **fields}
    return {key: value for key, value in entry.items() if value is not None}


def problems(document: Any) -> list[str]:
    """The problems ``import_tenants`` refuses a document with."""
    with pytest.raises(TenantImportError) as refused:
        import_tenants(document)
    return refused.value.errors


def export_text() -> str:
    """What ``manage.py tenants export`` prints."""
    out = io.StringIO()
    call_command("tenants", "export", stdout=out)
    return out.getvalue()


@pytest.fixture
def insecure_off(settings: Any) -> None:
    """Production policy: https only, public hostnames only."""
    settings.AUTHZ = {**settings.AUTHZ, "ALLOW_INSECURE_ISSUERS": False}


@pytest.fixture
def write_file(tmp_path: Path) -> Any:
    """Write a document (or raw text) to a file and return its path."""

    def write(content: Any, name: str = "tenants.json") -> str:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return str(path)

    return write


@pytest.fixture
def run_import(write_file: Any) -> Any:
    """Run ``manage.py tenants import`` on a document; return its stdout."""

    def run(content: Any) -> str:
        out = io.StringIO()
        call_command("tenants", "import", write_file(content), stdout=out, stderr=io.StringIO())
        return out.getvalue()

    return run


@pytest.mark.parametrize("insecure", [True, False], ids=["insecure-on", "insecure-off"])
def test_the_tenants_pages_example_imports(settings, run_import, insecure):
    settings.AUTHZ = {**settings.AUTHZ, "ALLOW_INSECURE_ISSUERS": insecure}

    output = run_import(TENANTS_PAGE_DOCUMENT)

    tenant = Tenant.objects.get(slug="acme")
    assert "Imported 1 tenant(s): 1 created, 0 updated; 1 key set(s) to refresh." in output
    assert (tenant.name, tenant.issuers.get().domain, tenant.active) == (
        "Acme",
        "acme.eu.auth0.com",
        True,
    )
    assert [h.hostname for h in tenant.hosts.all()] == ["acme.localhost"]
    assert [a.audience for a in tenant.audiences.all()] == ["https://api.acme.test"]
    assert [(r.endpoint, r.scopes) for r in tenant.scope_rules.all()] == [
        ("messages:private-scoped", "read:messages")
    ]


def test_issuer_and_jwks_url_derive_from_the_domain():
    import_tenants(TENANTS_PAGE_DOCUMENT)

    tenant = Tenant.objects.get(slug="acme")
    assert tenant.issuer == "https://acme.eu.auth0.com/"
    assert tenant.jwks_url == "https://acme.eu.auth0.com/.well-known/jwks.json"


@pytest.mark.parametrize(
    ("overrides", "issuer", "jwks_url"),
    [
        (
            {"issuer": "https://login.acme.test/"},
            "https://login.acme.test/",
            "https://login.acme.test/.well-known/jwks.json",
        ),
        (
            {"jwks_url": "https://keys.acme.test/jwks.json"},
            "https://acme.eu.auth0.com/",
            "https://keys.acme.test/jwks.json",
        ),
        (
            {"domain": None, "issuer": "https://id.acme.test/realm/"},
            "https://id.acme.test/realm/",
            "https://id.acme.test/realm/.well-known/jwks.json",
        ),
    ],
    ids=["issuer", "jwks-url", "issuer-without-domain"],
)
def test_overrides_replace_the_derived_addresses(insecure_off, overrides, issuer, jwks_url):
    import_tenants({"tenants": [item(**overrides)]})

    tenant = Tenant.objects.get(slug="acme")
    assert (tenant.issuer, tenant.jwks_url) == (issuer, jwks_url)


def test_omitted_optional_fields_take_their_defaults():
    import_tenants({"tenants": [item(hosts=None, scope_rules=None)]})

    tenant = Tenant.objects.get(slug="acme")
    assert tenant.active is True
    assert (tenant.algorithms, tenant.leeway, tenant.scope_claims) == (["RS256"], 60, "scope")
    assert tenant.provision_users is False
    assert (tenant.hosts.count(), tenant.scope_rules.count()) == (0, 0)


def test_export_writes_every_field_in_the_import_format():
    import_tenants(FULL_DOCUMENT)

    assert export_tenants() == FULL_DOCUMENT
    assert json.loads(export_text()) == FULL_DOCUMENT


def test_export_import_export_round_trip_is_identical(run_import):
    import_tenants(FULL_DOCUMENT)
    first = export_text()
    Tenant.objects.all().delete()

    run_import(first)

    assert export_text() == first


def test_export_prints_indented_json():
    import_tenants(TENANTS_PAGE_DOCUMENT)

    assert export_text() == json.dumps(export_tenants(), indent=2) + "\n"


def test_import_reads_stdin_when_the_file_is_a_dash(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(TENANTS_PAGE_DOCUMENT)))

    call_command("tenants", "import", "-", stdout=io.StringIO())

    assert Tenant.objects.filter(slug="acme").exists()


def test_import_counts_created_and_updated_tenants_and_distinct_active_key_sets():
    # globex is inactive: only initech's key set is to refresh
    assert import_tenants(FULL_DOCUMENT) == ImportSummary(created=2, updated=0, key_sets=1)
    same_issuer = item(slug="initech", hosts=[], audiences=["https://api.initech.test"])

    summary = import_tenants({"tenants": [item(), same_issuer]})

    assert summary == ImportSummary(created=1, updated=1, key_sets=1)


def test_command_reports_progress_on_stderr(write_file, monkeypatch):
    monkeypatch.setattr(config_io, "PROGRESS_EVERY", 1)
    out, err = io.StringIO(), io.StringIO()

    call_command("tenants", "import", write_file(FULL_DOCUMENT), stdout=out, stderr=err)

    assert err.getvalue().splitlines() == ["  1/2 tenants checked", "  2/2 tenants checked"]
    assert "Imported 2 tenant(s): 2 created, 0 updated; 1 key set(s) to refresh." in out.getvalue()


def test_an_import_with_eager_tasks_fetches_nothing_until_the_first_request(
    client, issuer, django_capture_on_commit_callbacks
):
    issuer_url = issuer.url_for("lazy-import")
    fields = {"domain": None, "issuer": issuer_url, "hosts": []}
    with django_capture_on_commit_callbacks(execute=True):
        import_tenants({"tenants": [item(**fields), item(slug="globex", **fields)]})
    fetched_on_import = issuer.hits("/lazy-import/.well-known/jwks.json")
    token = TokenFactory(issuer, "lazy-import", "https://api.acme.test").token()

    response = client.get("/t/acme/api/private", **bearer(token))

    assert (fetched_on_import, response.status_code) == (0, 200)
    assert issuer.hits("/lazy-import/.well-known/jwks.json") == 1


def test_upsert_by_slug_updates_the_tenant_and_replaces_its_rows():
    import_tenants(TENANTS_PAGE_DOCUMENT)
    before = Tenant.objects.get(slug="acme")
    changed = item(
        name="Acme Corporation",
        hosts=["api.acme.localhost"],
        audiences=["https://v2.api.acme.test"],
        scope_rules=[{"endpoint": "messages:private", "scopes": ["read:private"]}],
    )

    import_tenants({"tenants": [changed]})

    tenant = Tenant.objects.get(slug="acme")
    assert (tenant.pk, tenant.name) == (before.pk, "Acme Corporation")
    assert [h.hostname for h in tenant.hosts.all()] == ["api.acme.localhost"]
    assert [a.audience for a in tenant.audiences.all()] == ["https://v2.api.acme.test"]
    assert [(r.endpoint, r.scopes) for r in tenant.scope_rules.all()] == [
        ("messages:private", "read:private")
    ]


def test_lists_left_out_of_the_file_remove_the_rows():
    import_tenants(TENANTS_PAGE_DOCUMENT)

    import_tenants({"tenants": [item(hosts=None, scope_rules=None)]})

    tenant = Tenant.objects.get(slug="acme")
    assert (tenant.hosts.count(), tenant.scope_rules.count()) == (0, 0)


def test_tenants_absent_from_the_file_are_kept():
    import_tenants(FULL_DOCUMENT)

    import_tenants(TENANTS_PAGE_DOCUMENT)

    assert list(Tenant.objects.values_list("slug", flat=True)) == ["acme", "globex", "initech"]


def test_a_host_can_move_between_tenants_in_one_file():
    import_tenants({"tenants": [item(slug="zeta", hosts=["shared.localhost"])]})

    import_tenants({"tenants": [item(hosts=["shared.localhost"]), item(slug="zeta", hosts=[])]})

    assert Tenant.objects.get(hosts__hostname="shared.localhost").slug == "acme"


@pytest.mark.parametrize("invalid_at", [0, 2], ids=["invalid-first", "invalid-last"])
def test_an_invalid_file_changes_nothing(invalid_at):
    import_tenants(TENANTS_PAGE_DOCUMENT)
    before = export_tenants()
    entries = [
        item(name="Renamed", hosts=["new.acme.localhost"], scope_rules=[]),
        item(slug="globex", name="Globex", hosts=["globex.localhost"]),
    ]
    entries.insert(invalid_at, item(slug="initech", hosts=["initech.localhost"], leeway=601))

    with pytest.raises(TenantImportError):
        import_tenants({"tenants": entries})

    assert export_tenants() == before
    assert list(Tenant.objects.values_list("slug", flat=True)) == ["acme"]


def test_command_refuses_an_invalid_file_and_changes_nothing(run_import):
    import_tenants(TENANTS_PAGE_DOCUMENT)
    before = export_tenants()
    document = {"tenants": [item(name="Renamed"), item(slug="globex", scope_claims="roles")]}

    with pytest.raises(CommandError, match="Nothing was imported"):
        run_import(document)

    assert export_tenants() == before


def test_command_error_lists_every_problem(write_file):
    document = {"tenants": [item(leeway=601), item(slug="globex", scope_claims="roles")]}
    err = io.StringIO()

    with pytest.raises(CommandError) as refused:
        call_command("tenants", "import", write_file(document), stdout=io.StringIO(), stderr=err)

    reported = f"{refused.value}\n{err.getvalue()}"
    assert "tenants[0] (acme): leeway: Ensure this value is less than or equal to 600." in reported
    assert "tenants[1] (globex): scope_claims: Select a valid choice." in reported


def test_every_problem_of_one_tenant_is_reported_at_once():
    reported = "\n".join(problems({"tenants": [item(leeway=601, hosts=["bad_host"])]}))

    assert "leeway:" in reported
    assert "hosts[0]: hostname:" in reported


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"active": "off"}, "tenants[0] (acme): active: must be a bool"),
        ({"provision_users": "no"}, "tenants[0] (acme): provision_users: must be a bool"),
        ({"dpop_nonce": 1}, "tenants[0] (acme): dpop_nonce: must be a bool"),
        ({"leeway": True}, "tenants[0] (acme): leeway: must be a int"),
        ({"name": ["x"]}, "tenants[0] (acme): name: must be a str"),
        ({"admin_scope": ["a"]}, "tenants[0] (acme): admin_scope: must be a str"),
        ({"domain": 5}, "tenants[0] (acme): domain: must be a str"),
        ({"hosts": [True]}, "tenants[0] (acme): hosts: each item must be a non-empty str"),
        ({"hosts": [None, "a.test"]}, "tenants[0] (acme): hosts: each item must be a non-empty"),
        ({"audiences": [["x"]]}, "tenants[0] (acme): audiences: each item must be a non-empty"),
        ({"cors_origins": [""]}, "tenants[0] (acme): cors_origins: each item must be a non-emp"),
        (
            {"routes": [{"methods": ["GET"], "path": "/a", "scopes": [" "]}]},
            "tenants[0] (acme): routes[0]: scopes: each item must be a non-empty str",
        ),
        ({"issuer": "https://[::1/"}, "tenants[0] (acme): issuer: Enter a valid URL."),
        ({"jwks_url": "https://[zz]/"}, "tenants[0] (acme): jwks_url: Enter a valid URL."),
    ],
)
def test_a_field_of_the_wrong_json_type_is_refused_not_converted(fields, expected):
    reported = problems({"tenants": [item(**fields)]})

    assert any(problem.startswith(expected) for problem in reported), reported


@pytest.mark.parametrize(
    ("slugs", "expected"),
    [
        ([1], "tenants[0]: slug: must be a str"),
        ([["a"]], "tenants[0]: slug: must be a str"),
        (["1", 1], "tenants[1]: slug: must be a str"),
        (["acme", " acme "], "slug 'acme' appears more than once"),
    ],
)
def test_one_tenant_is_never_named_twice_in_a_file(db, slugs, expected):
    document = {"tenants": [item(slug=slug) for slug in slugs]}

    assert expected in problems(document)
    assert not Tenant.objects.exists()


def test_problems_of_every_tenant_are_reported():
    document = {"tenants": [item(leeway=601), item(slug="globex", algorithms=["HS256"])]}

    reported = problems(document)

    assert [p.split(":")[0] for p in reported] == ["tenants[0] (acme)", "tenants[1] (globex)"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"colour": "red"}, "tenants[0] (acme): unknown field 'colour'"),
        ({"slug": None}, "tenants[0]: slug: this field is required"),
        ({"name": None}, "tenants[0] (acme): name: this field is required"),
        ({"audiences": None}, "tenants[0] (acme): audiences: this field is required"),
        ({"audiences": []}, "tenants[0] (acme): audiences: Please submit at least 1 form."),
        (
            {"audiences": ["https://api.acme.test", "https://api.acme.test"]},
            "tenants[0] (acme): audiences: Please correct the duplicate data for audience.",
        ),
        (
            {"hosts": ["acme.localhost", "ACME.localhost"]},
            "tenants[0] (acme): hosts: Please correct the duplicate data for hostname.",
        ),
        (
            {"hosts": ["acme_x.localhost"]},
            "tenants[0] (acme): hosts[0]: hostname: Enter a hostname",
        ),
        ({"hosts": "acme.localhost"}, "tenants[0] (acme): hosts: must be a list"),
        (
            {"scope_rules": [{"endpoint": "messages:private", "scopes": ['read:"messages"']}]},
            'tenants[0] (acme): scope_rules[0]: scopes: read:"messages" is not a valid scope',
        ),
        (
            {"scope_rules": ["messages:private"]},
            'tenants[0] (acme): scope_rules: each rule is {"endpoint": ..., "scopes": [...]}',
        ),
        (
            {"domain": "https://acme.auth0.com"},
            "tenants[0] (acme): domain: Enter the bare domain, such as acme.eu.auth0.com",
        ),
        (
            {"domain": "acme.auth0.com/path"},
            "tenants[0] (acme): domain: Enter the bare domain, such as acme.eu.auth0.com",
        ),
        (
            {"domain": None},
            "tenants[0] (acme): domain: Enter the Auth0 domain, or an issuer override.",
        ),
        (
            {"algorithms": ["RS256", "HS256"]},
            "tenants[0] (acme): algorithms: Select a valid choice. HS256 is not one of the",
        ),
        ({"algorithms": []}, "tenants[0] (acme): algorithms: This field is required."),
        (
            {"leeway": 601},
            "tenants[0] (acme): leeway: Ensure this value is less than or equal to 600.",
        ),
        (
            {"scope_claims": "roles"},
            "tenants[0] (acme): scope_claims: Select a valid choice. roles is not one of the",
        ),
        (
            {"issuer": "https://login.acme.test/?tenant=1"},
            "tenants[0] (acme): issuer: Remove credentials, query string and fragment",
        ),
        (
            {"admin_scope": "admin:messages delete:messages"},
            "tenants[0] (acme): admin_scope: Enter one scope",
        ),
        ({"token_profile": "jwt"}, "tenants[0] (acme): token_profile: Select a valid choice."),
        (
            {"organizations": ["org_ok", "acme"]},
            "tenants[0] (acme): organizations: acme is not an Auth0 organization id",
        ),
        (
            {"organizations": ["org_a", "org_a"]},
            "tenants[0] (acme): organizations: An organization is listed twice.",
        ),
        (
            {"organizations": "org_a"},
            "tenants[0] (acme): organizations: Enter a list of organization ids.",
        ),
        (
            {"organizations": [7]},
            "tenants[0] (acme): organizations: 7 is not an Auth0 organization id",
        ),
    ],
    ids=[
        "unknown-field",
        "missing-slug",
        "missing-name",
        "missing-audiences",
        "empty-audiences",
        "duplicate-audiences",
        "duplicate-hosts",
        "bad-host",
        "hosts-not-a-list",
        "bad-scope-token",
        "rule-not-an-object",
        "domain-with-scheme",
        "domain-with-path",
        "no-domain-or-issuer",
        "hs256",
        "no-algorithms",
        "leeway-601",
        "scope-claims-roles",
        "issuer-with-query",
        "two-admin-scopes",
        "unknown-profile",
        "not-an-organization",
        "duplicate-organization",
        "organizations-not-a-list",
        "organization-not-a-string",
    ],
)
def test_each_invalid_field_has_a_clear_error(fields, expected):
    reported = problems({"tenants": [item(**fields)]})

    assert any(problem.startswith(expected) for problem in reported), reported
    assert not Tenant.objects.exists()


def test_unknown_endpoint_in_a_scope_rule_is_named_in_every_error():
    rules = [{"endpoint": "messages:nope", "scopes": ["read:messages"]}]

    reported = problems({"tenants": [item(scope_rules=rules)]})

    assert reported
    assert all("scope_rules[0]: endpoint:" in p and "messages:nope" in p for p in reported)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"domain": "acme.auth0.com:8443"}, "domain: A port is not allowed"),
        ({"domain": "127.0.0.1"}, "domain: IP addresses and loopback names are not allowed"),
        ({"domain": "localhost"}, "domain: IP addresses and loopback names are not allowed"),
        ({"issuer": "http://login.acme.test/"}, "issuer: Issuer and JWKS addresses must start"),
        ({"jwks_url": "http://login.acme.test/jwks"}, "jwks_url: Issuer and JWKS addresses"),
        ({"issuer": "https://127.0.0.1/"}, "issuer: IP addresses and loopback names"),
    ],
    ids=["domain-port", "domain-ip", "domain-localhost", "http-issuer", "http-jwks", "ip-issuer"],
)
def test_insecure_issuers_are_refused_when_not_allowed(insecure_off, fields, expected):
    reported = problems({"tenants": [item(**fields)]})

    assert any(p.startswith(f"tenants[0] (acme): {expected}") for p in reported), reported


@pytest.mark.parametrize(
    "fields",
    [
        {"domain": "localhost:8443"},
        {"domain": "127.0.0.1"},
        {"domain": None, "issuer": "http://127.0.0.1:8000/acme/"},
    ],
    ids=["loopback-with-port", "ip-literal", "http-issuer"],
)
def test_insecure_issuers_are_accepted_when_allowed(settings, fields):
    settings.AUTHZ = {**settings.AUTHZ, "ALLOW_INSECURE_ISSUERS": True}

    import_tenants({"tenants": [item(**fields)]})

    assert Tenant.objects.filter(slug="acme").exists()


def test_a_host_of_another_tenant_is_refused():
    import_tenants(TENANTS_PAGE_DOCUMENT)

    reported = problems({"tenants": [item(slug="globex", hosts=["acme.localhost"])]})

    assert reported == [
        "tenants[0] (globex): hosts[0]: hostname: Tenant host with this Hostname already exists."
    ]


def test_a_host_used_twice_in_the_file_is_refused():
    document = {
        "tenants": [
            item(slug="globex", hosts=["shared.localhost"]),
            item(slug="initech", hosts=["shared.localhost"]),
        ]
    }

    reported = problems(document)

    assert reported == [
        "tenants[1] (initech): hosts[0]: hostname: Tenant host with this Hostname already exists."
    ]
    assert not Tenant.objects.exists()


def test_a_slug_used_twice_in_the_file_is_refused():
    document = {"tenants": [item(name="First"), item(name="Second")]}

    reported = problems(document)

    assert any("slug" in problem for problem in reported), reported
    assert not Tenant.objects.exists()


@pytest.mark.parametrize(
    "document",
    [[], "tenants", None, {}, {"tenants": {}}, {"tenants": "acme"}],
    ids=["list", "string", "null", "no-tenants", "tenants-object", "tenants-string"],
)
def test_a_document_that_is_not_an_object_with_a_tenants_list_is_refused(document):
    assert problems(document) == ['The file must be a JSON object with a "tenants" list.']


def test_a_tenant_entry_that_is_not_an_object_is_refused():
    assert problems({"tenants": [item(), "globex"]}) == ["tenants[1]: must be an object"]
    assert not Tenant.objects.exists()


@pytest.mark.parametrize("content", ["[]", '{"tenants": {}}'], ids=["list", "tenants-object"])
def test_command_refuses_a_badly_shaped_document(run_import, content):
    with pytest.raises(CommandError, match="Nothing was imported"):
        run_import(content)


def test_command_refuses_a_file_that_is_not_json(run_import):
    with pytest.raises(CommandError, match="is not valid JSON"):
        run_import('{"tenants": [')

    assert not Tenant.objects.exists()


# A file large enough to be created in bulk, in several batches.
BULK = 300
HOST_TAKEN = "hostname: Tenant host with this Hostname already exists."


def bulk_entry(index: int) -> dict[str, Any]:
    """Tenant ``index`` of a large file, as export writes it: every inline and option varies."""
    slug = f"bulk{index:04d}"
    issuer = (
        {"issuer": f"https://login{index % 7}.bulk.test/"}
        if index % 3
        else {"domain": f"bulk{index % 5}.auth0.com"}
    )
    jwks_url = {"jwks_url": f"https://keys.bulk.test/{index % 3}.json"} if index % 4 == 0 else {}
    return {
        "slug": slug,
        "name": f"Bulk {index}",
        "active": index % 5 != 0,
        **issuer,
        **jwks_url,
        "audiences": [f"https://api.{slug}.test", f"https://billing.{slug}.test"][: 1 + index % 2],
        "hosts": [f"api.{slug}.localhost", f"{slug}.localhost"][2 - index % 3 :][: index % 3],
        "scope_rules": (
            [{"endpoint": "messages:private-scoped", "scopes": ["read:messages"]}]
            if index % 2
            else []
        ),
        "algorithms": ["ES256", "RS256"] if index % 6 == 0 else ["RS256"],
        "leeway": index % 601,
        "scope_claims": ["scope", "permissions", "both"][index % 3],
        "provision_users": index % 7 == 0,
        "admin_scope": "admin:messages" if index % 8 == 0 else "",
        "token_profile": "rfc9068" if index % 9 == 0 else "auth0",
        "organizations": [f"org_{index % 4}", "org_shared"] if index % 5 == 1 else [],
        "dpop": ["allowed", "disabled", "required"][index % 3],
        "dpop_algorithms": ["ES256", "EdDSA"] if index % 4 == 2 else ["ES256"],
        "dpop_nonce": index % 6 == 1,
        "cors_origins": [f"https://app{index % 3}.bulk.test"] if index % 4 == 1 else [],
    }


def bulk_entries(count: int = BULK) -> list[dict[str, Any]]:
    """The first ``count`` tenants of a large file."""
    return [bulk_entry(index) for index in range(count)]


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The JWKS URLs that imports put in their batch of refreshes (queued once each)."""
    urls: set[str] = set()
    batched = config_io.refreshes_batched

    @contextmanager
    def recording() -> Iterator[set[str]]:
        with batched() as batch:
            yield batch
            urls.update(batch)

    monkeypatch.setattr(config_io, "refreshes_batched", recording)
    return urls


def changed_slugs(after: int) -> list[str | None]:
    """The slug of each change written after change ``after`` (None: a deleted tenant), sorted."""
    slugs = dict(Tenant.objects.values_list("pk", "slug"))
    ids = TenantChange.objects.filter(id__gt=after).values_list("tenant_id", flat=True)
    return sorted((slugs.get(tenant_id) for tenant_id in ids), key=str)


def last_change() -> int:
    """The id of the latest change, 0 when there is none."""
    return TenantChange.objects.order_by("id").values_list("id", flat=True).last() or 0


def active_jwks_urls() -> set[str]:
    """The JWKS URLs of the active tenants."""
    return {tenant.jwks_url for tenant in Tenant.objects.filter(active=True)}


def test_new_tenants_created_in_bulk_are_what_saving_them_one_by_one_writes(queued):
    document = {"tenants": bulk_entries()}
    placeholders = [
        {"slug": e["slug"], "name": "-", "domain": "old.auth0.com", "audiences": ["https://old"]}
        for e in document["tenants"]
    ]
    import_tenants({"tenants": placeholders})
    mark = last_change()
    queued.clear()

    # Every tenant exists: each is saved through its forms, as admin saves it.
    one_by_one = import_tenants(document)
    saved = (export_tenants(), changed_slugs(mark), set(queued))
    Tenant.objects.all().delete()
    mark = last_change()
    queued.clear()

    in_bulk = import_tenants(document)

    slugs = [entry["slug"] for entry in document["tenants"]]
    assert (export_tenants(), changed_slugs(mark), queued) == saved
    assert saved == (document, slugs, active_jwks_urls())
    assert (in_bulk.created, in_bulk.updated) == (BULK, 0)
    assert (one_by_one.created, one_by_one.updated) == (0, BULK)
    assert in_bulk.key_sets == one_by_one.key_sets == len(active_jwks_urls()) < BULK


def test_a_bulk_import_writes_one_change_per_tenant_and_queues_each_url_once(queued):
    mark = last_change()

    summary = import_tenants({"tenants": bulk_entries()})

    assert changed_slugs(mark) == [entry["slug"] for entry in bulk_entries()]
    assert queued == active_jwks_urls()
    assert summary == ImportSummary(created=BULK, updated=0, key_sets=len(queued))


def test_inactive_tenants_created_in_bulk_queue_no_refresh(queued):
    entries = [{**entry, "active": False} for entry in bulk_entries(20)]

    summary = import_tenants({"tenants": entries})

    assert (summary, queued) == (ImportSummary(created=20, updated=0, key_sets=0), set())


def test_in_a_large_file_a_host_claimed_earlier_is_refused(monkeypatch):
    monkeypatch.setattr(config_io, "CREATE_EVERY", 50)  # the first tenants are inserted already
    entries = bulk_entries()
    entries[250]["hosts"] = [" BULK0001.localhost"]  # tenant 1's host, as HostForm cleans it

    reported = problems({"tenants": entries})

    assert reported == [f"tenants[250] (bulk0250): hosts[0]: {HOST_TAKEN}"]
    assert not Tenant.objects.exists()


def test_in_a_large_file_a_host_of_a_tenant_outside_it_is_refused():
    import_tenants(TENANTS_PAGE_DOCUMENT)
    entries = bulk_entries()
    entries[-1]["hosts"] = ["bulk0299.localhost", "ACME.localhost"]

    reported = problems({"tenants": entries})

    assert reported == [f"tenants[299] (bulk0299): hosts[1]: {HOST_TAKEN}"]
    assert list(Tenant.objects.values_list("slug", flat=True)) == ["acme"]


def test_a_refused_tenant_does_not_take_its_hosts():
    # As when tenants were saved one by one: a host is taken by a tenant that is saved.
    document = {
        "tenants": [
            item(slug="globex", hosts=["shared.localhost"], leeway=601),
            item(slug="initech", hosts=["shared.localhost"]),
        ]
    }

    reported = problems(document)

    assert reported == [
        "tenants[0] (globex): leeway: Ensure this value is less than or equal to 600."
    ]


def test_a_host_moves_from_an_updated_tenant_to_a_new_one_in_a_large_file():
    import_tenants(TENANTS_PAGE_DOCUMENT)
    entries = bulk_entries()
    entries[0]["hosts"] = ["acme.localhost"]  # a new tenant takes acme's host...

    summary = import_tenants({"tenants": [*entries, item(hosts=[])]})  # ...which acme gives up

    assert (summary.created, summary.updated) == (BULK, 1)
    assert Tenant.objects.get(hosts__hostname="acme.localhost").slug == "bulk0000"


def test_a_slug_that_cleans_to_an_existing_one_is_refused():
    import_tenants(TENANTS_PAGE_DOCUMENT)

    reported = problems({"tenants": [item(slug=" acme ", hosts=[])]})

    assert reported == ["tenants[0] ( acme ): slug: Tenant with this Slug already exists."]


def test_large_files_are_read_and_cleared_in_chunks(monkeypatch):
    monkeypatch.setattr(config_io, "CHUNK", 7)  # every ``__in`` filter takes several queries
    import_tenants(TENANTS_PAGE_DOCUMENT)
    outside = export_tenants()["tenants"]
    import_tenants({"tenants": bulk_entries(40)})
    changed = [{**entry, "hosts": [f"new.{entry['slug']}.localhost"]} for entry in bulk_entries(40)]

    summary = import_tenants({"tenants": changed})
    refused = problems({"tenants": [*changed[:39], {**changed[39], "hosts": ["acme.localhost"]}]})

    assert (summary.created, summary.updated) == (0, 40)
    assert export_tenants() == {"tenants": outside + changed}
    assert refused == [f"tenants[39] (bulk0039): hosts[0]: {HOST_TAKEN}"]


def test_a_number_slug_is_refused_not_read_as_its_text():
    import_tenants({"tenants": [item(slug="5")]})

    reported = problems({"tenants": [item(slug=5, name="Five")]})

    assert reported == ["tenants[0]: slug: must be a str"]
    assert list(Tenant.objects.values_list("slug", "name")) == [("5", "Acme")]
