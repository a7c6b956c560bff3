"""Fair sharing: request rates per tenant, per token subject and per client address.

Each limit is a sliding window counter: the requests of the current fixed window plus those of
the previous one, weighted by how much of it still overlaps the last ``seconds``. Counting is
atomic in the shared store, all of a request's limits in one round trip: with Redis one Lua
script (a hash per limit: window, count, previous count); without it one upsert per limit on the
database, whose RETURNING hands back the counts (and a refused request is taken back in the same
transaction). No request is admitted that the store has not counted: far from its limits a
process admits requests from a lease, slots the store counted for it earlier (``Limiter``). A
refused request takes no quota, so a client that waits its ``Retry-After`` is served.

A request refused before authentication completes counts against its client's address, then
against the tenant's unauthenticated requests, never against the quota of authenticated callers.

A process remembers which tenants and addresses the store said were over, until their reset:
their next requests are refused before any token work, with no round trip. When the store
cannot count, requests are served (an outage of the counter is not one of the API), logged once
a minute and counted in ``authz_rate_limiter_unavailable_total``.
"""

import functools
import ipaddress
import itertools
import logging
import math
import re
import threading
import time
from collections.abc import Callable
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
UNAUTHENTICATED = "unauthenticated"
COMPLAIN_EVERY = 60.0
STORE_RETRY_AFTER = 1.0  # seconds without trying the store after it failed
MAX_REMEMBERED = 10_000  # entries of each per-process map keyed by limit (so by address)
LEASE_SHARE = 20  # a lease is at most this fraction of a limit
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


KINDS = {
    TENANT: "this tenant",
    SUBJECT: "this caller",
    ADDRESS: "this address",
    UNAUTHENTICATED: "this tenant's unauthenticated requests",
}


def throttled(verdict: Verdict, tenant: str) -> Throttled:
    """DRF's 429 for a request over ``verdict``'s limit (its handler sets Retry-After), counted."""
    count_rate_limited(tenant)
    detail = (
        f"Too many requests for {KINDS[verdict.limit.kind]} ({verdict.limit.rate}); "
        f"retry in {verdict.retry_after} s."
    )
    # Not Throttled(wait=...): DRF would append "Expected available in N seconds." to our sentence.
    refusal = Throttled(detail=detail, code="rate_limited")
    refusal.wait = verdict.retry_after  # DRF's handler sends it as Retry-After
    return refusal


def anonymous_limited() -> bool:
    """Whether requests refused before authentication are limited per address."""
    return _rate("", "RATE_LIMIT_ANONYMOUS_PER_ADDRESS") is not None


def early_limits(tenant: Any, address: str | None) -> list[Limit]:
    """The limits checked before any token work: the tenant's, and the address's (token or not:
    a request from an address over its limit is refused before its token is read)."""
    return _tenant_limit(tenant, TENANT) + _address_limit(tenant, address)


def limits_of(tenant: Any, subject: str | None) -> list[Limit]:
    """The limits of a request authenticated (or served without a token): the tenant's, then
    its subject's."""
    limits = _tenant_limit(tenant, TENANT)
    rate = _rate(tenant.rate_limit_per_subject, "RATE_LIMIT_PER_SUBJECT")
    if subject is not None and rate:
        limits.append(Limit(SUBJECT, _key(SUBJECT, tenant.slug, subject), rate))
    return limits


def refusal_limits(tenant: Any, address: str | None) -> list[Limit]:
    """The limits of a request refused before authentication completed: its address's first,
    then the tenant's unauthenticated requests (the tenant's rate, never the quota that
    authenticated callers spend)."""
    return _address_limit(tenant, address) + _tenant_limit(tenant, UNAUTHENTICATED)


def address_bucket(address: str) -> str:
    """What an address limit counts: an IPv4 address, or the IPv6 network of
    AUTHZ_RATE_LIMIT_IPV6_PREFIX bits it is in (one subscriber often holds a whole /64)."""
    if ":" not in address:
        return address
    try:
        prefix = authz_settings.RATE_LIMIT_IPV6_PREFIX
        return str(ipaddress.IPv6Network((address, prefix), strict=False))
    except ValueError:  # a malformed setting is the system check's to report
        return address


def _tenant_limit(tenant: Any, kind: str) -> list[Limit]:
    rate = _rate(tenant.rate_limit_per_tenant, "RATE_LIMIT_PER_TENANT")
    return [Limit(kind, _key(kind, tenant.slug, ""), rate)] if rate else []


