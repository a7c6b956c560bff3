"""The per-process tenant directory: each tenant loaded on first use, evicted alone on change.

A request's tenant is looked up in memory. A tenant not held yet is loaded with one query and kept
in a bounded least-recently-used map, so 100,000 tenants never need to fit in one process. Every
change to a tenant writes a row to the change feed (``TenantChange``) in its own transaction;
each process reads the feed once per CONFIG_RECHECK_INTERVAL (one query) and evicts just the
tenants that changed. The database is the truth; the feed needs nothing from the shared store.

A name (slug or hostname) that no active tenant has is answered without a query: each process
keeps a NameFilter of every active tenant's names, built with one query and kept up to date by
the same feed, so a flood of made-up names costs the database nothing per request.
"""

import heapq
import json
import logging
import os
import threading
import time
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from hashlib import blake2b
from types import MappingProxyType

from django.db import connection, transaction
from django.utils import timezone

from authz.conf import authz_settings
from authz.endpoints import get_endpoint
from authz.metrics import CONFIG_CHANGES, CONFIG_PROPAGATION
from authz.policy import IssuerPolicy, TrustedIssuers, shared_issuers, shared_policy
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
    issuers: TrustedIssuers
    hosts: tuple[str, ...]
    provision_users: bool
    admin_scope: str = ""
    cors_origins: frozenset[str] = frozenset()
    scope_rules: MappingProxyType = field(default_factory=lambda: EMPTY_RULES)
    rate_limit_per_subject: str = ""
    rate_limit_per_tenant: str = ""
    routes: RouteTable = EMPTY_TABLE

    @property
    def policy(self) -> IssuerPolicy:
        """The first listed issuer's policy: what every issuer of the tenant shares (DPoP)."""
        return self.issuers.primary

    @property
    def jwks_urls(self) -> tuple[str, ...]:
        """Where the key sets of the tenant's issuers are fetched, in the order listed."""
        return tuple(policy.jwks_url for policy in self.issuers.policies)

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
# A name the filter lacks rereads the feed at most this often: a tenant imported a moment ago
# answers at once, and a flood of made-up names costs a process at most 4 feed reads a second.
MISS_RESYNC_EVERY = 0.25
# The filter is built anew this often, so no missed change keeps a name out of it for longer.
NAMES_REBUILD_EVERY = 3600.0
# Tenant ids per query when the names of changed tenants are read.
NAMES_CHUNK = 500


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
        limit = FEED_BATCH + len(self._seen)
        rows = list(
            TenantChange.objects.filter(id__gt=self._low)
            .order_by("id")
            .values_list("id", "tenant_id", "created_at")[:limit]
        )
        self._read_at = now
        if len(rows) == limit:
            return self._restart(TenantChange)
        new = [row for row in rows if row[0] not in self._seen]
        self._seen.update((change_id, now) for change_id, _, _ in new)
        self._advance(now)
        _count_applied(at for _, _, at in new)
        return {tenant_id for _, tenant_id, _ in new}

    def _restart(self, model: type) -> None:
        """Place the process in the feed, below every change that may not be committed yet.

        The low mark is the last change older than LATE_COMMIT_WINDOW; the changes above it that
        are visible now count as seen (whatever reads the database after this sees them too), so
        only one committed later, under a lower id than a visible one, is read and applied.
        """
        settled = timezone.now() - timedelta(seconds=LATE_COMMIT_WINDOW)
        older = model.objects.filter(created_at__lt=settled).order_by("-id")
        self._low = older.values_list("id", flat=True).first() or 0
        recent = model.objects.filter(id__gt=self._low).order_by("-id")
        visible = list(recent.values_list("id", flat=True)[: FEED_BATCH // 2])
        if len(visible) == FEED_BATCH // 2:  # a burst: start within its newest part
            self._low = visible.pop()
        self._read_at = time.monotonic()
        self._seen = dict.fromkeys(visible, self._read_at)
        return None

    def _advance(self, now: float) -> None:
        """Raise the low mark over ids seen longer ago than the late-commit window."""
        for oldest in sorted(self._seen):
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


Name = tuple[str, str]  # ("slug", value) or ("host", value)


class NameFilter:
    """The slugs and hostnames of every active tenant, as keyed 64-bit hashes: 8 bytes a name.

    A name not here has no tenant and needs no query. A name here may have lost its tenant
    (deactivated, deleted, host moved); the query that finds it gone discards it. The key is
    random per filter, so nobody can pick names that collide with a tenant's.
    """

    OVERLAY = 4096  # names added or discarded since the sorted array was written, at most

    def __init__(self, names: Iterable[Name] = ()) -> None:
        self._key = os.urandom(16)
        hashes = array("Q", (self._hash(name) for name in names))
        self._sorted = array("Q", sorted(hashes))
        self._added: set[int] = set()
        self._removed: set[int] = set()

    def __contains__(self, name: Name) -> bool:
        digest = self._hash(name)
        return digest in self._added or (digest not in self._removed and self._in_sorted(digest))

    def __len__(self) -> int:
        return len(self._sorted) + len(self._added) - len(self._removed)

    def nbytes(self) -> int:
        """Bytes of the sorted hashes (the overlay sets hold at most OVERLAY more)."""
        return self._sorted.itemsize * len(self._sorted)

    def add(self, name: Name) -> None:
        """Hold this name."""
        digest = self._hash(name)
        self._removed.discard(digest)
        if not self._in_sorted(digest):
            self._added.add(digest)
        self._merge_when_full()

    def discard(self, name: Name) -> None:
        """Forget this name."""
        digest = self._hash(name)
        self._added.discard(digest)
        if self._in_sorted(digest):
            self._removed.add(digest)
        self._merge_when_full()

    def _hash(self, name: Name) -> int:
        kind, value = name
        data = value.encode(errors="surrogatepass")
        digest = blake2b(data, digest_size=8, key=self._key, person=kind.encode())
        return int.from_bytes(digest.digest())

    def _in_sorted(self, digest: int) -> bool:
        at = bisect_left(self._sorted, digest)
        return at < len(self._sorted) and self._sorted[at] == digest

    def _merge_when_full(self) -> None:
        if len(self._added) + len(self._removed) < self.OVERLAY:
            return
        kept = (digest for digest in self._sorted if digest not in self._removed)
        # The array first: a reader between the two assignments still gets the right answer.
        self._sorted = array("Q", heapq.merge(kept, sorted(self._added)))
        self._added, self._removed = set(), set()


class TenantDirectory:
    """Active tenants by slug and by hostname: a bounded, lazily loaded, per-tenant evicted map."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the maps and the filter
        self._sync_lock = threading.RLock()  # one reader of the feed, one writer of new names
        self._tenants: OrderedDict[int, TenantConfig] = OrderedDict()
        self._by_slug: dict[str, int] = {}
        self._by_host: dict[str, int] = {}
        self._names: NameFilter | None = None
        self._names_built_at = float("-inf")
        self._renamed: set[int] = set()  # changed tenants whose names the filter may lack
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

    def names(self) -> NameFilter | None:
        """The filter of every active tenant's names, once built."""
        return self._names

    def clear(self) -> None:
        """Forget every tenant, every name and the feed position: the next lookup starts over."""
        with self._sync_lock, self._lock:
            self._forget_all()
            self._names = None
            self._feed = ChangeFeed()
            self._synced_at = float("-inf")

    def sync(self) -> None:
        """Apply the change feed: evict just the tenants that changed (one query)."""
        with self._sync_lock:
            self._synced_at = time.monotonic()
            try:
                self._apply(self._feed.read())
            except Exception:
                logger.warning("Cannot read the tenant change feed; keeping the tenants held.")

    def evict(self, tenant_ids: set[int]) -> None:
        """Forget these tenants in this process; their current names join the filter on next use."""
        with self._lock:
            self._changes_applied += 1
            self._renamed |= tenant_ids
            if len(self._renamed) > FEED_BATCH:  # cheaper to read every name again
                self._renamed.clear()
                self._names_built_at = float("-inf")
            for tenant_id in tenant_ids:
                self._drop(tenant_id)

    def _apply(self, changed: set[int] | None) -> None:
        if changed is None:  # the feed started over: so does this process
            with self._lock:
                self._forget_all()
            self._names_built_at = float("-inf")
        elif changed:
            self.evict(changed)
        if time.monotonic() - self._names_built_at >= NAMES_REBUILD_EVERY:
            self._build_names()
        self._note_new_names()

    def _build_names(self) -> None:
        """Read every active tenant's names (one query); the feed position was read before."""
        with self._lock:
            self._renamed.clear()  # the query below reads their names, committed or this thread's
        names = NameFilter(active_names())
        with self._lock:
            self._changes_applied += 1
            self._names, self._names_built_at = names, time.monotonic()

    def _note_new_names(self) -> None:
        """Add the names of the tenants changed since last time to the filter (one query)."""
        with self._lock:
            changed, self._renamed = self._renamed, set()
        if not changed or self._names is None:
            return
        try:
            found = [name for chunk in _chunks(sorted(changed)) for name in active_names(chunk)]
        except Exception:
            with self._lock:
                self._renamed |= changed
            raise
        with self._lock:
            for name in found:
                self._names.add(name)

    def _lookup(self, kind: str, value: str, index: dict[str, int]) -> TenantConfig | None:
        if not self.synced_in_background:
            self._sync_inline_when_due()
        tenant_id = index.get(value)
        tenant = self._tenants.get(tenant_id) if tenant_id is not None else None
        if tenant is not None:
            with suppress(KeyError):  # evicted meanwhile: this request still uses what it found
                self._tenants.move_to_end(tenant_id)
            return tenant
        if not self._may_exist((kind, value)):
            return None
        return self._load(kind, value)

    def _sync_inline_when_due(self) -> None:
        if time.monotonic() - self._synced_at >= authz_settings.CONFIG_RECHECK_INTERVAL:
            self.sync()

    def _may_exist(self, name: Name) -> bool:
        """Whether an active tenant may have this name: the filter's answer, caught up if due."""
        if self._names is not None and name in self._names:
            return True
        due = time.monotonic() - self._synced_at >= MISS_RESYNC_EVERY
        if self._names is None or self._renamed or due:
            self._catch_up()
        return self._names is None or name in self._names  # no filter yet: ask the database

    def _catch_up(self) -> None:
        """Read the feed unless a read was made in the last MISS_RESYNC_EVERY, and note new names.

        Waits for a thread that holds the lock, such as one building the filter.
        """
        with self._sync_lock:
            if time.monotonic() - self._synced_at >= MISS_RESYNC_EVERY:
                self.sync()
            else:
                with suppress(Exception):  # the database is down: answer from the filter
                    self._note_new_names()

    def _load(self, kind: str, value: str) -> TenantConfig | None:
        applied_before = self._changes_applied
        tenant = load_tenant(kind, value)
        with self._lock:
            if self._changes_applied != applied_before:
                return tenant  # a change landed during the query: serve it, keep nothing
            if tenant is None:
                if self._names is not None:
                    self._names.discard((kind, value))
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
        self._renamed.clear()


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), NAMES_CHUNK):
        yield ids[start : start + NAMES_CHUNK]


