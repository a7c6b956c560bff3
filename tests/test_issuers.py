"""Several issuers per tenant: a token is checked against the listed issuer its iss names.

A canonical Auth0 domain and a custom domain are two issuer names of the development issuer
(it serves any name under its URL); a third name is an issuer the tenant does not list.
"""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from authz.tasks import refresh_key_set
from authz.token_cache import refused_tokens, verified_tokens
from tenants.config_io import TenantImportError, export_tenants, import_tenants
from tenants.directory import directory, jwks_urls
from tenants.validation import MAX_ISSUERS
from tests.fixtures import bearer, create_tenant

PRIVATE = "/t/dual/api/private"
AUDIENCE = "https://api.dual.test"


@pytest.fixture
def dual(db, issuer):
    """A tenant listing two issuers of its own: a canonical domain and a custom one."""
    issuers = [{"issuer": issuer.url_for("canonical")}, {"issuer": issuer.url_for("custom")}]
    return create_tenant(issuer, "dual", issuers=issuers, audiences=[AUDIENCE])


@pytest.fixture
def canonical(tokens):
    return tokens("canonical", AUDIENCE)


@pytest.fixture
def custom(tokens):
    return tokens("custom", AUDIENCE)


@pytest.fixture
def third(tokens):
    return tokens("third", AUDIENCE)


def key_set_fetches(issuer) -> int:
    """Every key set request the development issuer has answered, whatever the name."""
    return sum(n for what, n in issuer.stats().items() if what.endswith("/jwks.json"))


def test_tokens_of_both_listed_issuers_are_accepted(client, dual, canonical, custom):
    for factory in (canonical, custom):
        response = client.get(PRIVATE, **bearer(factory.token()))

        assert response.status_code == 200, response.json()


def test_a_token_of_an_unlisted_issuer_is_refused_and_fetches_nothing(
    client, dual, canonical, third, issuer
):
    assert client.get(PRIVATE, **bearer(canonical.token())).status_code == 200
    before = key_set_fetches(issuer)

    unknown_kid = third.token(headers={"kid": "never-published"})
    answers = [client.get(PRIVATE, **bearer(token)) for token in (third.token(), unknown_kid)]

    assert [(a.status_code, a.json()["code"]) for a in answers] == [(401, "invalid_issuer")] * 2
    assert key_set_fetches(issuer) == before
    assert issuer.hits("/third/.well-known/jwks.json") == 0


def test_an_issuer_listed_by_another_tenant_is_not_one_of_this_tenants(
    client, dual, make_tenant, third, issuer
):
    make_tenant("other", issuer_name="third", audiences=[AUDIENCE])
    before = issuer.hits("/third/.well-known/jwks.json")

    response = client.get(PRIVATE, **bearer(third.token()))

    assert (response.status_code, response.json()["code"]) == (401, "invalid_issuer")
    assert issuer.hits("/third/.well-known/jwks.json") == before


def test_the_warm_path_of_either_issuer_makes_no_query_and_no_fetch(
    client, dual, canonical, custom, issuer, django_assert_num_queries
):
    for factory in (canonical, custom):
        assert client.get(PRIVATE, **bearer(factory.token())).status_code == 200
    before = key_set_fetches(issuer)

    with django_assert_num_queries(0):
        fresh = [client.get(PRIVATE, **bearer(f.token(sub="another"))) for f in (canonical, custom)]
        repeated = [
            client.get(PRIVATE, **bearer(f.token(sub="another"))) for f in (canonical, custom)
        ]

    assert [r.status_code for r in fresh + repeated] == [200] * 4
    assert key_set_fetches(issuer) == before


def test_a_token_is_never_checked_with_the_other_issuers_keys(client, dual, issuer, custom):
    """A token naming the custom issuer but signed by the canonical one's key is refused."""
    kid, _ = issuer.store.current("canonical")
    forged = issuer.store.sign("canonical", custom.claims(), headers={"kid": kid})

    response = client.get(PRIVATE, **bearer(forged))

    assert (response.status_code, response.json()["code"]) == (401, "unknown_key")


