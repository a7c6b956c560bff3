"""The operator's admin in headless Chromium (Debian's), driven by Playwright, on a live server."""

import os
from pathlib import Path

import pytest
import requests
from django.contrib.auth.models import User

from tenants.models import Tenant

ARTIFACTS = Path(__file__).resolve().parent.parent / "var" / "test-artifacts"
PASSWORD = "correct-horse-battery-staple"

pytestmark = pytest.mark.django_db(transaction=True)
# Playwright's sync API runs an event loop in this thread; the ORM calls here stay synchronous.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def open_page(browser, live_server):
    """A fresh browser context logged in as a user, on the live server."""
    contexts = []

    def login(username: str):
        context = browser.new_context(base_url=live_server.url)
        contexts.append(context)
        page = context.new_page()
        page.goto("/admin/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", PASSWORD)
        navigate(page, "input[type=submit]")
        assert page.url.endswith("/admin/"), f"login as {username} failed"
        return page

    yield login
    for context in contexts:
        context.close()


@pytest.fixture
def superuser() -> User:
    return User.objects.create_superuser("root", "root@example.test", PASSWORD)


def navigate(page, selector: str) -> None:
    """Click something that loads a new page, and wait until that page has loaded."""
    with page.expect_navigation(wait_until="load"):
        page.click(selector)


def add_tenant(page, slug: str, issuer_url: str) -> None:
    """Fill the add form: identity, issuer, one audience, one host, one scope rule."""
    page.goto("/admin/tenants/tenant/add/")
    page.fill("#id_slug", slug)
    page.fill("#id_name", slug.title())
    page.fill("#id_issuers-0-issuer_override", issuer_url)
    page.fill("#id_audiences-0-audience", f"https://api.{slug}.test")
    page.get_by_text("Add another Tenant host").click()
    page.fill("#id_hosts-0-hostname", f"{slug}.localhost")
    page.get_by_text("Add another Scope rule").click()
    page.select_option("#id_scope_rules-0-endpoint", "messages:private-scoped")
    page.fill("#id_scope_rules-0-scopes", "read:reports")
    navigate(page, "input[name=_continue]")


def test_operator_creates_checks_and_refreshes_a_tenant(open_page, superuser, issuer):
    page = open_page("root")

    add_tenant(page, "browser", issuer.url_for("browser"))

    assert "was added successfully" in page.inner_text(".messagelist")
    tenant = Tenant.objects.get(slug="browser")
    assert [h.hostname for h in tenant.hosts.all()] == ["browser.localhost"]
    assert tenant.scope_rules.get().scopes == "read:reports"
    first_kid = issuer.store.current("browser")[0]
    assert first_kid in page.inner_text("#key-set-keys")

    navigate(page, "#check-issuer")
    messages = page.inner_text(".messagelist")
    assert "Discovery issuer matches" in messages
    assert "1 key(s)" in messages

    new_kid = requests.post(f"{issuer.url_for('browser')}rotate", timeout=5).json()["kid"]
    navigate(page, "#refresh-keys")
    assert "refreshed, 2 key(s)" in page.inner_text(".messagelist")
    assert new_kid in page.inner_text("#key-set-keys")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "tenant-page.png"), full_page=True)


def test_bad_domain_shows_the_field_error_and_saves_nothing(open_page, superuser):
    page = open_page("root")
    page.goto("/admin/tenants/tenant/add/")
    page.fill("#id_slug", "broken")
    page.fill("#id_name", "Broken")
    page.fill("#id_issuers-0-domain", "https://broken.eu.auth0.com/")
    page.fill("#id_audiences-0-audience", "https://api.broken.test")
    navigate(page, "input[name=_save]")

    error = page.inner_text("#issuers-group .errorlist")
    assert "without https://" in error
    assert not Tenant.objects.filter(slug="broken").exists()


def test_tenant_operator_sees_only_their_tenant(open_page, make_tenant):
    mine, _theirs = make_tenant("mine"), make_tenant("theirs")
    operator = User.objects.create_user("op", "op@example.test", PASSWORD, is_staff=True)
    mine.operators.add(operator)
    page = open_page("op")

    page.goto("/admin/tenants/tenant/")
    listing = page.inner_text("#result_list")
    assert "mine" in listing and "theirs" not in listing
    assert page.locator("a.addlink[href$='/tenants/tenant/add/']").count() == 0

    navigate(page, "#result_list a:text('mine')")
    assert page.locator("#id_name").count() == 1
    assert page.locator("#id_slug").count() == 0  # read-only for operators
    assert page.inner_text(".field-slug .readonly") == "mine"
    assert page.locator("#id_hosts-0-hostname").count() == 0
    assert "mine.localhost" in page.inner_text("#hosts-group")
