"""Fixtures: the development issuer over real HTTP, real Redis and PostgreSQL, clean state."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.core.cache.backends.db import DatabaseCache

from authz.keys import key_cache
from authz.metrics import key_set_labels, route_labels, tenant_labels
from authz.token_cache import refused_tokens, verified_tokens
from authz.users import provisioned_users
from config.celery import app as celery_app
from devissuer.issuer import DevIssuerServer, DevKeyStore, start_in_thread
from tenants.directory import directory
from tenants.ratelimit import limiter
from tests.fixtures import TokenFactory, create_tenant

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(
    scope="module",
    params=["embedded", pytest.param("redis", marks=pytest.mark.django_db(transaction=True))],
)
def mode(request: pytest.FixtureRequest) -> str:
    """Which shared store a module's real processes run on: each test runs in both modes."""
    return request.param


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium, headless, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def issuer_keys(tmp_path_factory: pytest.TempPathFactory) -> DevKeyStore:
    """One key store for the session: RSA key generation is the slow part."""
    return DevKeyStore(tmp_path_factory.mktemp("devissuer-keys"))


@pytest.fixture(scope="session")
def issuer(issuer_keys: DevKeyStore) -> Iterator[DevIssuerServer]:
    """The development issuer, a real HTTP server on loopback."""
    server = start_in_thread(issuer_keys)
    yield server
    server.stop()


DATABASE_FIXTURES = {
    "db",
    "transactional_db",
    "django_db_reset_sequences",
    "django_db_serialized_rollback",
}


def uses_database(request: pytest.FixtureRequest) -> bool:
    """Whether the test may touch the database (directly or through a fixture)."""
    marked = request.node.get_closest_marker("django_db") is not None
    return marked or bool(DATABASE_FIXTURES & set(request.fixturenames))


@pytest.fixture(autouse=True)
def clean_state(request: pytest.FixtureRequest, settings: Any) -> Iterator[None]:
    """Each test starts with an empty shared store and empty per-process caches."""
    settings.ALLOWED_HOSTS = [".localhost", "testserver"]
    celery_app.conf.task_always_eager = True
    # Without Redis the store is the database cache, which a test without the database cannot use.
    if not isinstance(cache, DatabaseCache) or uses_database(request):
        cache.clear()
    for holder in (directory, key_cache, verified_tokens, refused_tokens):
        holder.clear()
    provisioned_users.forget()
    tenant_labels.forget()
    key_set_labels.forget()
    route_labels.forget()
    limiter.forget()
    yield
    celery_app.conf.task_always_eager = True


@pytest.fixture
def make_tenant(db: None, issuer: DevIssuerServer) -> Callable[..., Any]:
    """Create a tenant bound to the development issuer (issuer name defaults to the slug)."""

    def make(slug: str, issuer_name: str | None = None, **fields: Any) -> Any:
        return create_tenant(issuer, slug, issuer_name, **fields)

    return make


@pytest.fixture
def tokens(issuer: DevIssuerServer) -> Callable[..., TokenFactory]:
    """Build a token factory for an issuer name and audience."""

    def factory(name: str, audience: str | None = None, **defaults: Any) -> TokenFactory:
        return TokenFactory(issuer, name, audience or f"https://api.{name}.test", defaults)

    return factory


@pytest.fixture
def acme(make_tenant: Callable[..., Any]) -> Any:
    """A tenant on its own issuer, reached at acme.localhost or /t/acme/."""
    return make_tenant("acme")


@pytest.fixture
def acme_tokens(tokens: Callable[..., TokenFactory]) -> TokenFactory:
    """Tokens of acme's issuer for acme's audience."""
    return tokens("acme")


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    """A private key directory for tests that rotate or restart an issuer."""
    return tmp_path / "keys"


@pytest.fixture(params=["redis", "database"])
def either_store(request: pytest.FixtureRequest, settings: Any) -> str:
    """In-process tests on both shared stores: Redis (``REDIS_URL``) or the embedded default's
    database cache (a table of its own, created in the test's transaction)."""
    if request.param == "database":
        from django.core.management import call_command

        request.getfixturevalue("db")
        call_command("createcachetable", "authz_cache_either")
        settings.CACHES = {
            "default": {
                "BACKEND": "authz.store.SharedDatabaseCache",
                "LOCATION": "authz_cache_either",
            }
        }
    return request.param
