"""The per-process tenant directory: each tenant loaded on first use, evicted alone on change.

A request's tenant is looked up in memory. A tenant not held yet is loaded with one query and kept
in a bounded least-recently-used map, so 100,000 tenants never need to fit in one process. Every
change to a tenant writes a row to the change feed (``TenantChange``) in its own transaction;
each process reads the feed once per CONFIG_RECHECK_INTERVAL (one query) and evicts just the
tenants that changed. The database is the truth; the feed needs nothing from the shared store.
"""

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from authz.conf import authz_settings
from authz.endpoints import get_endpoint
from authz.metrics import CONFIG_CHANGES, CONFIG_PROPAGATION
from authz.policy import IssuerPolicy, shared_policy
from authz.store import claim, internal_key
from tenants.routes import EMPTY_TABLE, RouteTable, stored_table

logger = logging.getLogger(__name__)

EMPTY_RULES = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """Everything the request path needs to know about one tenant, immutable."""

    id: int
    slug: str
    name: str
    policy: IssuerPolicy
    hosts: tuple[str, ...]
    provision_users: bool
    admin_scope: str = ""
    cors_origins: frozenset[str] = frozenset()
    scope_rules: MappingProxyType = field(default_factory=lambda: EMPTY_RULES)
    rate_limit_per_subject: str = ""
    rate_limit_per_tenant: str = ""
    routes: RouteTable = EMPTY_TABLE

    @property
    def issuer(self) -> str:
        """The exact ``iss`` of the tenant's tokens."""
        return self.policy.issuer

    @property
    def jwks_url(self) -> str:
        """Where the tenant's key set is fetched."""
        return self.policy.jwks_url

    def required_scopes(self, endpoint_key: str) -> tuple[str, ...]:
        """The tenant's rule for an endpoint, else the endpoint's default."""
        if endpoint_key in self.scope_rules:
            return self.scope_rules[endpoint_key]
        return get_endpoint(endpoint_key).default_scopes


# Changes are read again for this long after first seen, so a change whose id was allocated
# before, but committed after, a later one is still applied (ids are not commit-ordered).
LATE_COMMIT_WINDOW = 60.0
# More new changes than this in one read: forget every tenant instead of evicting one by one.
FEED_BATCH = 2000
# Changes are kept this long; a process that could not read the feed for half of it starts over.
FEED_RETENTION = 24 * 3600.0
ABSENT_SIZE = 10_000


class ChangeFeed:
    """This process's position in the tenant change feed."""

    def __init__(self) -> None:
        self._low: int | None = None  # every change at or below it has been applied
        self._seen: dict[int, float] = {}  # applied ids above the low mark, with when seen
        self._read_at = float("-inf")

    def read(self) -> set[int] | None:
        """Tenant ids changed since the last read; None means forget every tenant."""
        from tenants.models import TenantChange

        now = time.monotonic()
        if self._low is None or now - self._read_at > FEED_RETENTION / 2:
            return self._restart(TenantChange)
        rows = list(
            TenantChange.objects.filter(id__gt=self._low)
            .order_by("id")
            .values_list("id", "tenant_id", "created_at")[:FEED_BATCH]
        )
        self._read_at = now
        if len(rows) == FEED_BATCH:
            return self._restart(TenantChange)
        new = [
            (change_id, tenant_id, at)
            for change_id, tenant_id, at in rows
            if change_id not in self._seen
        ]
        self._seen.update((change_id, now) for change_id, _, _ in new)
        self._advance(now)
        _count_applied(at for _, _, at in new)
        return {tenant_id for _, tenant_id, _ in new}

    def _restart(self, model: type) -> None:
        self._low = model.objects.aggregate(last=Max("id"))["last"] or 0
        self._seen.clear()
        self._read_at = time.monotonic()
        return None

    def _advance(self, now: float) -> None:
        """Raise the low mark over ids seen longer ago than the late-commit window."""
        while self._seen:
            oldest = min(self._seen)
            if now - self._seen[oldest] < LATE_COMMIT_WINDOW:
                break
            del self._seen[oldest]
            self._low = oldest


