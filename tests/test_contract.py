"""The published contract against the live server: schemathesis as a real client, every check.

gunicorn runs on the embedded default (SQLite, the database cache, no Redis) beside the
development issuer as a real HTTP server. schemathesis loads /api/schema over HTTP and calls the
demo tenant through the schema's own first server (``/t/{tenant}``, whose default is ``demo``),
with a Bearer token that carries every default scope. It runs the phases it runs under pytest
(examples, coverage, fuzzing) with positive and negative data, and every check it has, including
the ones that send undeclared methods, drop the token or send a wrong one. The stateful checks
(use_after_free, ensure_resource_availability, object_level_authorization) need the stateful
phase, which ``schema.parametrize()`` does not run.
"""

from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup

from authz.endpoints import all_endpoints
from tests.processes import Stack, inherited_env, platform
from tests.test_e2e import manage

TENANT = "demo"  # the default of the schema's ``tenant`` server variable
SEED = 20260412
MAX_EXAMPLES = 200  # per operation and phase: about 30 s on two cores
SETTINGS = {
    "ENV_FILE": "",
    "SECRET_KEY": "contract-tests-only-" + "k" * 32,
    "DEBUG": "false",
    "ALLOWED_HOSTS": "127.0.0.1,.localhost",
    "AUTHZ_ALLOW_INSECURE_ISSUERS": "true",
    "AUTHZ_INSECURE_ISSUERS_ACKNOWLEDGED": "true",
}

pytestmark = pytest.mark.timeout(240)


def every_default_scope() -> str:
    """Every scope some endpoint demands by default, space-separated."""
    return " ".join(sorted({scope for e in all_endpoints() for scope in e.default_scopes}))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """gunicorn and the development issuer on the embedded default, with the demo tenant."""
    home = tmp_path_factory.mktemp("contract")
    env = {**inherited_env(), **SETTINGS, "DEVISSUER_KEY_DIR": str(home / "keys")}
    env["DATABASE_URL"] = f"sqlite:///{home / 'db.sqlite3'}"
    manage(env, "migrate", "--no-input")
    with platform(env, home) as stack:
        stack.import_tenants(stack.tenant(TENANT, hosts=[f"{TENANT}.localhost"]))
        yield stack


@pytest.fixture(scope="module")
def token(live: Stack) -> str:
    """A Bearer token of the demo tenant with every default scope, its key set already fetched."""
    audience = f"https://api.{TENANT}.test"
    minted = live.token(TENANT, audience, sub="auth0|contract", scope=every_default_scope())
    warm = requests.get(
        f"{live.web.url}/t/{TENANT}/api/private",
        headers={"Authorization": f"Bearer {minted}"},
        timeout=30,
    )
    assert warm.status_code == 200, warm.text
    return minted


@pytest.fixture(scope="module")
def contract(live: Stack, token: str) -> schemathesis.schemas.BaseSchema:
    """The live schema, with a fixed seed, bounded examples and the token on every request."""
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "headers": {"Authorization": f"Bearer {token}"},
            "request-timeout": 10,
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none"},
        }
    )
    return schemathesis.openapi.from_url(f"{live.web.url}/api/schema", config=config)


schema = schemathesis.pytest.from_fixture("contract")


@schema.parametrize()
# A request answers in milliseconds; the deadline catches a hang, not a slow machine. The health
# checks judge generation speed and filtering, which a live server's latency distorts.
@settings(deadline=timedelta(seconds=5), suppress_health_check=list(HealthCheck))
def test_the_server_keeps_the_published_contract(case: schemathesis.Case) -> None:
    case.call_and_validate()


def test_the_schema_names_the_demo_tenant_server_first(live: Stack) -> None:
    document = requests.get(f"{live.web.url}/api/schema?format=json", timeout=10).json()

    assert document["servers"][0]["url"] == "/t/{tenant}"
    assert document["servers"][0]["variables"]["tenant"]["default"] == TENANT


def test_the_checks_fail_a_schema_that_misstates_the_server(live: Stack) -> None:
    document = requests.get(f"{live.web.url}/api/schema?format=json", timeout=10).json()
    document["paths"]["/api/public"]["get"]["responses"] = {"418": {"description": "Never given."}}
    case = schemathesis.openapi.from_dict(document)["/api/public"]["GET"].Case()

    with pytest.raises(FailureGroup, match="Undocumented status code"):
        case.call_and_validate(base_url=f"{live.web.url}/t/{TENANT}")


def test_swagger_ui_tries_it_out_on_the_demo_tenant(live: Stack, token: str, browser) -> None:
    page = browser.new_page(base_url=live.web.url)
    page.goto("/api/docs")

    page.locator(".servers select").wait_for()
    servers = page.locator(".servers select option")
    assert [option.get_attribute("value") for option in servers.all()] == ["/t/{tenant}", "/"]
    assert page.locator(".servers input").input_value() == TENANT

    page.click("button.authorize")
    page.fill(".auth-container input", token)
    page.click(".auth-btn-wrapper button.authorize")
    page.click("button.btn-done")

    operation = page.locator("#operations-private-private_retrieve")
    operation.locator(".opblock-summary").click()
    operation.locator(".try-out__btn").click()
    operation.locator(".execute").click()
    status = operation.locator(".live-responses-table tr.response .response-col_status")
    status.first.wait_for()

    assert status.first.inner_text().strip() == "200"
    assert operation.locator(".request-url pre").inner_text().endswith(f"/t/{TENANT}/api/private")
    page.close()
