"""Each tenant's request outcomes for the admin: counts by status and code per 5 minutes, a day.

A process adds its requests up in memory and flushes them every TRAFFIC_FLUSH_INTERVAL (from the
background sync thread, or inline in a process without it), so a request writes nothing to any
store: it costs one dictionary increment. The counts live where the shared store does: with
Redis, one hash per tenant and bucket plus one hash per bucket of every tenant's total and
refused counts (which the tenants list filter reads); without it, ``TrafficCount`` rows in the
database, added to by one upsert per flush. Both keep RETENTION and no more.
"""

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.cache.backends.redis import RedisCache
from django.db import connection
from django.db.models import Q, Sum

from authz import errors
from authz.conf import authz_settings
from authz.store import derived_key, internal_key, shared_store
from authz.tokens import TokenError

logger = logging.getLogger(__name__)

BUCKET_SECONDS = 300
RETENTION = 25 * 3600  # a full day of buckets, whatever the hour of the flush
MAX_PENDING = 50_000  # outcomes held while the store is down; beyond, new ones are dropped
REPLAY = "dpop_replay"  # our code for a replayed proof (the API answers invalid_dpop_proof)
RATE_LIMITED = "rate_limited"
OK = "ok"

Outcome = tuple[int, str]  # (status, code)


def _sentences() -> dict[str, str]:
    """Every refusal code the API gives, with its sentence for humans."""
    sentences: dict[str, str] = {}
    pending: list[type] = [TokenError]
    while pending:
        kind = pending.pop()
        sentences.setdefault(kind.code, kind.description)
        pending.extend(kind.__subclasses__())
    for kind in vars(errors).values():
        if isinstance(kind, type) and getattr(kind, "default_code", None):
            sentences.setdefault(kind.default_code, str(kind.default_detail))
    sentences.update(
        {
            "not_authenticated": "The request carried no access token.",
            "tenant_not_found": "No tenant is served at this address.",
            "dpop_bound_token": "A DPoP-bound token was sent as Bearer.",
            "dpop_required": "This tenant accepts DPoP-bound tokens only.",
            "dpop_not_accepted": "This tenant does not accept DPoP.",
            "token_not_bound": "A token without a DPoP key binding was sent as DPoP.",
            REPLAY: "A DPoP proof was sent again (replayed).",
            RATE_LIMITED: "The caller was over its rate limit.",
            "method_not_allowed": "The endpoint does not take this method.",
            "not_found": "No such resource.",
            "invalid": "The request body or a parameter was invalid.",
            "parse_error": "The request body was not valid JSON.",
            "unsupported_media_type": "The request body was not JSON.",
            "not_acceptable": "The client accepts no format this API answers in.",
        }
    )
    return sentences


SENTENCES = _sentences()


def sentence_for(code: str) -> str:
    """The human sentence of a refusal code."""
    return SENTENCES.get(code, "Refused.")