def test_rotation_at_one_issuer_leaves_the_others_cached_tokens_alone(
    client, dual, canonical, custom, issuer, settings
):
    settings.AUTHZ = {**settings.AUTHZ, "CONFIG_RECHECK_INTERVAL": 0}
    held = {"canonical": canonical.token(), "custom": custom.token()}
    for token in held.values():
        assert client.get(PRIVATE, **bearer(token)).status_code == 200

    issuer.store.rotate("custom")
    issuer.store.rotate("custom")  # the key that signed the held custom token is gone
    refresh_key_set.delay(dual.issuers.get(position=1).jwks_url)

    assert client.get(PRIVATE, **bearer(held["custom"])).json()["code"] == "unknown_key"
    assert client.get(PRIVATE, **bearer(custom.token())).status_code == 200
    trust = directory.by_slug("dual").issuers
    assert verified_tokens.get(held["canonical"], trust) is not None
    assert verified_tokens.get(held["custom"], trust) is None


def test_adding_an_issuer_ends_the_remembered_refusals_of_its_tokens(client, dual, third, issuer):
    token = third.token()
    assert client.get(PRIVATE, **bearer(token)).json()["code"] == "invalid_issuer"
    assert refused_tokens.held()[0] == 1

    dual.issuers.create(position=2, issuer_override=issuer.url_for("third"))

    assert client.get(PRIVATE, **bearer(token)).status_code == 200


def test_removing_an_issuer_refuses_its_tokens_at_once(client, dual, custom):
    token = custom.token()
    assert client.get(PRIVATE, **bearer(token)).status_code == 200

    dual.issuers.get(position=1).delete()

    assert client.get(PRIVATE, **bearer(token)).json()["code"] == "invalid_issuer"


def test_every_listed_issuer_is_refreshed_and_its_url_known(dual, issuer):
    urls = set(directory.by_slug("dual").jwks_urls)

    assert urls == dual.jwks_urls == {i.jwks_url for i in dual.issuers.all()}
    assert urls <= jwks_urls()


# Import and export.


def item(**fields):
    """An import item for tenant dual."""
    return {"slug": "dual", "name": "Dual", "audiences": [AUDIENCE], **fields}


def test_the_issue_example_imports_and_exports_as_it_was_written(db, settings):
    issuers = [
        {
            "issuer": "https://login.acme.com/",
            "jwks_url": "https://login.acme.com/.well-known/jwks.json",
        },
        {"domain": "acme.eu.auth0.com"},
    ]
    import_tenants({"tenants": [item(issuers=issuers)]})

    (exported,) = export_tenants()["tenants"]

    assert exported["issuers"] == issuers
    assert not {"domain", "issuer", "jwks_url"} & set(exported)
    config = directory.by_slug("dual")
    assert [p.issuer for p in config.issuers.policies] == [
        "https://login.acme.com/",
        "https://acme.eu.auth0.com/",
    ]
    assert config.jwks_urls[1] == "https://acme.eu.auth0.com/.well-known/jwks.json"


def test_one_issuer_is_exported_at_the_top_level_as_before_and_round_trips(db):
    import_tenants({"tenants": [item(issuers=[{"domain": "acme.eu.auth0.com"}])]})
    first = export_tenants()

    import_tenants(first)

    assert export_tenants() == first
    assert first["tenants"][0]["domain"] == "acme.eu.auth0.com"
    assert "issuers" not in first["tenants"][0]


