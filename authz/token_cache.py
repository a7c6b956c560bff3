"""A bounded per-process cache of verified tokens, so a repeated token skips the signature check.

An entry is served only while the token has not expired (``exp``, without leeway), the issuer
policy is the very one it was verified against, and this process still holds the very key that
verified it: a rotated-out key, a stale key set or an edited tenant all force a full check.
"""

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from authz.conf import authz_settings
from authz.keys import key_cache
from authz.policy import IssuerPolicy
from authz.tokens import Claims, SigningKey


@dataclass(frozen=True, slots=True)
class _Verified:
    """One remembered token, as few garbage-collected objects as possible.

    A full garbage collection walks every entry: four objects per entry (claims, scopes,
    payload proxy, entry) made the collector the largest cost of a first-seen token. Scopes as
    a tuple of strings and the payload as a plain dict of JSON values are not tracked at all.
    """

    policy: IssuerPolicy
    key: SigningKey
    subject: str
    issuer: str
    scopes: tuple[str, ...]
    expires_at: int
    payload: dict[str, Any]

    @classmethod
    def of(cls, claims: Claims, policy: IssuerPolicy, key: SigningKey) -> "_Verified":
        """The entry for claims verified with ``key``."""
        scopes = tuple(claims.scopes)
        payload = dict(claims.payload)
        return cls(policy, key, claims.subject, claims.issuer, scopes, claims.expires_at, payload)

    def claims(self) -> Claims:
        """The claims, rebuilt (a read-only view of the payload, as verification returns)."""
        return Claims(
            self.subject,
            self.issuer,
            frozenset(self.scopes),
            self.expires_at,
            MappingProxyType(self.payload),
        )


class VerifiedTokenCache:
    """Least-recently-used verified tokens, keyed by the token's SHA-256 and checked by policy."""

    def __init__(self) -> None:
        self._entries: OrderedDict[bytes, _Verified] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str, policy: IssuerPolicy) -> Claims | None:
        """The claims of a token verified earlier under this policy, if still trustworthy."""
        cache_key = hashlib.sha256(token.encode()).digest()
        with self._lock:
            entry = self._entries.get(cache_key)
            if entry is not None:
                self._entries.move_to_end(cache_key)
        if entry is None:
            return None
        if (
            entry.policy is not policy
            or time.time() >= entry.expires_at
            or key_cache.held_key(policy.jwks_url, entry.key.kid) is not entry.key
        ):
            with self._lock:
                self._entries.pop(cache_key, None)
            return None
        return entry.claims()

    def put(self, token: str, policy: IssuerPolicy, key: SigningKey, claims: Claims) -> None:
        """Remember a token that just passed full verification with ``key``."""
        cache_key = hashlib.sha256(token.encode()).digest()
        with self._lock:
            self._entries[cache_key] = _Verified.of(claims, policy, key)
            self._entries.move_to_end(cache_key)
            while len(self._entries) > authz_settings.VERIFIED_TOKEN_CACHE_SIZE:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every verified token."""
        with self._lock:
            self._entries.clear()


verified_tokens = VerifiedTokenCache()
