"""Per-process cache of parsed public keys by JWKS URL, kept in step with the shared records.

The request path asks for a key by URL and kid, and reads only memory. ``sync()`` brings the
held entries up to the shared records: it reads one stamp that changes whenever any stored key set
changes, and re-reads the records (in one round trip) only when the stamp moved or an entry is a
minute old. A web process runs it in its background thread every CONFIG_RECHECK_INTERVAL; a
process without that thread runs it inline on the first request after the interval.

A URL first seen in this process starts from the shared record another process already fetched.
An unknown kid, or no usable key set, triggers at most one on-demand fetch per URL per cooldown,
single-flight across processes: a rotated key works at once, and a flood of made-up kids cannot
hammer the issuer. A request with no usable key set waits for a fetch in flight elsewhere (up to
the request-path deadline) rather than answering 503 while the issuer is answering.
"""

import logging
import threading
import time
from dataclasses import dataclass, replace

from authz.conf import authz_settings
from authz.jwks import (
    JWKSError,
    KeySetRecord,
    RefreshInProgress,
    read_fetch_state,
    read_record,
    read_records,
    read_stamp,
    refresh_key_set,
)
from authz.metrics import count_key_set_fetch
from authz.store import claim, derived_key
from authz.tokens import SigningKey, UnknownKey

logger = logging.getLogger(__name__)

# An entry whose stamp has not moved is still re-read after this long, which keeps its fetch
# time (the max-stale clock) current and bounds the harm of a stamp write that was lost.
STAMPED_ENTRY_MAX_AGE = 60.0
UNREAD = object()  # matches no stamp: an entry marked so is re-read on its next sync
# On a missing kid, the shared record is re-read at most this often per URL: a key another
# process just fetched works here at once, and a flood of made-up kids costs a few reads a second.
REREAD_EVERY = 0.25
# A request that finds no usable key set while another thread or process fetches it waits for
# that fetch (up to the request-path deadline) instead of answering 503: it polls the shared
# record and lock, first after WAIT_FIRST_POLL, backing off to WAIT_MAX_POLL. With no fetch in
# flight and no record yet, the one that claimed the fetch may not have begun: WAIT_GRACE.
WAIT_FIRST_POLL = 0.01
WAIT_MAX_POLL = 0.1
WAIT_GRACE = 0.5


class KeySetUnavailable(Exception):
    """No usable key set: the issuer is unreachable and nothing fresh enough is cached."""

    def __init__(self, message: str, retry_after: int = 30) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class _Entry:
    version: str
    fetched_at: float | None
    attempted_at: float
    keys: dict[str, SigningKey]
    read_at: float  # monotonic: when the shared record was last read
    stamp: object

    def usable(self) -> bool:
        return _fresh(self.fetched_at)


def _fresh(fetched_at: float | None) -> bool:
    """Whether keys fetched then may still be used."""
    if fetched_at is None:
        return False
    return time.time() - fetched_at <= authz_settings.KEYSET_MAX_STALE


def _parse(record: KeySetRecord, now: float, stamp: object) -> _Entry:
    keys = {key["kid"]: SigningKey.from_jwk(key) for key in record.keys}
    return _Entry(record.version, record.fetched_at, record.attempted_at, keys, now, stamp)


def _updated(entry: _Entry | None, record: KeySetRecord | None, now: float, stamp: object):
    """The entry after reading ``record``; a flushed store never drops keys already held."""
    if record is None or (record.fetched_at is None and entry is not None):
        return entry and replace(entry, read_at=now, stamp=UNREAD)
    if entry is not None and entry.version == record.version:
        return replace(
            entry,
            fetched_at=record.fetched_at,
            attempted_at=record.attempted_at,
            read_at=now,
            stamp=stamp,
        )
    return _parse(record, now, stamp)


def _fetch_over(record: KeySetRecord | None, fetching: bool, waited: float) -> bool:
    """Whether a waiter has what it waited for: usable keys, or a fetch that ended either way.

    With a record and no fetch in flight, there is nothing to wait for: an issuer that is down
    costs its callers no wait. With neither, the winner of the claim may not have started yet.
    """
    if record is not None and _fresh(record.fetched_at):
        return True
    if fetching:
        return False
    return record is not None or waited >= WAIT_GRACE