NAMES_SQL = (
    "SELECT 'slug', slug FROM tenants_tenant WHERE active = %s{only} "
    "UNION ALL SELECT 'host', hostname FROM tenants_tenanthost "
    "WHERE tenant_id IN (SELECT id FROM tenants_tenant WHERE active = %s{only})"
)


def active_names(tenant_ids: list[int] | None = None) -> Iterator[Name]:
    """The names of every active tenant, or of these tenants: one query, read in batches."""
    ids = tenant_ids or []
    only = f" AND id IN ({', '.join(['%s'] * len(ids))})" if tenant_ids is not None else ""
    with connection.cursor() as cursor:
        cursor.execute(NAMES_SQL.format(only=only), [True, *ids, True, *ids])
        while rows := cursor.fetchmany(10_000):
            yield from rows


TENANT_COLUMNS = (
    "id",
    "slug",
    "name",
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
# An issuer's columns, the same way.
ISSUER_SLOTS = {
    "slug": "domain",
    "name": "issuer_override",
    "admin_scope": "jwks_url_override",
    "leeway": "position",
}
ISSUER_COLUMNS = ", ".join(ISSUER_SLOTS.get(column, "NULL") for column in TENANT_COLUMNS[1:])
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
    parts.append(
        f"SELECT 'issuer', tenant_id, {ISSUER_COLUMNS} FROM tenants_tenantissuer "  # noqa: S608
        "WHERE tenant_id IN (SELECT id FROM found)"
    )
    return f"WITH found AS ({found}) " + " UNION ALL ".join(parts)


TENANT_SQL = {kind: _tenant_sql(kind) for kind in WHERE}
PART_KINDS = ("host", "audience", "origin", "rule", "route", "issuer")


def load_tenant(kind: str, value: str) -> TenantConfig | None:
    """The active tenant with this slug or host, read in one query; None when there is none."""
    with connection.cursor() as cursor:
        cursor.execute(TENANT_SQL[kind], [value, True])
        rows = cursor.fetchall()
    tenant = next((row[1:] for row in rows if row[0] == "tenant"), None)
    if tenant is None:
        return None
    parts: dict[str, list] = {kind: [] for kind in PART_KINDS}
    for kind_of_row, _tenant_id, *values in rows:
        if kind_of_row in ("route", "issuer"):
            parts[kind_of_row].append(dict(zip(TENANT_COLUMNS[1:], values, strict=True)))
        elif kind_of_row != "tenant":
            first, second = values[:2]
            parts[kind_of_row].append(first if second is None else (first, second))
    return _config(dict(zip(TENANT_COLUMNS, tenant, strict=True)), parts)


def _config(row: dict, parts: dict[str, list]) -> TenantConfig:
    shared = _shared_values(row, parts)
    policies = tuple(
        shared_policy(issuer=issuer, jwks_url=jwks_url, **shared)
        for issuer, jwks_url in _issuer_addresses(parts["issuer"])
    )
    rules = [rule if isinstance(rule, tuple) else (rule, "") for rule in parts["rule"]]
    return TenantConfig(
        id=row["id"],
        slug=row["slug"],
        name=row["name"],
        issuers=shared_issuers(policies),
        hosts=tuple(sorted(parts["host"])),
        provision_users=bool(row["provision_users"]),
        admin_scope=row["admin_scope"],
        cors_origins=frozenset(parts["origin"]),
        scope_rules=_rules(rules) if rules else EMPTY_RULES,
        rate_limit_per_subject=row["rate_limit_per_subject"],
        rate_limit_per_tenant=row["rate_limit_per_tenant"],
        routes=_routes(parts["route"]) if parts["route"] else EMPTY_TABLE,
    )


def _shared_values(row: dict, parts: dict[str, list]) -> dict:
    """The policy values every issuer of the tenant shares."""
    return {
        "audiences": tuple(sorted(parts["audience"])),
        "algorithms": tuple(_json(row["algorithms"])),
        "leeway": row["leeway"],
        "scope_claims": row["scope_claims"],
        "token_profile": row["token_profile"],
        "organizations": frozenset(_json(row["organizations"])),
        "dpop": row["dpop"],
        "dpop_algorithms": tuple(_json(row["dpop_algorithms"])),
        "dpop_nonce": bool(row["dpop_nonce"]),
    }


def _issuer_addresses(rows: list[dict]) -> list[tuple[str, str]]:
    """(issuer, JWKS URL) of each listed issuer, in the order listed (position, then issuer)."""
    from tenants.models import derive_issuer, derive_jwks_url

    slot = {column: tenant_column for tenant_column, column in ISSUER_SLOTS.items()}
    listed = []
    for row in rows:
        issuer = derive_issuer(row[slot["domain"]], row[slot["issuer_override"]])
        jwks_url = derive_jwks_url(issuer, row[slot["jwks_url_override"]])
        listed.append((row[slot["position"]], issuer, jwks_url))
    return [(issuer, jwks_url) for _, issuer, jwks_url in sorted(listed)]


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
    """Every distinct JWKS URL that tenants' issuers use: one query over distinct settings."""
    from tenants.models import TenantIssuer, derive_issuer, derive_jwks_url

    issuers = TenantIssuer.objects.all()
    if active_only:
        issuers = issuers.filter(tenant__active=True)
    triples = issuers.values_list("domain", "issuer_override", "jwks_url_override").distinct()
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