def test_several_issuers_round_trip_exactly(db):
    issuers = [{"domain": f"acme-{index}.eu.auth0.com"} for index in range(3)]
    import_tenants({"tenants": [item(issuers=issuers)]})
    first = export_tenants()

    import_tenants(first)

    assert export_tenants() == first
    assert first["tenants"][0]["issuers"] == issuers


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (
            {"issuers": [{"domain": "a.auth0.com"}, {"issuer": "https://a.auth0.com/"}]},
            "issuers: The issuer https://a.auth0.com/ is listed twice.",
        ),
        (
            {"issuers": [{"domain": f"t{i}.auth0.com"} for i in range(MAX_ISSUERS + 1)]},
            "issuers: Please submit at most 10 forms.",
        ),
        ({"issuers": []}, "issuers: Please submit at least 1 form."),
        (
            {"issuers": [{"domain": "a.auth0.com"}], "domain": "b.auth0.com"},
            'give either "issuers" or the top-level domain, issuer and jwks_url, not both',
        ),
        ({"issuers": [{"domain": "a.auth0.com", "kid": "x"}]}, "issuers[0]: unknown field 'kid'"),
        ({"issuers": ["a.auth0.com"]}, 'issuers[0]: each issuer is {"domain": ...}'),
        ({"issuers": [{"domain": 7}]}, "issuers[0]: domain: must be a str"),
        ({"issuers": [{"jwks_url": "https://a.test/k"}]}, "issuers[0]: domain: Enter the Auth0"),
        ({"issuers": [{"domain": "https://a.auth0.com"}]}, "issuers[0]: domain: Enter the bare"),
        ({}, "domain: Enter the Auth0 domain, or an issuer override."),
    ],
)
def test_bad_issuer_lists_are_refused_with_a_sentence(db, fields, problem):
    with pytest.raises(TenantImportError) as refused:
        import_tenants({"tenants": [item(**fields)]})

    assert any(problem in error for error in refused.value.errors), refused.value.errors


# Admin and debugger.


def test_the_admin_lists_every_issuer_with_its_key_set_health(
    admin_client, dual, canonical, client
):
    assert client.get(PRIVATE, **bearer(canonical.token())).status_code == 200

    page = admin_client.get(f"/admin/tenants/tenant/{dual.pk}/change/").content.decode()
    listing = admin_client.get("/admin/tenants/tenant/").content.decode()

    for listed in dual.issuers.all():
        assert f"Key set of {listed.issuer}" in page
        assert listed.jwks_url in page
        assert listed.issuer in listing
    assert 'id="key-set-status"' in page and 'id="key-set-status-2"' in page


def test_the_admin_saves_a_second_issuer_and_refuses_a_duplicate(admin_client, dual, issuer):
    from tests.test_admin import change_post

    first = dual.issuers.order_by("position")[0]
    dual.issuers.exclude(pk=first.pk).delete()
    base = change_post(dual)
    base.update(
        {
            "slug": "dual",
            "issuers-TOTAL_FORMS": "2",
            "issuers-INITIAL_FORMS": "1",
            "issuers-0-id": str(first.pk),
            "issuers-0-position": "0",
            "issuers-0-domain": "",
            "issuers-0-issuer_override": first.issuer_override,
            "issuers-0-jwks_url_override": "",
            "issuers-1-position": "1",
            "issuers-1-issuer_override": issuer.url_for("added"),
        }
    )
    url = f"/admin/tenants/tenant/{dual.pk}/change/"

    saved = admin_client.post(url, base)
    assert saved.status_code == 302, saved.context and saved.context["errors"]
    assert {i.issuer for i in dual.issuers.all()} == {first.issuer, issuer.url_for("added")}

    base["issuers-1-issuer_override"] = first.issuer
    refused = admin_client.post(url, base)
    assert refused.status_code == 200
    assert f"The issuer {first.issuer} is listed twice." in refused.content.decode()