def _address_limit(tenant: Any, address: str | None) -> list[Limit]:
    rate = _rate("", "RATE_LIMIT_ANONYMOUS_PER_ADDRESS")
    if address is None or rate is None:
        return []
    return [Limit(ADDRESS, _key(ADDRESS, tenant.slug, address_bucket(address)), rate)]


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


@register()
def ipv6_prefix_check(app_configs: object, **kwargs: object) -> list[Error]:
    """Address limits need an IPv6 prefix length they can count by."""
    prefix = authz_settings.RATE_LIMIT_IPV6_PREFIX
    if type(prefix) is int and 1 <= prefix <= 128:
        return []
    message = (
        f"AUTHZ_RATE_LIMIT_IPV6_PREFIX is {prefix!r}: set it to a prefix length from 1 to 128 "
        "(64, the network one subscriber usually holds, if unset)."
    )
    return [Error(message, id="tenants.E002")]


def _rate(own: str, setting: str) -> Rate | None:
    try:
        return parse_rate(own) or parse_rate(getattr(authz_settings, setting))
    except ValueError:
        return None  # validated on save and at start; never a 500 on the request path


@functools.lru_cache(maxsize=MAX_REMEMBERED)  # tenants and their busy subjects come back
def _key(kind: str, tenant: str, value: str) -> str:
    return derived_key(f"rate-{kind}", f"{tenant}\n{value}")