def _has(entry: _Entry | None, kid: str) -> bool:
    return entry is not None and entry.usable() and kid in entry.keys


class KeyCache:
    """Parsed signing keys per JWKS URL, in this process."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._used_at: dict[str, float] = {}
        self._last_fetch: dict[str, float] = {}
        self._reread_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._synced_at = float("-inf")
        self.synced_in_background = False

    def held_key(self, jwks_url: str, kid: str) -> SigningKey | None:
        """The usable key with this kid that this process holds now; never fetches."""
        self._sync_inline_when_due()
        self._used_at[jwks_url] = time.monotonic()  # a repeated token is a use too
        entry = self._entries.get(jwks_url)
        if entry is None or not entry.usable():
            return None
        return entry.keys.get(kid)

    def signing_key(self, jwks_url: str, kid: str) -> SigningKey:
        """The public key with this kid, fetching once per cooldown when missing."""
        key = self.held_key(jwks_url, kid)
        if key is not None:
            return key
        entry = self._entries.get(jwks_url)
        if not _has(entry, kid):
            entry = self._reread(jwks_url) or entry  # another process may have fetched it
        if not _has(entry, kid) and self._may_fetch(jwks_url):
            entry = self._fetch(jwks_url) or entry
        if entry is None or not entry.usable():
            entry = self._wait_for_fetch(jwks_url) or entry
        if entry is None or not entry.usable():
            retry_after = 1 if entry is None else 30
            raise KeySetUnavailable(f"No usable key set at {jwks_url}.", retry_after)
        if kid not in entry.keys:
            raise UnknownKey()
        return entry.keys[kid]

    def clear(self) -> None:
        """Forget every parsed key and cooldown in this process."""
        with self._lock:
            self._entries.clear()
            self._used_at.clear()
            self._last_fetch.clear()
            self._reread_at.clear()
            self._synced_at = float("-inf")

    def sync(self) -> None:
        """Bring held entries up to the shared records: a stamp read, a batch read if moved."""
        now = time.monotonic()
        self._synced_at = now
        try:
            stamp = read_stamp()
        except Exception:
            logger.warning("Cannot read the key set stamp from the shared store; using memory.")
            return
        due = [
            url
            for url, entry in list(self._entries.items())
            if stamp is None or entry.stamp != stamp or now - entry.read_at >= STAMPED_ENTRY_MAX_AGE
        ]
        if not due:
            return
        try:
            records = read_records(due)
        except Exception:
            logger.warning("Cannot read key sets from the shared store; using memory.")
            return
        for url in due:
            self._put(url, _updated(self._entries.get(url), records.get(url), now, stamp))

    def refresh_due(self, worker_expected: bool = False) -> int:
        """Refresh, off the request path, the key sets used here that are older than the refresh
        interval (twice that when a worker should be doing it); one process per URL does it."""
        interval = authz_settings.JWKS_REFRESH_INTERVAL
        now, refreshed = time.monotonic(), 0
        due_after = interval * (2 if worker_expected else 1)
        for url, entry in list(self._entries.items()):
            # A URL no request here used lately is left to others: refreshing it could bring back
            # the record of an issuer no tenant uses any more. Its keys stay, in case it returns.
            if now - self._used_at.get(url, float("-inf")) > 2 * interval:
                continue
            if self._older_than(url, entry, due_after) and self._claim(url, interval):
                refreshed += self._refresh_in_background(url)
        return refreshed

    def _older_than(self, jwks_url: str, entry: _Entry, seconds: float) -> bool:
        """Whether the shared record, not only this process's copy, was last tried that long ago."""
        if time.time() - entry.attempted_at < seconds:
            return False
        try:
            record = read_record(jwks_url)  # beat or another process may have refreshed it
        except Exception:
            return False
        if record is not None and time.time() - record.attempted_at < seconds:
            self._put(jwks_url, _updated(entry, record, time.monotonic(), UNREAD))
            return False
        return True

    def _sync_inline_when_due(self) -> None:
        if self.synced_in_background:
            return
        if time.monotonic() - self._synced_at >= authz_settings.CONFIG_RECHECK_INTERVAL:
            self.sync()

    def _reread(self, jwks_url: str) -> _Entry | None:
        """The shared record, read at most every REREAD_EVERY seconds per URL on a miss."""
        now = time.monotonic()
        if now - self._reread_at.get(jwks_url, float("-inf")) < REREAD_EVERY:
            return None
        self._reread_at[jwks_url] = now
        return self._read(jwks_url)

    def _read(self, jwks_url: str) -> _Entry | None:
        """A URL first seen here: start from the record another process already fetched."""
        try:
            record, stamp = read_record(jwks_url), read_stamp()
        except Exception:
            logger.warning("Cannot read the key set at %s from the shared store.", jwks_url)
            return None
        entry = _updated(self._entries.get(jwks_url), record, time.monotonic(), stamp)
        self._put(jwks_url, entry)
        return entry

    def _wait_for_fetch(self, jwks_url: str) -> _Entry | None:
        """The entry a fetch in flight elsewhere stores, waited for up to the fetch deadline."""
        started = time.monotonic()
        give_up = started + authz_settings.JWKS_FETCH_DEADLINE
        pause = WAIT_FIRST_POLL
        while True:
            try:
                record, fetching = read_fetch_state(jwks_url)
            except Exception:
                logger.warning("Cannot read the key set at %s from the shared store.", jwks_url)
                return None
            now = time.monotonic()
            if _fetch_over(record, fetching, now - started) or now >= give_up:
                return self._entry_of(jwks_url, record)
            time.sleep(min(pause, give_up - now))
            pause = min(pause * 2, WAIT_MAX_POLL)

    def _entry_of(self, jwks_url: str, record: KeySetRecord | None) -> _Entry | None:
        entry = _updated(self._entries.get(jwks_url), record, time.monotonic(), UNREAD)
        self._put(jwks_url, entry)
        return entry

    def _put(self, jwks_url: str, entry: _Entry | None) -> None:
        with self._lock:
            if entry is None:
                self._entries.pop(jwks_url, None)
            else:
                self._entries[jwks_url] = entry

    def _may_fetch(self, jwks_url: str) -> bool:
        """One on-demand fetch per URL per cooldown: checked here, then across processes."""
        cooldown = authz_settings.UNKNOWN_KID_COOLDOWN
        now = time.monotonic()
        with self._lock:
            refused = now - self._last_fetch.get(jwks_url, float("-inf")) < cooldown
            if not refused:
                self._last_fetch[jwks_url] = now
        if refused or not self._claim(jwks_url, cooldown, "jwks-cooldown"):
            count_key_set_fetch(jwks_url, "cooldown_refused", "on_demand")
            return False
        return True

    def _claim(self, jwks_url: str, seconds: float, namespace: str = "jwks-due") -> bool:
        """True for the one process that claims this URL for ``seconds``."""
        try:
            return claim(derived_key(namespace, jwks_url), seconds)
        except Exception:
            return True  # the store is down; the local cooldown still bounds the fetches

    def _fetch(self, jwks_url: str) -> _Entry | None:
        try:
            record = refresh_key_set(jwks_url)
        except RefreshInProgress:
            return self._read(jwks_url) or self._entries.get(jwks_url)
        except JWKSError as exc:
            logger.info("on-demand key set fetch of %s failed: %s", jwks_url, exc)
            return self._read(jwks_url) or self._entries.get(jwks_url)
        except Exception:
            logger.exception("on-demand key set fetch of %s failed in the store", jwks_url)
            return self._entries.get(jwks_url)
        entry = _parse(record, time.monotonic(), UNREAD)
        self._put(jwks_url, entry)
        return entry

    def _refresh_in_background(self, jwks_url: str) -> int:
        try:
            record = refresh_key_set(
                jwks_url, authz_settings.JWKS_BACKGROUND_FETCH_DEADLINE, trigger="background"
            )
        except JWKSError:
            return 0  # logged by refresh_key_set; the record notes the error
        self._put(jwks_url, _updated(self._entries.get(jwks_url), record, time.monotonic(), UNREAD))
        return 1


key_cache = KeyCache()