def _count_applied(saved_at: Iterable[datetime]) -> None:
    """Metrics of changes applied here: how many, and how long after they were saved."""
    now = time.time()
    for moment in saved_at:
        CONFIG_CHANGES.inc()
        CONFIG_PROPAGATION.observe(max(0.0, now - moment.timestamp()))


class TenantDirectory:
    """Active tenants by slug and by hostname: a bounded, lazily loaded, per-tenant evicted map."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tenants: OrderedDict[int, TenantConfig] = OrderedDict()
        self._by_slug: dict[str, int] = {}
        self._by_host: dict[str, int] = {}
        self._absent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._feed = ChangeFeed()
        self._changes_applied = 0  # a load that raced a change is not kept
        self._synced_at = float("-inf")
        self.synced_in_background = False

    def by_slug(self, slug: str) -> TenantConfig | None:
        """The active tenant with this slug, or None."""
        return self._lookup("slug", slug, self._by_slug)

    def by_host(self, hostname: str) -> TenantConfig | None:
        """The active tenant served on this hostname, or None."""
        return self._lookup("host", hostname.lower(), self._by_host)

    def held(self) -> int:
        """How many tenants this process holds now."""
        return len(self._tenants)

    def clear(self) -> None:
        """Forget every tenant, so the next lookups load from the database."""
        with self._lock:
            self._forget_all()

    def sync(self) -> None:
        """Apply the change feed: evict just the tenants that changed (one query)."""
        self._synced_at = time.monotonic()
        try:
            changed = self._feed.read()
        except Exception:
            logger.warning("Cannot read the tenant change feed; keeping the tenants held.")
            return
        if changed is None:
            self.clear()
        elif changed:
            self.evict(changed)

    def evict(self, tenant_ids: set[int]) -> None:
        """Forget these tenants (and every remembered absence) in this process."""
        with self._lock:
            self._changes_applied += 1
            self._absent.clear()
            for tenant_id in tenant_ids:
                self._drop(tenant_id)

    def _lookup(self, kind: str, value: str, index: dict[str, int]) -> TenantConfig | None:
        if not self.synced_in_background:
            self._sync_inline_when_due()
        tenant_id = index.get(value)
        tenant = self._tenants.get(tenant_id) if tenant_id is not None else None
        if tenant is not None:
            with suppress(KeyError):  # evicted meanwhile: this request still uses what it found
                self._tenants.move_to_end(tenant_id)
            return tenant
        if (kind, value) in self._absent:
            return None
        return self._load(kind, value)

    def _sync_inline_when_due(self) -> None:
        if time.monotonic() - self._synced_at >= authz_settings.CONFIG_RECHECK_INTERVAL:
            self.sync()

    def _load(self, kind: str, value: str) -> TenantConfig | None:
        applied_before = self._changes_applied
        tenant = load_tenant(kind, value)
        with self._lock:
            if self._changes_applied != applied_before:
                return tenant  # a change landed during the query: serve it, keep nothing
            if tenant is None:
                self._absent[(kind, value)] = None
                while len(self._absent) > ABSENT_SIZE:
                    self._absent.popitem(last=False)
            else:
                self._keep(tenant)
        return tenant

    def _keep(self, tenant: TenantConfig) -> None:
        self._drop(tenant.id)
        self._tenants[tenant.id] = tenant
        self._by_slug[tenant.slug] = tenant.id
        for host in tenant.hosts:
            self._by_host[host] = tenant.id
        while len(self._tenants) > authz_settings.DIRECTORY_SIZE:
            self._drop(next(iter(self._tenants)))

    def _drop(self, tenant_id: int) -> None:
        tenant = self._tenants.pop(tenant_id, None)
        if tenant is None:
            return
        if self._by_slug.get(tenant.slug) == tenant_id:
            del self._by_slug[tenant.slug]
        for host in tenant.hosts:
            if self._by_host.get(host) == tenant_id:
                del self._by_host[host]

    def _forget_all(self) -> None:
        self._changes_applied += 1
        self._tenants.clear()
        self._by_slug.clear()
        self._by_host.clear()
        self._absent.clear()


TENANT_COLUMNS = (
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
    "token_profile",
    "organizations",
    "dpop",
    "dpop_algorithms",
    "dpop_nonce",
    "rate_limit_per_subject",
    "rate_limit_per_tenant",
)
PADDING = ", ".join(["NULL"] * (len(TENANT_COLUMNS) - 3))
CHILD_TABLES = (  # kind, table, its one or two value columns
    ("host", "tenants_tenanthost", "hostname, NULL"),
    ("audience", "tenants_tenantaudience", "audience, NULL"),
    ("origin", "tenants_tenantcorsorigin", "origin, NULL"),
    ("rule", "tenants_scoperule", "endpoint, scopes"),
)
# A route's columns, each in the slot of a tenant column of the same type (UNION ALL needs them).
ROUTE_SLOTS = {
    "slug": "path",
    "algorithms": "methods",
    "leeway": "position",
    "provision_users": "public",
    "organizations": "scopes",
}
ROUTE_COLUMNS = ", ".join(ROUTE_SLOTS.get(column, "NULL") for column in TENANT_COLUMNS[1:])
WHERE = {
    "slug": "slug = %s",
    "host": "id = (SELECT tenant_id FROM tenants_tenanthost WHERE hostname = %s)",
}


def _tenant_sql(kind: str) -> str:
    """One query for a tenant and all its parts: the tenant row, then one row per part.

    Built once, from the constants above only; the looked-up value is always a parameter.
    """
    found = f"SELECT id FROM tenants_tenant WHERE {WHERE[kind]} AND active = %s"  # noqa: S608
    columns = ", ".join(TENANT_COLUMNS)
    tenant_row = f"SELECT 'tenant', {columns} FROM tenants_tenant"  # noqa: S608
    parts = [tenant_row + " WHERE id IN (SELECT id FROM found)"]  # noqa: S608
    parts += [
        f"SELECT '{name}', tenant_id, {values}, {PADDING} FROM {table} "  # noqa: S608
        "WHERE tenant_id IN (SELECT id FROM found)"
        for name, table, values in CHILD_TABLES
    ]
    parts.append(
        f"SELECT 'route', tenant_id, {ROUTE_COLUMNS} FROM tenants_route "  # noqa: S608
        "WHERE tenant_id IN (SELECT id FROM found)"
    )
    return f"WITH found AS ({found}) " + " UNION ALL ".join(parts)


TENANT_SQL = {kind: _tenant_sql(kind) for kind in WHERE}


def load_tenant(kind: str, value: str) -> TenantConfig | None:
    """The active tenant with this slug or host, read in one query; None when there is none."""
    with connection.cursor() as cursor:
        cursor.execute(TENANT_SQL[kind], [value, True])
        rows = cursor.fetchall()
    tenant = next((row[1:] for row in rows if row[0] == "tenant"), None)
    if tenant is None:
        return None
    parts: dict[str, list] = {"host": [], "audience": [], "origin": [], "rule": [], "route": []}
    for kind_of_row, _tenant_id, *values in rows:
        if kind_of_row == "route":
            parts["route"].append(dict(zip(TENANT_COLUMNS[1:], values, strict=True)))
        elif kind_of_row != "tenant":
            first, second = values[:2]
            parts[kind_of_row].append(first if second is None else (first, second))
    return _config(dict(zip(TENANT_COLUMNS, tenant, strict=True)), parts)


def _config(row: dict, parts: dict[str, list]) -> TenantConfig:
    from tenants.models import derive_issuer, derive_jwks_url

    issuer = derive_issuer(row["domain"], row["issuer_override"])
    policy = shared_policy(
        issuer=issuer,
        jwks_url=derive_jwks_url(issuer, row["jwks_url_override"]),
        audiences=tuple(sorted(parts["audience"])),
        algorithms=tuple(_json(row["algorithms"])),
        leeway=row["leeway"],
        scope_claims=row["scope_claims"],
        token_profile=row["token_profile"],
        organizations=frozenset(_json(row["organizations"])),
        dpop=row["dpop"],
        dpop_algorithms=tuple(_json(row["dpop_algorithms"])),
        dpop_nonce=bool(row["dpop_nonce"]),
    )
    rules = [rule if isinstance(rule, tuple) else (rule, "") for rule in parts["rule"]]
    return TenantConfig(
        id=row["id"],
        slug=row["slug"],
        name=row["name"],
        policy=policy,
        hosts=tuple(sorted(parts["host"])),
        provision_users=bool(row["provision_users"]),
        admin_scope=row["admin_scope"],
        cors_origins=frozenset(parts["origin"]),
        scope_rules=_rules(rules) if rules else EMPTY_RULES,
        rate_limit_per_subject=row["rate_limit_per_subject"],
        rate_limit_per_tenant=row["rate_limit_per_tenant"],
        routes=_routes(parts["route"]) if parts["route"] else EMPTY_TABLE,
    )


def _routes(rows: list[dict]) -> RouteTable:
    """The tenant's routes, compiled; stored routes that cannot compile refuse every request."""
    slot = {route_column: tenant_column for tenant_column, route_column in ROUTE_SLOTS.items()}
    fields = [{name: row[slot[name]] for name in slot} for row in rows]
    fields.sort(key=lambda route: (route["position"], route["path"]))
    table = stored_table(
        (_json(f["methods"]), f["path"], bool(f["public"]), _json(f["scopes"])) for f in fields
    )
    if table.broken:
        logger.error("The stored routes cannot be compiled; refusing every route: %s", table.broken)
    return table