def test_the_debugger_accepts_either_issuer_and_names_an_unlisted_one(
    admin_client, dual, canonical, custom, third
):
    url = f"/admin/tenants/tenant/{dual.pk}/debug-token/"

    def answer(token: str) -> str:
        form = {"endpoint": "messages:private", "url": "", "token": token, "proof": ""}
        return admin_client.post(url, form).content.decode()

    assert all("invalid_issuer" not in answer(f.token()) for f in (canonical, custom))
    refused = answer(third.token())
    assert "invalid_issuer" in refused
    for listed in dual.issuers.all():
        assert listed.issuer in admin_client.get(url).content.decode()


# The data migration.


@pytest.mark.django_db(transaction=True)
def test_the_migration_makes_each_tenants_issuer_its_one_entry_and_back():
    executor = MigrationExecutor(connection)
    executor.migrate([("tenants", "0007_routes")])
    old = executor.loader.project_state([("tenants", "0007_routes")]).apps
    old.get_model("tenants", "Tenant").objects.create(
        slug="legacy", name="Legacy", issuer_override="https://login.legacy.test/"
    )
    old.get_model("tenants", "Tenant").objects.create(
        slug="auth0",
        name="Auth0",
        domain="legacy.eu.auth0.com",
        jwks_url_override="https://k.test/j",
    )

    executor = MigrationExecutor(connection)
    executor.migrate([("tenants", "0008_tenant_issuers")])
    new = executor.loader.project_state([("tenants", "0008_tenant_issuers")]).apps
    rows = new.get_model("tenants", "TenantIssuer").objects.order_by("tenant__slug")
    listed = list(
        rows.values_list("tenant__slug", "domain", "issuer_override", "jwks_url_override")
    )

    assert listed == [
        ("auth0", "legacy.eu.auth0.com", "", "https://k.test/j"),
        ("legacy", "", "https://login.legacy.test/", ""),
    ]

    executor = MigrationExecutor(connection)
    executor.migrate([("tenants", "0007_routes")])
    back = executor.loader.project_state([("tenants", "0007_routes")]).apps
    legacy = back.get_model("tenants", "Tenant").objects.get(slug="legacy")
    assert legacy.issuer_override == "https://login.legacy.test/"
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_metrics_show_the_key_set_of_every_issuer(client, dual, canonical, custom, settings):
    from tests.test_metrics import TOKEN, scrape, value

    settings.METRICS_TOKEN = TOKEN
    before = scrape(client)  # the counters are the process's, over every test
    for factory in (canonical, custom):
        assert client.get(PRIVATE, **bearer(factory.token())).status_code == 200

    after = scrape(client)

    for listed in dual.issuers.all():
        age = ("authz_keyset_age_seconds", frozenset({"jwks_url": listed.jwks_url}.items()))
        assert 0 <= after[age] < 30
        labels = {"jwks_url": listed.jwks_url, "outcome": "ok", "trigger": "on_demand"}
        fetched = value(after, "authz_keyset_fetch_total", **labels)
        assert fetched - value(before, "authz_keyset_fetch_total", **labels) == 1


def test_refresh_keys_now_refreshes_and_reports_every_issuer(admin_client, dual, issuer):
    from django.contrib.messages import get_messages

    response = admin_client.post(f"/admin/tenants/tenant/{dual.pk}/refresh-keys/")

    (message,) = [str(m) for m in get_messages(response.wsgi_request)]
    for name in ("canonical", "custom"):
        kid, _ = issuer.store.current(name)
        url = f"{issuer.url_for(name)}.well-known/jwks.json"
        # Earlier tests may have rotated an issuer (the development issuer lives the session).
        report = message.split(f"dual ({url}): refreshed, ")[1].split(".")[0]
        assert kid in report


def test_check_issuer_checks_every_issuer(admin_client, dual, issuer):
    from django.contrib.messages import get_messages

    response = admin_client.post(f"/admin/tenants/tenant/{dual.pk}/check-issuer/")

    messages = [str(m) for m in get_messages(response.wsgi_request)]
    for name in ("canonical", "custom"):
        assert f"Discovery issuer matches: {issuer.url_for(name)}" in messages