def bucket_of(moment: float) -> int:
    """The 5-minute bucket a moment falls in."""
    return int(moment // BUCKET_SECONDS)


class TrafficCounter:
    """This process's outcomes since its last flush."""

    def __init__(self) -> None:
        self._pending: Counter[tuple[int, str, int, str]] = Counter()
        self._lock = threading.Lock()
        self._flushed_at = time.monotonic()
        self.flushed_in_background = False

    def record(self, tenant: str, status: int, code: str | None) -> None:
        """Count one request of a tenant."""
        outcome = (bucket_of(time.time()), tenant, status, code or OK)
        with self._lock:
            if outcome in self._pending or len(self._pending) < MAX_PENDING:
                self._pending[outcome] += 1
        if self.flushed_in_background:
            return
        if time.monotonic() - self._flushed_at >= authz_settings.TRAFFIC_FLUSH_INTERVAL:
            self.flush()

    def flush(self) -> int:
        """Add the pending counts to the store; how many outcomes were written."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
            self._flushed_at = time.monotonic()
        if not pending:
            return 0
        try:
            backend().add(pending)
        except Exception:
            logger.warning("Cannot write traffic counts; keeping them for the next flush.")
            with self._lock:
                for outcome, count in pending.items():
                    if outcome in self._pending or len(self._pending) < MAX_PENDING:
                        self._pending[outcome] += count
            return 0
        return len(pending)

    def clear(self) -> None:
        """Drop what this process has not flushed (tests)."""
        with self._lock:
            self._pending.clear()


class RedisTraffic:
    """Counts in Redis hashes: per tenant and bucket, and per bucket the totals of every tenant."""

    def __init__(self, store: RedisCache) -> None:
        self.store = store

    def _client(self) -> Any:
        return self.store._cache.get_client(write=True)

    def _tenant_key(self, bucket: int, tenant: str) -> str:
        return self.store.make_key(derived_key("traffic", f"{bucket}\n{tenant}"))

    def _totals_key(self, bucket: int, kind: str) -> str:
        return self.store.make_key(internal_key(f"traffic-{kind}-{bucket}"))

    def add(self, pending: Counter) -> None:
        """One pipeline for the whole flush."""
        pipe = self._client().pipeline(transaction=False)
        keys = set()
        for (bucket, tenant, status, code), count in pending.items():
            tenant_key = self._tenant_key(bucket, tenant)
            pipe.hincrby(tenant_key, f"{status} {code}", count)
            pipe.hincrby(self._totals_key(bucket, "total"), tenant, count)
            if status >= 400:
                pipe.hincrby(self._totals_key(bucket, "refused"), tenant, count)
            keys |= {
                tenant_key,
                self._totals_key(bucket, "total"),
                self._totals_key(bucket, "refused"),
            }
        for key in keys:
            pipe.expire(key, RETENTION + BUCKET_SECONDS)
        pipe.execute()

    def outcomes(self, tenant: str, buckets: range) -> dict[int, Counter[Outcome]]:
        """A tenant's outcomes per bucket."""
        pipe = self._client().pipeline(transaction=False)
        for bucket in buckets:
            pipe.hgetall(self._tenant_key(bucket, tenant))
        result = {}
        for bucket, fields in zip(buckets, pipe.execute(), strict=True):
            counts: Counter[Outcome] = Counter()
            for name, count in fields.items():
                status, _, code = name.decode().partition(" ")
                counts[(int(status), code)] += int(count)
            result[bucket] = counts
        return result

    def totals(self, buckets: range, tenants: list[str] | None) -> dict[str, tuple[int, int]]:
        """(requests, refused) per tenant over these buckets; ``tenants``: only those."""
        if tenants == []:
            return {}  # an empty page: nothing to read (hmget takes at least one field)
        pipe = self._client().pipeline(transaction=False)
        for bucket in buckets:
            for kind in ("total", "refused"):
                key = self._totals_key(bucket, kind)
                pipe.hmget(key, tenants) if tenants is not None else pipe.hgetall(key)
        replies = pipe.execute()
        sums: dict[str, list[int]] = {}
        for index, reply in enumerate(replies):
            pairs = zip(tenants, reply, strict=True) if tenants is not None else reply.items()
            for tenant, count in pairs:
                if count is not None:
                    name = tenant if isinstance(tenant, str) else tenant.decode()
                    sums.setdefault(name, [0, 0])[index % 2] += int(count)
        return {tenant: (total, refused) for tenant, (total, refused) in sums.items()}

    def prune(self) -> int:
        """Redis expires the hashes itself."""
        return 0


class DatabaseTraffic:
    """Counts in ``TrafficCount`` rows, added to by upserts; old buckets deleted by ``prune``."""

    def add(self, pending: Counter) -> None:
        """One statement per outcome, in one transaction."""
        from tenants.models import TrafficCount

        table = connection.ops.quote_name(TrafficCount._meta.db_table)
        upsert = (
            f"INSERT INTO {table} (bucket, tenant, status, code, count) "  # noqa: S608
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (bucket, tenant, status, code) "
            f"DO UPDATE SET count = {table}.count + excluded.count"
        )
        rows = [(*outcome, count) for outcome, count in pending.items()]
        with connection.cursor() as cursor:
            cursor.executemany(upsert, rows)

    def outcomes(self, tenant: str, buckets: range) -> dict[int, Counter[Outcome]]:
        """A tenant's outcomes per bucket."""
        from tenants.models import TrafficCount

        result: dict[int, Counter[Outcome]] = {bucket: Counter() for bucket in buckets}
        rows = TrafficCount.objects.filter(
            tenant=tenant, bucket__gte=buckets.start, bucket__lt=buckets.stop
        ).values_list("bucket", "status", "code", "count")
        for bucket, status, code, count in rows:
            result[bucket][(status, code)] += count
        return result

    def totals(self, buckets: range, tenants: list[str] | None) -> dict[str, tuple[int, int]]:
        """(requests, refused) per tenant over these buckets; ``tenants``: only those."""
        from tenants.models import TrafficCount

        rows = TrafficCount.objects.filter(bucket__gte=buckets.start, bucket__lt=buckets.stop)
        if tenants is not None:
            rows = rows.filter(tenant__in=tenants)
        sums = rows.values("tenant").annotate(
            total=Sum("count"), refused=Sum("count", filter=Q(status__gte=400))
        )
        return {row["tenant"]: (row["total"], row["refused"] or 0) for row in sums}

    def prune(self) -> int:
        """Delete the buckets older than RETENTION."""
        from tenants.models import TrafficCount

        oldest = bucket_of(time.time() - RETENTION)
        return TrafficCount.objects.filter(bucket__lt=oldest).delete()[0]


def backend() -> RedisTraffic | DatabaseTraffic:
    """Where the counts live: beside the shared store."""
    store = shared_store()
    return RedisTraffic(store) if isinstance(store, RedisCache) else DatabaseTraffic()


def last(seconds: float) -> range:
    """The buckets of the last ``seconds``, the current one included."""
    now = bucket_of(time.time())
    return range(now - int(seconds // BUCKET_SECONDS) + 1, now + 1)


@dataclass
class TenantTraffic:
    """What the tenant page shows."""

    hour: Counter[Outcome] = field(default_factory=Counter)
    day: Counter[Outcome] = field(default_factory=Counter)
    hourly: list[tuple[int, int, int]] = field(default_factory=list)  # (hour start, ok, refused)

    def refused(self, counts: Counter[Outcome]) -> int:
        """Requests refused (4xx and 5xx)."""
        return sum(n for (status, _), n in counts.items() if status >= 400)

    def top_refusals(self, limit: int = 5) -> list[tuple[str, int, str]]:
        """The day's most frequent refusal codes, with their sentences."""
        codes: Counter[str] = Counter()
        for (status, code), count in self.day.items():
            if status >= 400:
                codes[code] += count
        return [(code, n, sentence_for(code)) for code, n in codes.most_common(limit)]

    def of_code(self, code: str) -> int:
        """The day's requests with this code."""
        return sum(n for (_, each), n in self.day.items() if each == code)


def tenant_traffic(tenant: str) -> TenantTraffic:
    """A tenant's last hour, last day, and the day hour by hour (one store read)."""
    day = last(24 * 3600)
    per_bucket = backend().outcomes(tenant, day)
    hour_start = last(3600).start
    traffic = TenantTraffic()
    hours: dict[int, list[int]] = {}
    for bucket, counts in per_bucket.items():
        traffic.day.update(counts)
        if bucket >= hour_start:
            traffic.hour.update(counts)
        slot = hours.setdefault(bucket * BUCKET_SECONDS // 3600, [0, 0])
        refused = sum(n for (status, _), n in counts.items() if status >= 400)
        slot[0] += sum(counts.values()) - refused
        slot[1] += refused
    traffic.hourly = [(hour * 3600, ok, refused) for hour, (ok, refused) in sorted(hours.items())]
    return traffic


def refusal_shares(tenants: Iterable[str] | None = None) -> dict[str, tuple[int, int]]:
    """(requests, refused) of the last hour per tenant; ``tenants``: only those."""
    return backend().totals(last(3600), list(tenants) if tenants is not None else None)


traffic_counter = TrafficCounter()
