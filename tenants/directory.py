"""The per-process directory of active tenants, kept in step with a version stamp in the cache.

Every request needs its tenant's configuration, so the whole set of active tenants is loaded into
memory at once and re-validated against a shared version stamp at most every few seconds: a warm
request costs no SQL query, and a change saved anywhere reaches every process within seconds.
"""

import logging
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from types import MappingProxyType

from django.core.cache import cache
from django.db import transaction

from authz.conf import authz_settings
from authz.endpoints import get_endpoint

logger = logging.getLogger(__name__)

VERSION_KEY = "tenants:config-version"


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """Everything the request path needs to know about one tenant, immutable."""

    slug: str
    name: str
    issuer: str
    jwks_url: str
    audiences: tuple[str, ...]
    hosts: tuple[str, ...]
    algorithms: tuple[str, ...]
    leeway: int
    scope_claims: str
    provision_users: bool
    admin_scope: str = ""
    cors_origins: frozenset[str] = frozenset()
    id: int | None = None
    scope_rules: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    def required_scopes(self, endpoint_key: str) -> tuple[str, ...]:
        """The tenant's rule for an endpoint, else the endpoint's default."""
        if endpoint_key in self.scope_rules:
            return self.scope_rules[endpoint_key]
        return get_endpoint(endpoint_key).default_scopes


@dataclass(frozen=True)
class _Snapshot:
    by_slug: dict[str, TenantConfig]
    by_host: dict[str, TenantConfig]


class TenantDirectory:
    """Active tenants by slug and by hostname, loaded whole and refreshed on version change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._version: object = None
        self._checked_at = float("-inf")

    def by_slug(self, slug: str) -> TenantConfig | None:
        """The active tenant with this slug, or None."""
        return self._current().by_slug.get(slug)

    def by_host(self, hostname: str) -> TenantConfig | None:
        """The active tenant served on this hostname, or None."""
        return self._current().by_host.get(hostname.lower())

    def active_slugs(self) -> list[str]:
        """Slugs of all active tenants."""
        return sorted(self._current().by_slug)

    def clear(self) -> None:
        """Forget the snapshot so the next lookup reloads from the database."""
        with self._lock:
            self._snapshot = None

    def _current(self) -> _Snapshot:
        now = time.monotonic()
        snapshot = self._snapshot
        if snapshot is not None and now - self._checked_at < authz_settings.CONFIG_RECHECK_INTERVAL:
            return snapshot
        with self._lock:
            version = _read_version(default=self._version)
            if self._snapshot is None or version != self._version:
                self._snapshot = _load_snapshot()
                self._version = version
            self._checked_at = now
            return self._snapshot


TENANT_FIELDS = (
    "id",
    "slug",
    "name",
    "domain",
    "issuer_override",
    "jwks_url_override",
    "algorithms",
    "leeway",
    "scope_claims",
    "provision_users",
    "admin_scope",
)
EMPTY_RULES = MappingProxyType({})


def _load_snapshot() -> _Snapshot:
    """Every active tenant, read as plain rows: no model instances, so a large load stays small."""
    from tenants import models

    hosts = _rows_by_tenant(models.TenantHost, "hostname")
    audiences = _rows_by_tenant(models.TenantAudience, "audience")
    origins = _rows_by_tenant(models.TenantCorsOrigin, "origin")
    rules = _rows_by_tenant(models.ScopeRule, "endpoint", "scopes")
    shared: dict = {}  # one object for the many equal values (issuers, algorithm lists, ...)

    def share(value: object) -> object:
        return shared.setdefault(value, value)

    configs = []
    rows = models.Tenant.objects.filter(active=True).values_list(*TENANT_FIELDS)
    for row in rows.iterator(chunk_size=2000):
        tenant = dict(zip(TENANT_FIELDS, row, strict=True))
        issuer = share(models.derive_issuer(tenant["domain"], tenant["issuer_override"]))
        tenant_rules = rules.get(tenant["id"])
        configs.append(
            TenantConfig(
                id=tenant["id"],
                slug=tenant["slug"],
                name=tenant["name"],
                issuer=issuer,
                jwks_url=share(models.derive_jwks_url(issuer, tenant["jwks_url_override"])),
                audiences=share(tuple(audiences.get(tenant["id"], ()))),
                hosts=tuple(hosts.get(tenant["id"], ())),
                algorithms=share(tuple(tenant["algorithms"])),
                leeway=tenant["leeway"],
                scope_claims=tenant["scope_claims"],
                provision_users=tenant["provision_users"],
                admin_scope=share(tenant["admin_scope"]),
                cors_origins=share(frozenset(origins.get(tenant["id"], ()))),
                scope_rules=_rules(tenant_rules) if tenant_rules else EMPTY_RULES,
            )
        )
    return _Snapshot(
        by_slug={config.slug: config for config in configs},
        by_host={host: config for config in configs for host in config.hosts},
    )


def _rows_by_tenant(model: type, *fields: str) -> dict[int, list]:
    """Values of one child table of active tenants, grouped by tenant id."""
    grouped: dict[int, list] = defaultdict(list)
    rows = model.objects.filter(tenant__active=True).values_list("tenant_id", *fields)
    for tenant_id, *values in rows.iterator(chunk_size=5000):
        grouped[tenant_id].append(values[0] if len(values) == 1 else tuple(values))
    return grouped


def _rules(rows: list[tuple[str, str]]) -> MappingProxyType:
    return MappingProxyType({endpoint: tuple(scopes.split()) for endpoint, scopes in rows})


@dataclass(frozen=True)
class KeySetSource:
    """Where one tenant's key set comes from: all a refresh needs to know."""

    slug: str
    jwks_url: str


def load_key_set_source(slug: str) -> KeySetSource | None:
    """One active tenant's JWKS URL straight from the database (one query), not the snapshot."""
    from tenants import models

    row = (
        models.Tenant.objects.filter(slug=slug, active=True)
        .values_list("domain", "issuer_override", "jwks_url_override")
        .first()
    )
    if row is None:
        return None
    domain, issuer_override, jwks_url_override = row
    issuer = models.derive_issuer(domain, issuer_override)
    return KeySetSource(slug, models.derive_jwks_url(issuer, jwks_url_override))


def _read_version(default: object) -> object:
    """Read the shared stamp; when the cache is down, keep serving what we have."""
    try:
        return cache.get(VERSION_KEY)
    except Exception:
        logger.warning("Cannot read the tenant config version; keeping the loaded config.")
        return default


def _bump_version() -> None:
    try:
        cache.set(VERSION_KEY, uuid.uuid4().hex, timeout=None)
    except Exception:
        logger.exception("Cannot publish the tenant config version; other processes lag.")
    directory.clear()


def config_changed() -> None:
    """Reload here at once, and everywhere once the change is committed."""
    directory.clear()
    transaction.on_commit(_bump_version)


directory = TenantDirectory()