def _json(value: object) -> object:
    """A JSON column's value: SQLite hands JSON back as text."""
    return json.loads(value) if isinstance(value, str) else value


def _rules(rows: list[tuple[str, str]]) -> MappingProxyType:
    return MappingProxyType({endpoint: tuple(scopes.split()) for endpoint, scopes in rows})


def jwks_urls(active_only: bool = True) -> set[str]:
    """Every distinct JWKS URL that tenants use: one query over distinct issuer settings."""
    from tenants.models import Tenant, derive_issuer, derive_jwks_url

    tenants = Tenant.objects.filter(active=True) if active_only else Tenant.objects.all()
    triples = tenants.values_list("domain", "issuer_override", "jwks_url_override").distinct()
    return {
        derive_jwks_url(derive_issuer(domain, issuer), jwks) for domain, issuer, jwks in triples
    }


def prune_feed() -> int:
    """Delete changes older than FEED_RETENTION; one process per hour does it."""
    from tenants.models import TenantChange

    if not claim(internal_key("feed-prune"), PRUNE_EVERY):
        return 0
    cutoff = timezone.now() - timedelta(seconds=FEED_RETENTION)
    return TenantChange.objects.filter(created_at__lt=cutoff).delete()[0]


PRUNE_EVERY = 3600

_batch: ContextVar[set[int] | None] = ContextVar("tenant_change_batch", default=None)


def record_change(tenant_id: int) -> None:
    """Write a tenant's change to the feed, in the current transaction, and evict it here."""
    batch = _batch.get()
    if batch is not None:
        batch.add(tenant_id)
        return
    from tenants.models import TenantChange

    TenantChange.objects.create(tenant_id=tenant_id)
    directory.evict({tenant_id})
    transaction.on_commit(lambda: directory.evict({tenant_id}))


@contextmanager
def changes_batched() -> Iterator[set[int]]:
    """Collect the changes of many saves and write them once, at the end (bulk imports)."""
    from tenants.models import TenantChange

    batch: set[int] = set()
    token = _batch.set(batch)
    try:
        yield batch
    finally:
        _batch.reset(token)
    if transaction.get_rollback():
        return  # the caller refused the batch: nothing changed
    # Written last, just before the caller commits: ids allocated late reach every feed early.
    TenantChange.objects.bulk_create(
        [TenantChange(tenant_id=tenant_id) for tenant_id in sorted(batch)], batch_size=5000
    )
    directory.evict(batch)
    transaction.on_commit(lambda: directory.evict(batch))


directory = TenantDirectory()