@dataclass(slots=True)
class _Tally:
    """A limit in one window as this process knows it: the store's counts at its last answer,
    the slots of a lease it holds there, and the requests it admitted."""

    limit: Limit
    window: int
    previous: int = 0
    current: int = 0  # with every lease granted in the window, used or not
    leased: int = 0  # slots the store counted for this process, not used yet
    admitted: int = 0

    def lease_wanted(self) -> int:
        """Slots to ask for with the next request: a twentieth of the limit at most, and no
        more than this process admitted in the window so far (a quiet process asks none)."""
        return min(self.limit.rate.count // LEASE_SHARE, self.admitted)


class Limiter:
    """Counts requests against limits in the shared store; remembers what is over, here.

    No request is admitted that the store has not counted. Far from its limits a request may be
    admitted from a lease: slots the store counted for this process earlier in the window, in
    the same atomic step as one of its requests, granted only while the store's count with them
    stays under half the limit, at most a twentieth of the limit and no more than this process
    admitted in the window. A lease dies with its window (its unused slots stay counted: a
    limit may admit a little less, never more). So no number of processes can exceed a limit,
    and a limit below 20 is always counted in the store.
    """

    def __init__(self) -> None:
        self._over: dict[str, tuple[float, Verdict]] = {}  # key -> (monotonic end, verdict)
        self._tallies: dict[str, _Tally] = {}
        self._lock = threading.Lock()
        self._complained_at = float("-inf")
        self._down_until = float("-inf")

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
        leased = self._admit_leased(limits, now)
        if leased is not None:
            return leased
        if time.monotonic() < self._down_until:
            UNAVAILABLE.inc()
            return None  # the store failed a moment ago: serve, and try again shortly
        return self._count_in_store(limits, now)

    def forget(self) -> None:
        """Forget what this process knew (tests)."""
        with self._lock:
            self._over.clear()
            self._tallies.clear()
            self._down_until = float("-inf")

    def remembered(self) -> int:
        """How many limits this process holds anything about (bounded by MAX_REMEMBERED each)."""
        return max(len(self._over), len(self._tallies))

    def _admit_leased(self, limits: list[Limit], now: float) -> list[Verdict] | None:
        """Verdicts for a request admitted from this process's leases on every limit, if any."""
        with self._lock:
            tallies = [self._tallies.get(limit.key) for limit in limits]
            for limit, tally in zip(limits, tallies, strict=True):
                if tally is None or tally.limit != limit or not tally.leased:
                    return None
                if tally.window != _window(limit, now):
                    return None
            for tally in tallies:
                tally.leased -= 1
                tally.admitted += 1
            return [_verdict_here(tally, now, counted=True) for tally in tallies]

    def _count_in_store(self, limits: list[Limit], now: float) -> list[Verdict] | None:
        """This request in the store, with a lease on each limit where one may be had."""
        with self._lock:
            tallies = [self._tally(limit, now) for limit in limits]
            wanted = [tally.lease_wanted() for tally in tallies]
        try:
            counts, fits = _backend().count(limits, wanted, now)
        except Exception:
            UNAVAILABLE.inc()
            self._down_until = time.monotonic() + STORE_RETRY_AFTER
            self._complain()
            return None
        with self._lock:
            for tally, (previous, current, granted) in zip(tallies, counts, strict=True):
                tally.previous, tally.current = previous, current
                tally.leased += granted
                tally.admitted += int(fits)
        verdicts = [_verdict_here(tally, now, counted=fits) for tally in tallies]
        if not fits and all(verdict.allowed for verdict in verdicts):
            verdicts[0] = _refused_by_store(verdicts[0])  # the store's clock ran ahead of ours
        for verdict in verdicts:
            if not verdict.allowed:
                self._remember_over(verdict)
        return verdicts

    def _tally(self, limit: Limit, now: float) -> _Tally:
        """This process's tally of ``limit`` in the current window (never an older one)."""
        window = _window(limit, now)
        tally = self._tallies.get(limit.key)
        if tally is None or tally.limit != limit or tally.window < window:
            self._tallies.pop(limit.key, None)  # the newest goes last: the oldest go first
            _make_room(self._tallies, lambda t: t.window < _window(t.limit, now))
            tally = self._tallies[limit.key] = _Tally(limit, window)
        return tally

    def _remember_over(self, verdict: Verdict) -> None:
        now = time.monotonic()
        with self._lock:
            self._over.pop(verdict.limit.key, None)
            _make_room(self._over, lambda held: held[0] <= now)
            self._over[verdict.limit.key] = (now + verdict.retry_after, verdict)

    def _complain(self) -> None:
        if time.monotonic() - self._complained_at >= COMPLAIN_EVERY:
            self._complained_at = time.monotonic()
            logger.warning("Cannot count requests in the shared store: serving without limits.")


def _make_room(entries: dict[str, Any], expired: Callable[[Any], bool]) -> None:
    """Keep a map under MAX_REMEMBERED: drop what has expired, then the oldest tenth."""
    if len(entries) < MAX_REMEMBERED:
        return
    for key in [key for key, value in entries.items() if expired(value)]:
        del entries[key]
    keep = MAX_REMEMBERED * 9 // 10  # room for a tenth more: a flood costs O(1) per entry
    for key in list(itertools.islice(entries, max(0, len(entries) - keep))):
        del entries[key]


def _verdict_here(tally: _Tally, now: float, counted: bool) -> Verdict:
    """A limit's state as this process sees it: its own unused lease slots are not spent."""
    return _verdict(tally.limit, tally.previous, tally.current - tally.leased, now, counted)


def _refused_by_store(verdict: Verdict) -> Verdict:
    """A refusal the store made where this process's view of the window would not."""
    return Verdict(verdict.limit, 0, verdict.reset, 1)


def _window(limit: Limit, now: float) -> int:
    """The index of the fixed window ``now`` falls in, for this limit's length."""
    return int(now // limit.rate.seconds)


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


# KEYS: one hash per limit (window, count, previous count). ARGV, per key: the caller's window
# index, the seconds the hash is kept, the quota, the previous window's weight now, and the lease
# wanted. A window never moves back: a caller whose clock is behind the store's counts in the
# store's window, with the previous one at full weight, and gets no lease. The request is added
# to every limit only if it fits them all (a refused request takes no quota); then each limit
# grants its lease if the count with it stays under half the quota. Returns, per key, the
# previous count, the current one and the lease granted; then 1 when the request was counted.
COUNT_SCRIPT = """
local states, fits = {}, true
for i, key in ipairs(KEYS) do
  local base = 5 * (i - 1)
  local window, quota = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 3])
  local weight = tonumber(ARGV[base + 4])
  local state = redis.call('HMGET', key, 'w', 'c', 'p')
  local w, c, p = tonumber(state[1]), tonumber(state[2]) or 0, tonumber(state[3]) or 0
  if w == nil or w < window - 1 then
    w, c, p = window, 0, 0
  elseif w == window - 1 then
    w, c, p = window, 0, c
  elseif w > window then
    weight = 1
  end
  if p * weight + c + 1 > quota then
    fits = false
  end
  states[i] = {w, c, p, weight, w == window}
end
local result = {}
for i, key in ipairs(KEYS) do
  local base = 5 * (i - 1)
  local w, c, p, weight, current = unpack(states[i])
  local lease, wanted = 0, tonumber(ARGV[base + 5])
  if fits then
    c = c + 1
    if current and wanted > 0 and p * weight + c + wanted <= tonumber(ARGV[base + 3]) / 2 then
      lease, c = wanted, c + wanted
    end
  end
  redis.call('HSET', key, 'w', w, 'c', c, 'p', p)
  redis.call('EXPIRE', key, ARGV[base + 2])
  result[3 * i - 2], result[3 * i - 1], result[3 * i] = p, c, lease
end
result[#result + 1] = fits and 1 or 0
return result
"""

Counts = tuple[list[tuple[int, int, int]], bool]


class RedisCounts:
    """All of a request's limits in one script call."""

    def __init__(self, store: RedisCache) -> None:
        self.store = store

    def count(self, limits: list[Limit], leases: list[int], now: float) -> Counts:
        """(previous, current, lease granted) per limit, once this request is added where it
        fits every limit; and whether it did."""
        client = self.store._cache.get_client(write=True)
        script = _scripts.get(id(client))
        if script is None:
            script = _scripts[id(client)] = client.register_script(COUNT_SCRIPT)
        keys = [self.store.make_key(limit.key) for limit in limits]
        args: list[Any] = []
        for limit, wanted in zip(limits, leases, strict=True):
            seconds = limit.rate.seconds
            weight = repr(1 - (now % seconds) / seconds)
            args += [_window(limit, now), 2 * seconds, limit.rate.count, weight, wanted]
        flat = [int(value) for value in script(keys=keys, args=args)]
        return [tuple(flat[i : i + 3]) for i in range(0, len(flat) - 1, 3)], bool(flat[-1])


_scripts: dict[int, Any] = {}


class DatabaseCounts:
    """One upsert per limit, whose RETURNING gives the counts (PostgreSQL, and SQLite from
    3.35), in one transaction that holds the rows: the same decisions as the Redis script."""

    def count(self, limits: list[Limit], leases: list[int], now: float) -> Counts:
        """(previous, current, lease granted) per limit, once this request is added where it
        fits every limit; and whether it did. A request that does not fit is taken back in the
        same transaction, so no other process counts it."""
        from tenants.models import RateWindow

        table = connection.ops.quote_name(RateWindow._meta.db_table)
        add = f"UPDATE {table} SET hits = hits + %s WHERE rate_key = %s"  # noqa: S608
        with transaction.atomic(), connection.cursor() as cursor:
            states = []
            for limit in limits:
                window = _window(limit, now)
                expires = int(now) + 2 * limit.rate.seconds
                cursor.execute(_upsert(table), [limit.key, window, expires])
                previous, current, stored = cursor.fetchone()
                weight = 1 - (now % limit.rate.seconds) / limit.rate.seconds
                states.append((previous, current, 1.0 if stored > window else weight, stored))
            fits = all(
                p * w + c <= lim.rate.count
                for lim, (p, c, w, _) in zip(limits, states, strict=True)
            )
            counts = []
            for limit, wanted, (previous, current, weight, stored) in zip(
                limits, leases, states, strict=True
            ):
                lease = wanted if stored == _window(limit, now) else 0
                if not fits or previous * weight + current + lease > limit.rate.count / 2:
                    lease = 0
                change = lease if fits else -1
                if change:
                    cursor.execute(add, [change, limit.key])
                counts.append((previous, current + change, lease))
        return counts, fits


def _upsert(table: str) -> str:
    """Add this request to a limit's row, moving its window on first but never back (the SET
    sees the row before); return its previous count, its count and its window."""
    return (
        f"INSERT INTO {table} (rate_key, window_index, hits, previous_hits, expires) "  # noqa: S608
        "VALUES (%s, %s, 1, 0, %s) ON CONFLICT (rate_key) DO UPDATE SET "
        f"hits = CASE WHEN {table}.window_index >= excluded.window_index "
        f"THEN {table}.hits + 1 ELSE 1 END, "
        f"previous_hits = CASE WHEN {table}.window_index >= excluded.window_index "
        f"THEN {table}.previous_hits "
        f"WHEN {table}.window_index = excluded.window_index - 1 THEN {table}.hits ELSE 0 END, "
        f"window_index = CASE WHEN {table}.window_index > excluded.window_index "
        f"THEN {table}.window_index ELSE excluded.window_index END, "
        f"expires = CASE WHEN {table}.expires > excluded.expires "
        f"THEN {table}.expires ELSE excluded.expires END "
        "RETURNING previous_hits, hits, window_index"
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
