"""Bounded per-process caches of verified and refused tokens, so a repeated token skips RSA.

A verified entry is served only while the token has not expired (``exp``, without leeway), the
tenant's trusted issuers are the very ones it was verified under, and this process still holds the
very key that verified it (at the JWKS URL of the issuer the token names): a rotated-out key, a
stale key set or an edited tenant all force a full check. A rotation at one issuer of a tenant
touches only the entries that issuer's keys verified.

A refused entry is kept only for failures that cannot turn into success while the policy and the
key set stay as they are: a malformed token, a disallowed algorithm or type, a bad signature under
a key still held, claims that can never pass (expired, another issuer or audience, missing or
mistyped claims, a foreign organization). An unknown key (a refetch may bring it), a token not
valid yet (time passes) and an unreachable issuer are never remembered.

Both caches are bounded in bytes as well as entries. A verified entry keeps the token's payload
segment as text (its size is known and it holds no objects the garbage collector walks) and
rebuilds the claims on a hit: a payload of a thousand empty lists costs its length, not a hundred
kilobytes of parsed objects. From its first hit, a small, flat payload (the usual access token:
at most ``KEPT_PAYLOAD_CHARS`` of text and ``KEPT_CONTAINERS`` lists or objects) keeps its parsed
claims as well, charged at their measured size: later hits return them as they are, the same
object each time, which spares a repeated token its decoding (about 10 µs of a request). Tokens
seen once, the bulk of a cache under a flood of new ones, keep only their text: a cache full of
parsed payloads would give every full garbage collection tens of thousands more objects.

Both are shared fairly: entries are grouped by trusted issuers (a tenant's, or those of tenants
configured alike), and a group holding its fair share or more makes room by evicting its own least
recent entry, never another's.
"""

import base64
import hashlib
import json
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from authz.conf import authz_settings
from authz.keys import key_cache
from authz.policy import IssuerPolicy, TrustedIssuers
from authz.tokens import Claims, SigningKey, TokenError, claims_of

# What an entry costs besides its payload text: the entry, its digest and the dict slots.
ENTRY_OVERHEAD = 400
# The payloads whose parsed claims an entry keeps: small, and few objects for the GC to walk.
KEPT_PAYLOAD_CHARS = 2048
KEPT_CONTAINERS = 8
# The claims object, its mapping proxy and its memo (derived values: at most 3 characters per
# payload character, percent-encoded, which the charge per character covers).
KEPT_OVERHEAD = 600


