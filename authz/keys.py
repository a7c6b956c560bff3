"""Per-process cache of parsed public keys, kept in step with the shared key set records.

The request path asks for a key by kid. Keys are parsed once per key set version and held in
memory. Every CONFIG_RECHECK_INTERVAL seconds a process reads one shared stamp that changes
whenever any tenant's stored keys change; a tenant's record is re-read only when the stamp moved
since, or its entry is a minute old, or its keys are not usable. An unknown
kid, or no usable key set, triggers at most one on-demand fetch per tenant per cooldown, so a
rotated key works at once while a flood of made-up kids cannot hammer the issuer.
"""

import logging
import threading
import time
from dataclasses import dataclass, replace

from django.core.cache import cache

from authz.conf import authz_settings
from authz.jwks import JWKSError, KeySetRecord, read_generation, read_record, refresh_key_set
from authz.tokens import SigningKey, UnknownKey
from tenants.directory import TenantConfig

logger = logging.getLogger(__name__)

# A usable entry whose stamp has not moved is still re-read after this long, which keeps its
# fetch time (the max-stale clock) current and bounds the harm of a stamp write that was lost.
STAMPED_ENTRY_MAX_AGE = 60.0
UNREAD = object()  # matches no stamp: an entry marked so is re-read on its next recheck


class KeySetUnavailable(Exception):
    """No usable key set: the issuer is unreachable and nothing fresh enough is cached."""


@dataclass(frozen=True)
class _Entry:
    version: str
    jwks_url: str
    fetched_at: float | None
    keys: dict[str, SigningKey]
    read_at: float  # when the shared record was last read
    checked_at: float  # when this entry was last known current (read, or the stamp unmoved)
    generation: object

    def usable(self, jwks_url: str) -> bool:
        if not self.keys or self.jwks_url != jwks_url or self.fetched_at is None:
            return False
        return time.time() - self.fetched_at <= authz_settings.KEYSET_MAX_STALE


def _parse(record: KeySetRecord, now: float, generation: object) -> _Entry:
    keys = {key["kid"]: SigningKey.from_jwk(key) for key in record.keys}
    return _Entry(record.version, record.jwks_url, record.fetched_at, keys, now, now, generation)


class KeyCache:
    """Parsed signing keys per tenant, in this process."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._last_fetch: dict[str, float] = {}
        self._lock = threading.Lock()
        self._generation: object = UNREAD
        self._generation_checked_at = float("-inf")

    def held_key(self, tenant: TenantConfig, kid: str) -> SigningKey | None:
        """The usable key with this kid that this process holds now; never fetches."""
        entry = self._entry(tenant)
        if entry is None or not entry.usable(tenant.jwks_url):
            return None
        return entry.keys.get(kid)

    def signing_key(self, tenant: TenantConfig, kid: str) -> SigningKey:
        """The tenant's public key with this kid, fetching once per cooldown when missing."""
        key = self.held_key(tenant, kid)
        if key is not None:
            return key
        entry = self._entries.get(tenant.slug)
        if self._may_fetch(tenant):
            entry = self._fetch(tenant) or entry
        if entry is None or not entry.usable(tenant.jwks_url):
            raise KeySetUnavailable(f"No usable key set for tenant {tenant.slug}.")
        if kid not in entry.keys:
            raise UnknownKey()
        return entry.keys[kid]

    def clear(self) -> None:
        """Forget every parsed key and cooldown in this process."""
        with self._lock:
            self._entries.clear()
            self._last_fetch.clear()
            self._generation, self._generation_checked_at = UNREAD, float("-inf")

    def _entry(self, tenant: TenantConfig) -> _Entry | None:
        """The local entry, re-read from the shared record only when it may have changed."""
        now = time.monotonic()
        entry = self._entries.get(tenant.slug)
        if entry is None:
            return self._reload(tenant.slug, entry, now)
        if now - entry.checked_at < authz_settings.CONFIG_RECHECK_INTERVAL:
            return entry
        if not self._unchanged(entry, tenant, now):
            return self._reload(tenant.slug, entry, now)
        entry = replace(entry, checked_at=now)
        with self._lock:
            self._entries[tenant.slug] = entry
        return entry

    def _unchanged(self, entry: _Entry, tenant: TenantConfig, now: float) -> bool:
        """Current without a read: usable, read within the minute, and the stamp has not moved."""
        if now - entry.read_at >= STAMPED_ENTRY_MAX_AGE or not entry.usable(tenant.jwks_url):
            return False
        current = self._current_generation(now)
        return current is not UNREAD and entry.generation == current

    def _current_generation(self, now: float) -> object:
        """The shared key set stamp, read at most once per recheck interval."""
        if now - self._generation_checked_at >= authz_settings.CONFIG_RECHECK_INTERVAL:
            try:
                self._generation = read_generation()
            except Exception:
                logger.warning("Cannot read the key set stamp from the cache; using memory.")
                self._generation = UNREAD  # unknown: every entry falls back to its own recheck
            self._generation_checked_at = now
        return self._generation

    def _reload(self, slug: str, entry: _Entry | None, now: float) -> _Entry | None:
        # The stamp is read before the record, so an entry never claims a newer stamp than its keys.
        generation = self._current_generation(now)
        try:
            record = read_record(slug)
        except Exception:
            logger.warning("Cannot read the key set of %s from the cache; using memory.", slug)
            record = None
        if record is None or not record.keys:
            # A flushed or unreachable cache must not drop keys this process already verified.
            fresh = entry and replace(entry, read_at=now, checked_at=now, generation=UNREAD)
        elif entry is not None and entry.version == record.version:
            fetched_at = record.fetched_at
            fresh = replace(
                entry, fetched_at=fetched_at, read_at=now, checked_at=now, generation=generation
            )
        else:
            fresh = _parse(record, now, generation)
        with self._lock:
            if fresh is None:
                self._entries.pop(slug, None)
            else:
                self._entries[slug] = fresh
        return fresh

    def _may_fetch(self, tenant: TenantConfig) -> bool:
        """One on-demand fetch per tenant per cooldown: checked here, then across processes."""
        cooldown = authz_settings.UNKNOWN_KID_COOLDOWN
        now = time.monotonic()
        with self._lock:
            if now - self._last_fetch.get(tenant.slug, float("-inf")) < cooldown:
                return False
            self._last_fetch[tenant.slug] = now
        try:
            return bool(cache.add(f"jwks-cooldown:{tenant.slug}", 1, timeout=cooldown))
        except Exception:
            return True  # the cache is down; the local cooldown still bounds the fetches

    def _fetch(self, tenant: TenantConfig) -> _Entry | None:
        try:
            record = refresh_key_set(tenant)
        except JWKSError as exc:
            logger.info("on-demand key set fetch for %s failed: %s", tenant.slug, exc)
            return self._reload(tenant.slug, self._entries.get(tenant.slug), time.monotonic())
        except Exception:
            logger.exception("on-demand key set fetch for %s failed in the cache", tenant.slug)
            return self._entries.get(tenant.slug)
        entry = _parse(record, time.monotonic(), UNREAD)
        with self._lock:
            self._entries[tenant.slug] = entry
        return entry


key_cache = KeyCache()
