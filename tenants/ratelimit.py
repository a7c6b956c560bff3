"""Fair sharing: request rates per tenant, per token subject and per anonymous address.

Each limit is a sliding window counter: the requests of the current fixed window plus those of
the previous one, weighted by how much of it still overlaps the last ``seconds``. Counting is
atomic in the shared store, all of a request's limits in at most one round trip: with Redis one
Lua script (a hash per limit: window, count, previous count); without it one upsert per limit
on the database, whose RETURNING hands back the counts (and a refused request is taken back in
the same transaction). A request far from its limits is counted in this process and written with
the next round trip (``Limiter``). A refused request takes no quota, so a client that waits its
``Retry-After`` is served.

A process remembers which tenants and anonymous addresses the store said were over, until their
reset: their next requests are refused before any token work, with no round trip. When the
store cannot count, requests are served (an outage of the counter is not one of the API), logged
once a minute and counted in ``authz_rate_limiter_unavailable_total``.
"""

import functools
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.core.cache.backends.redis import RedisCache
from django.core.checks import Error, register
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from prometheus_client import Counter
from rest_framework.exceptions import Throttled

from authz.conf import authz_settings
from authz.metrics import count_rate_limited
from authz.store import derived_key, shared_store

logger = logging.getLogger(__name__)

RATE = re.compile(r"^\s*([1-9]\d{0,8})\s*/\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*$", re.I)
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
TENANT, SUBJECT, ADDRESS = "tenant", "subject", "address"
COMPLAIN_EVERY = 60.0
FLUSH_AFTER = 0.1  # seconds a request counted here may wait before the store has it
STORE_RETRY_AFTER = 1.0  # seconds without trying the store after it failed
MAX_TALLIES = 10_000
UNAVAILABLE = Counter(
    "authz_rate_limiter_unavailable",
    "Requests served without a rate limit check because the shared store could not count.",
)


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` requests in any ``seconds``."""

    count: int
    seconds: int

    def __str__(self) -> str:
        unit = {1: "s", 60: "min", 3600: "hour", 86400: "day"}[self.seconds]
        return f"{self.count}/{unit}"


@functools.lru_cache(maxsize=256)  # a handful of distinct rates, read on every request
def parse_rate(text: str) -> Rate | None:
    """``60/min``, ``1000/hour``, ``20/s``, ``5/day``; blank is None; anything else ValueError."""
    if not text or not text.strip():
        return None
    match = RATE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a rate such as 60/min, 1000/hour or 20/s.")
    return Rate(int(match[1]), UNIT_SECONDS[match[2][0].lower()])


def validate_rate(text: str) -> None:
    """A model field validator: a rate, or blank."""
    try:
        parse_rate(text)
    except ValueError as exc:
        raise ValidationError(str(exc), code="invalid_rate") from None


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit a request is counted against: its kind, what it counts, its rate."""

    kind: str
    key: str
    rate: Rate


@dataclass(frozen=True, slots=True)
class Verdict:
    """A limit's state after counting a request."""

    limit: Limit
    remaining: int
    reset: int  # seconds until the current window ends
    retry_after: int  # 0 when allowed

    @property
    def allowed(self) -> bool:
        """Whether the request is within the limit."""
        return self.retry_after == 0


KINDS = {TENANT: "this tenant", SUBJECT: "this caller", ADDRESS: "this address"}


def throttled(verdict: Verdict, tenant: str) -> Throttled:
    """DRF's 429 for a request over ``verdict``'s limit (its handler sets Retry-After), counted."""
    count_rate_limited(tenant)
    detail = (
        f"Too many requests for {KINDS[verdict.limit.kind]} ({verdict.limit.rate}); "
        f"retry in {verdict.retry_after} s."
    )
    return Throttled(wait=verdict.retry_after, detail=detail, code="rate_limited")


def anonymous_limited() -> bool:
    """Whether requests with no token or a refused one are limited per address."""
    return _rate("", "RATE_LIMIT_ANONYMOUS_PER_ADDRESS") is not None


def limits_of(tenant: Any, subject: str | None, address: str | None) -> list[Limit]:
    """The limits a request of this tenant counts against: the tenant's, then the subject's
    (an authenticated request) or the address's (one with no token, or a refused one)."""
    limits = []
    tenant_rate = _rate(tenant.rate_limit_per_tenant, "RATE_LIMIT_PER_TENANT")
    if tenant_rate:
        limits.append(Limit(TENANT, _key(TENANT, tenant.slug, ""), tenant_rate))
    if subject is not None:
        rate = _rate(tenant.rate_limit_per_subject, "RATE_LIMIT_PER_SUBJECT")
        if rate:
            limits.append(Limit(SUBJECT, _key(SUBJECT, tenant.slug, subject), rate))
    elif address is not None:
        rate = _rate("", "RATE_LIMIT_ANONYMOUS_PER_ADDRESS")
        if rate:
            limits.append(Limit(ADDRESS, _key(ADDRESS, tenant.slug, address), rate))
    return limits


DEFAULT_SETTINGS = (
    "RATE_LIMIT_PER_SUBJECT",
    "RATE_LIMIT_PER_TENANT",
    "RATE_LIMIT_ANONYMOUS_PER_ADDRESS",
)


@register()
def default_rates_check(app_configs: object, **kwargs: object) -> list[Error]:
    """The platform's default rates must be rates: a typo would silently mean no limit."""
    errors = []
    for setting in DEFAULT_SETTINGS:
        try:
            parse_rate(getattr(authz_settings, setting))
        except ValueError as exc:
            errors.append(Error(f"AUTHZ_{setting}: {exc}", id="tenants.E001"))
    return errors


def _rate(own: str, setting: str) -> Rate | None:
    try:
        return parse_rate(own) or parse_rate(getattr(authz_settings, setting))
    except ValueError:
        return None  # validated on save and at start; never a 500 on the request path


@functools.lru_cache(maxsize=65536)  # tenants and their busy subjects come back
def _key(kind: str, tenant: str, value: str) -> str:
    return derived_key(f"rate-{kind}", f"{tenant}\n{value}")


@dataclass(slots=True)
class _Tally:
    """A limit as this process knows it: the store's counts at its last answer, and the
    requests counted here since (not yet in the store)."""

    limit: Limit
    window: int = -1
    previous: int = 0
    current: int = 0
    pending: int = 0

    def counts(self) -> tuple[int, int]:
        """(previous, current) with this process's pending requests."""
        return self.previous, self.current + self.pending


class Limiter:
    """Counts requests against limits in the shared store; remembers what is over, here.

    A request far from every limit it counts against is counted here and written with the
    next round trip (at most FLUSH_AFTER later): while the store's count plus this process's
    unwritten ones stay under half a limit, and this process holds at most a twentieth of it
    unwritten. Any other request is counted in the store before it is answered. So up to ten
    processes can never let a limit be exceeded, and a limit below 20 is always counted in the
    store; far from their limits, requests cost no round trip.
    """

    def __init__(self) -> None:
        self._over: dict[str, tuple[float, Verdict]] = {}  # key -> (monotonic end, verdict)
        self._tallies: dict[str, _Tally] = {}
        self._lock = threading.Lock()
        self._complained_at = float("-inf")
        self._down_until = float("-inf")
        self._pending_since: float | None = None

    def known_over(self, limits: list[Limit]) -> Verdict | None:
        """A verdict refusing one of these limits that the store gave lately, without asking."""
        now = time.monotonic()
        for limit in limits:
            held = self._over.get(limit.key)
            if held is not None and held[0] > now and held[1].limit.rate == limit.rate:
                ends_in = math.ceil(held[0] - now)
                return Verdict(limit, 0, ends_in, max(1, ends_in))
        return None

    def count(self, limits: list[Limit]) -> list[Verdict] | None:
        """Count one request against every limit; None when the store cannot say."""
        if not limits:
            return []
        now = time.time()
        with self._lock:
            tallies = [self._tally(limit) for limit in limits]
            if self._may_count_here(tallies, now):
                for tally in tallies:
                    tally.pending += 1
                self._pending_since = self._pending_since or time.monotonic()
                return [_verdict(t.limit, *t.counts(), now, counted=True) for t in tallies]
        if time.monotonic() < self._down_until:
            UNAVAILABLE.inc()
            return None  # the store failed a moment ago: serve, and try again shortly
        return self._count_in_store(tallies, now)

    def forget(self) -> None:
        """Forget what this process knew (tests)."""
        with self._lock:
            self._over.clear()
            self._tallies.clear()
            self._pending_since = None
            self._down_until = float("-inf")

    def _tally(self, limit: Limit) -> _Tally:
        tally = self._tallies.get(limit.key)
        if tally is None or tally.limit != limit:
            if len(self._tallies) >= MAX_TALLIES:
                self._drop_written()
            tally = self._tallies[limit.key] = _Tally(limit, pending=tally.pending if tally else 0)
        return tally

    def _drop_written(self) -> None:
        for key in [key for key, tally in self._tallies.items() if not tally.pending]:
            del self._tallies[key]

    def _may_count_here(self, tallies: list[_Tally], now: float) -> bool:
        if self._pending_since is not None and time.monotonic() - self._pending_since > FLUSH_AFTER:
            return False
        for tally in tallies:
            rate = tally.limit.rate
            if tally.window != int(now // rate.seconds) or tally.pending >= rate.count // 20:
                return False
            previous, current = tally.counts()
            if previous * (1 - (now % rate.seconds) / rate.seconds) + current + 1 > rate.count / 2:
                return False
        return True

    def _count_in_store(self, tallies: list[_Tally], now: float) -> list[Verdict] | None:
        """This request, and every request counted here so far, in one round trip."""
        with self._lock:
            batch = {t.limit.key: t for t in self._tallies.values() if t.pending}
            batch.update((t.limit.key, t) for t in tallies)
            asked = {id(t) for t in tallies}
            asking = [id(t) in asked for t in batch.values()]
            sent = [t.pending for t in batch.values()]
            self._pending_since = None
        entries = list(batch.values())
        try:
            counts, fits = _backend().count([t.limit for t in entries], sent, asking, now)
        except Exception:
            UNAVAILABLE.inc()
            self._down_until = time.monotonic() + STORE_RETRY_AFTER
            self._complain()
            return None
        with self._lock:
            for tally, written, (previous, current) in zip(entries, sent, counts, strict=True):
                tally.pending -= written
                tally.window = int(now // tally.limit.rate.seconds)
                tally.previous, tally.current = previous, current
        verdicts = [_verdict(t.limit, t.previous, t.current, now, counted=fits) for t in tallies]
        for verdict in verdicts:
            if not verdict.allowed:
                with self._lock:
                    self._over[verdict.limit.key] = (
                        time.monotonic() + verdict.retry_after,
                        verdict,
                    )
        return verdicts

    def _complain(self) -> None:
        if time.monotonic() - self._complained_at >= COMPLAIN_EVERY:
            self._complained_at = time.monotonic()
            logger.warning("Cannot count requests in the shared store: serving without limits.")


def _verdict(limit: Limit, previous: int, current: int, now: float, counted: bool) -> Verdict:
    """A limit's state for this request: ``counted`` when ``current`` includes it (it fitted
    every limit), else when it would fit and, if not, how long until it would."""
    seconds, allowed = limit.rate.seconds, limit.rate.count
    elapsed = now % seconds
    overlap = 1 - elapsed / seconds
    estimate = previous * overlap + current + (0 if counted else 1)
    reset = max(1, math.ceil(seconds - elapsed))
    if estimate <= allowed:
        return Verdict(limit, int(allowed - estimate), reset, 0)
    before = current - (1 if counted else 0)  # the window's requests without this one
    if before + 1 <= allowed and previous:  # the previous window's weight must fade enough
        wait = seconds * (1 - (allowed - before - 1) / previous) - elapsed
    else:  # only the next window can make room: before * (1 - f) + 1 <= allowed
        wait = (seconds - elapsed) + seconds * (1 - (allowed - 1) / before)
    return Verdict(limit, 0, reset, max(1, math.ceil(wait)))


def _fits(limit: Limit, previous: int, current: int, now: float) -> bool:
    """Whether one more request fits the limit, with ``current`` requests in its window."""
    overlap = 1 - (now % limit.rate.seconds) / limit.rate.seconds
    return previous * overlap + current + 1 <= limit.rate.count


# KEYS: one hash per limit. ARGV, per key: its window index, the seconds it is kept, requests
# already admitted to add, whether this request counts against it (1 or 0), its quota and the
# previous window's weight now. This request is added only where it fits every limit it counts
# against: a refused request takes no quota. Returns, per key, the previous window's count and
# the current one's, then 1 when this request was counted.
COUNT_SCRIPT = """
local states, fits = {}, true
for i, key in ipairs(KEYS) do
  local base = 6 * (i - 1)
  local window, pending = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 3])
  local state = redis.call('HMGET', key, 'w', 'c', 'p')
  local w, c, p = tonumber(state[1]), tonumber(state[2]) or 0, tonumber(state[3]) or 0
  if w == window then
    c = c + pending
  elseif w == window - 1 then
    p, c = c, pending
  else
    p, c = 0, pending
  end
  local asked = tonumber(ARGV[base + 4]) == 1
  if asked and p * tonumber(ARGV[base + 6]) + c + 1 > tonumber(ARGV[base + 5]) then
    fits = false
  end
  states[i] = {window, c, p, asked}
end
local result = {}
for i, key in ipairs(KEYS) do
  local window, c, p, asked = unpack(states[i])
  if asked and fits then
    c = c + 1
  end
  redis.call('HSET', key, 'w', window, 'c', c, 'p', p)
  redis.call('EXPIRE', key, ARGV[6 * (i - 1) + 2])
  result[2 * i - 1], result[2 * i] = p, c
end
result[#result + 1] = fits and 1 or 0
return result
"""


class RedisCounts:
    """All of a request's limits in one script call."""

    def __init__(self, store: RedisCache) -> None:
        self.store = store

    def count(
        self, limits: list[Limit], pending: list[int], asked: list[bool], now: float
    ) -> tuple[list[tuple[int, int]], bool]:
        """(previous, current) per limit once ``pending`` are added and this request too, where
        it fits every ``asked`` limit; and whether it did."""
        client = self.store._cache.get_client(write=True)
        script = _scripts.get(id(client))
        if script is None:
            script = _scripts[id(client)] = client.register_script(COUNT_SCRIPT)
        keys = [self.store.make_key(limit.key) for limit in limits]
        args: list[Any] = []
        for limit, more, counts in zip(limits, pending, asked, strict=True):
            seconds = limit.rate.seconds
            weight = repr(1 - (now % seconds) / seconds)
            args += [int(now // seconds), 2 * seconds, more, int(counts), limit.rate.count, weight]
        flat = script(keys=keys, args=args)
        pairs = [(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat) - 1, 2)]
        return pairs, bool(int(flat[-1]))


_scripts: dict[int, Any] = {}


class DatabaseCounts:
    """One upsert per limit: the row's window moves on, and RETURNING gives the counts
    (PostgreSQL, and SQLite from 3.35)."""

    def count(
        self, limits: list[Limit], pending: list[int], asked: list[bool], now: float
    ) -> tuple[list[tuple[int, int]], bool]:
        """(previous, current) per limit once ``pending`` are added and this request too, where
        it fits every ``asked`` limit; and whether it did. A request that does not fit is taken
        back in the same transaction, so no other process counts it."""
        from tenants.models import RateWindow

        table = connection.ops.quote_name(RateWindow._meta.db_table)
        pairs = []
        with transaction.atomic(), connection.cursor() as cursor:
            for limit, more, counts in zip(limits, pending, asked, strict=True):
                window = int(now // limit.rate.seconds)
                expires = int(now) + 2 * limit.rate.seconds
                cursor.execute(_upsert(table), [limit.key, window, more + counts, expires])
                previous, current = cursor.fetchone()
                pairs.append((int(previous), int(current)))
            fits = all(
                _fits(limit, previous, current - 1, now)
                for limit, counts, (previous, current) in zip(limits, asked, pairs, strict=True)
                if counts
            )
            if not fits:
                taken_back = f"UPDATE {table} SET hits = hits - 1 WHERE rate_key = %s"  # noqa: S608
                for index, (limit, counts) in enumerate(zip(limits, asked, strict=True)):
                    if counts:
                        cursor.execute(taken_back, [limit.key])
                        pairs[index] = (pairs[index][0], pairs[index][1] - 1)
        return pairs, fits


def _upsert(table: str) -> str:
    """Add to a limit's row, moving its window on first (the SET sees the row before)."""
    return (
        f"INSERT INTO {table} (rate_key, window_index, hits, previous_hits, expires) "  # noqa: S608
        "VALUES (%s, %s, %s, 0, %s) ON CONFLICT (rate_key) DO UPDATE SET "
        f"hits = CASE WHEN {table}.window_index = excluded.window_index "
        f"THEN {table}.hits + excluded.hits ELSE excluded.hits END, "
        f"previous_hits = CASE WHEN {table}.window_index = excluded.window_index "
        f"THEN {table}.previous_hits "
        f"WHEN {table}.window_index = excluded.window_index - 1 THEN {table}.hits ELSE 0 END, "
        "window_index = excluded.window_index, expires = excluded.expires "
        "RETURNING previous_hits, hits"
    )


def prune_windows() -> int:
    """Delete the database's counters no window needs any more (Redis expires its own)."""
    if isinstance(shared_store(), RedisCache):
        return 0
    from tenants.models import RateWindow

    return RateWindow.objects.filter(expires__lt=int(time.time())).delete()[0]


def _backend() -> RedisCounts | DatabaseCounts:
    store = shared_store()
    return RedisCounts(store) if isinstance(store, RedisCache) else DatabaseCounts()


def policy_header(verdicts: list[Verdict]) -> str:
    """``RateLimit-Policy`` (draft-ietf-httpapi-ratelimit-headers-12): every limit applied."""
    return ", ".join(
        f'"{v.limit.kind}";q={v.limit.rate.count};w={v.limit.rate.seconds}' for v in verdicts
    )


def state_header(verdicts: list[Verdict]) -> str:
    """``RateLimit``: the remaining quota and reset of the tightest limit."""
    tightest = min(verdicts, key=lambda v: (v.remaining, -v.reset))
    return f'"{tightest.limit.kind}";r={tightest.remaining};t={tightest.reset}'


limiter = Limiter()