def token_digest(token: str) -> bytes:
    """The key both caches file a token under."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(slots=True)
class _Verified:
    """One token that passed, with what it takes to rebuild its claims."""

    trust: TrustedIssuers
    policy: IssuerPolicy
    key: SigningKey
    expires_at: int
    payload_segment: str
    size: int
    claims: Claims | None = None  # kept from the first hit when small and flat (KEPT_*)
    weighed: bool = False  # whether the first hit has decided about keeping them


@dataclass(slots=True)
class _Refused:
    """One token that failed for good, and the key it failed under (None: no key was involved)."""

    trust: TrustedIssuers
    policy: IssuerPolicy | None  # the policy of the issuer it named; None: no issuer listed
    key: SigningKey | None
    error: type[TokenError]
    description: str
    check: str  # the raise site's, where one error class serves several checks
    size = ENTRY_OVERHEAD


@dataclass(slots=True)
class _Group:
    """The entries of one set of trusted issuers, least recent first, and their bytes."""

    digests: OrderedDict = field(default_factory=OrderedDict)
    size: int = 0


Entry = TypeVar("Entry", _Verified, _Refused)


class FairCache(Generic[Entry]):
    """Least-recently-used entries by token digest, bounded in count and bytes, fair by trust."""

    def __init__(self, entries_setting: str, bytes_setting: str) -> None:
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._groups: dict[TrustedIssuers, _Group] = {}
        self._size = 0
        self._settings = (entries_setting, bytes_setting)
        self._lock = threading.Lock()

    def lookup(self, digest: bytes) -> Entry | None:
        """The entry filed under a digest, now the most recent; None when there is none."""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is not None:
                self._entries.move_to_end(digest)
                self._groups[entry.trust].digests.move_to_end(digest)
            return entry

    def store(self, digest: bytes, entry: Entry) -> None:
        """File an entry, replacing any under the same digest, and make room fairly."""
        with self._lock:
            self._remove(digest)
            self._entries[digest] = entry
            group = self._groups.setdefault(entry.trust, _Group())
            group.digests[digest] = None
            group.size += entry.size
            self._size += entry.size
            self._make_room(group)

    def discard(self, digest: bytes) -> None:
        """Forget one entry."""
        with self._lock:
            self._remove(digest)

    def held(self) -> tuple[int, int]:
        """Entries and bytes held now."""
        return len(self._entries), self._size

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
            self._groups.clear()
            self._size = 0

    def _make_room(self, group: _Group) -> None:
        """Evict until within bounds: from ``group`` while it holds its fair share or more."""
        max_entries, max_bytes = (getattr(authz_settings, name) for name in self._settings)
        while len(self._entries) > max_entries or self._size > max_bytes:
            groups = len(self._groups)
            fair = len(group.digests) * groups > max_entries or group.size * groups > max_bytes
            self._remove(next(iter(group.digests if fair else self._entries)))

    def _remove(self, digest: bytes) -> None:
        entry = self._entries.pop(digest, None)
        if entry is None:
            return
        group = self._groups[entry.trust]
        del group.digests[digest]
        group.size -= entry.size
        self._size -= entry.size
        if not group.digests:
            del self._groups[entry.trust]


def _payload(segment: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def _kept_size(claims: Claims, segment: str) -> int | None:
    """The bytes the parsed claims hold, when they are worth keeping; None when they are not."""
    if len(segment) > KEPT_PAYLOAD_CHARS:
        return None
    payload = claims.payload
    size, containers = sys.getsizeof(dict(payload)) + sys.getsizeof(payload), 0
    for name, value in payload.items():
        size += sys.getsizeof(name) + sys.getsizeof(value)
        if isinstance(value, list | dict):
            containers += 1
            items = [*value, *value.values()] if isinstance(value, dict) else value
            if containers > KEPT_CONTAINERS or any(isinstance(i, list | dict) for i in items):
                return None
            size += sum(sys.getsizeof(item) for item in items)
    scopes = sys.getsizeof(claims.scopes) + sum(sys.getsizeof(s) for s in claims.scopes)
    return size + scopes + KEPT_OVERHEAD + 3 * len(segment)


def _key_still_held(policy: IssuerPolicy | None, key: SigningKey | None) -> bool:
    return key is None or (
        policy is not None and key_cache.held_key(policy.jwks_url, key.kid) is key
    )


class VerifiedTokenCache(FairCache[_Verified]):
    """Tokens that passed full verification."""

    def __init__(self) -> None:
        super().__init__("VERIFIED_TOKEN_CACHE_SIZE", "VERIFIED_TOKEN_CACHE_BYTES")

    def get(self, token: str, trust: TrustedIssuers, digest: bytes | None = None) -> Claims | None:
        """The claims of a token verified earlier under these issuers, if still trustworthy."""
        digest = digest or token_digest(token)
        entry = self.lookup(digest)
        if entry is None:
            return None
        if (
            entry.trust is not trust
            or time.time() >= entry.expires_at
            or not _key_still_held(entry.policy, entry.key)
        ):
            self.discard(digest)
            return None
        if entry.claims is not None:
            return entry.claims
        claims = claims_of(_payload(entry.payload_segment), entry.policy)
        if not entry.weighed:
            entry.weighed = True
            kept = _kept_size(claims, entry.payload_segment)
            if kept is not None:
                self._keep(digest, entry, claims, kept)
        return claims

    def _keep(self, digest: bytes, entry: _Verified, claims: Claims, size: int) -> None:
        """Keep an entry's parsed claims, charged at ``size``, if the entry is still held."""
        with self._lock:
            if self._entries.get(digest) is not entry or entry.claims is not None:
                return
            entry.claims = claims
            entry.size += size
            group = self._groups[entry.trust]
            group.size += size
            self._size += size
            self._make_room(group)

    def put(
        self,
        token: str,
        trust: TrustedIssuers,
        policy: IssuerPolicy,
        key: SigningKey,
        claims: Claims,
    ) -> None:
        """Remember a token that just passed full verification under ``policy`` with ``key``."""
        segment = token.split(".")[1]
        entry = _Verified(
            trust, policy, key, claims.expires_at, segment, ENTRY_OVERHEAD + len(segment)
        )
        self.store(token_digest(token), entry)


class RefusedTokenCache(FairCache[_Refused]):
    """Tokens that failed for a reason that holds while the policy and key set do."""

    def __init__(self) -> None:
        super().__init__("REFUSED_TOKEN_CACHE_SIZE", "REFUSED_TOKEN_CACHE_BYTES")

    def get(self, trust: TrustedIssuers, digest: bytes) -> TokenError | None:
        """The failure of a token refused earlier under these issuers, for the caller to raise."""
        entry = self.lookup(digest)
        if entry is None:
            return None
        if entry.trust is not trust or not _key_still_held(entry.policy, entry.key):
            self.discard(digest)
            return None
        return entry.error(entry.description, entry.check)

    def put(
        self,
        trust: TrustedIssuers,
        policy: IssuerPolicy | None,
        digest: bytes,
        key: SigningKey | None,
        error: TokenError,
    ) -> None:
        """Remember a lasting failure (the caller decides which are)."""
        entry = _Refused(trust, policy, key, type(error), error.description, error.check)
        self.store(digest, entry)


verified_tokens = VerifiedTokenCache()
refused_tokens = RefusedTokenCache()
