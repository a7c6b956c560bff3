"""The shared store: the one cache every process of a deployment shares, and how keys are named.

Redis when ``REDIS_URL`` is set; otherwise the database cache, which every local process reaches.
Data derived from admin input (JWKS URLs, slugs) is stored under ``<namespace>:<sha256 prefix>``
and fixed internal keys live in the ``internal`` namespace with plain names, so no slug, host or
URL can ever produce a key that another tenant's data or an internal key uses.
"""

import base64
import datetime
import hashlib
import math
import pickle
from typing import Any

from django.core.cache import BaseCache, caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.db import DatabaseCache
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.db import connections, router, transaction
from django.utils import timezone

INTERNAL = "internal"


class PooledRedisCacheClient(RedisCacheClient):
    """Django's Redis cache client, with one ``redis.Redis`` per connection pool, not per call.

    Django makes a new ``redis.Redis`` for every cache operation (its docs invite a custom client
    here). Making one costs about 270 µs of CPU (its response callbacks); using one costs
    little, it is thread-safe, and its pool reconnects in a forked child. A DPoP proof is one
    store write per request, so that cost was most of a DPoP request's.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        """The one client of the pool this operation uses."""
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class SharedRedisCache(RedisCache):
    """Django's Redis cache backend with ``PooledRedisCacheClient``."""

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = PooledRedisCacheClient


def shared_store() -> BaseCache:
    """The cache that every process of the deployment shares."""
    return caches["default"]


def derived_key(namespace: str, value: str) -> str:
    """The key of data about ``value`` (a URL, a slug), hashed so it cannot collide."""
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{namespace}:{digest}"


def internal_key(name: str) -> str:
    """The key of one of the platform's own fixed entries."""
    return f"{INTERNAL}:{name}"


def claim(key: str, timeout: float, value: Any = 1) -> bool:
    """True for the one process that sets ``key`` now; it expires after ``timeout`` seconds.

    Redis ``add`` is atomic. The database cache's ``add`` updates an expired row without a
    condition, so two processes could both win it, and it counts the whole table first (a cost
    per DPoP proof). Here one upsert decides (``insert_unless_live``).
    """
    store = shared_store()
    if not isinstance(store, DatabaseCache):
        return bool(store.add(key, value, timeout=timeout))
    expiry = _now() + datetime.timedelta(seconds=math.ceil(timeout))
    return insert_unless_live(store, store.make_and_validate_key(key), value, expiry)


def _now() -> datetime.datetime:
    return timezone.now().replace(microsecond=0)


def insert_unless_live(
    store: DatabaseCache, key: str, value: Any, expiry: datetime.datetime
) -> bool:
    """Write ``value`` under ``key`` (made) unless a live row holds it; whether it was written.

    One upsert: it inserts the row, or takes over an expired one, or changes nothing (PostgreSQL
    and SQLite both count only a row it wrote), in the backend's own row format, so ``get``
    reads the value as usual.
    """
    connection = connections[router.db_for_write(store.cache_model_class)]
    table, expires = connection.ops.quote_name(store._table), connection.ops.quote_name("expires")
    encoded = base64.b64encode(pickle.dumps(value, pickle.HIGHEST_PROTOCOL)).decode("latin1")
    upsert = (
        f"INSERT INTO {table} (cache_key, value, {expires}) VALUES (%s, %s, %s) "  # noqa: S608
        f"ON CONFLICT (cache_key) DO UPDATE SET value = excluded.value, {expires} = "
        f"excluded.{expires} WHERE {table}.{expires} < %s"
    )
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(upsert, [key, encoded, adapt(expiry), adapt(_now())])
        return cursor.rowcount == 1


class SharedDatabaseCache(DatabaseCache):
    """Django's database cache, with an ``add`` and an ``incr`` that hold when processes race.

    Django's ``add`` takes over an expired row without a condition, so two processes can both
    win it; its ``incr`` reads, then writes, so two processes can count one. Failed admin logins
    are counted with both (django-axes): lost increments would let a guesser try more passwords
    than the limit.
    """

    def add(
        self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> bool:
        """Set ``key`` only if no live entry holds it, in one statement."""
        expires_at = self.get_backend_timeout(timeout)
        if expires_at is None:
            expiry = datetime.datetime.max
        else:
            expiry = datetime.datetime.fromtimestamp(expires_at, tz=datetime.UTC)
        key = self.make_and_validate_key(key, version=version)
        return insert_unless_live(self, key, value, expiry.replace(microsecond=0))

    def incr(self, key: str, delta: int = 1, version: Any = None) -> int:
        """Add ``delta`` to the live value of ``key`` while holding its row."""
        connection = connections[router.db_for_write(self.cache_model_class)]
        with transaction.atomic(using=connection.alias):
            # PostgreSQL: the row lock makes the read and the write one step. SQLite: the
            # IMMEDIATE transaction (config/settings.py) holds the write lock from its start.
            if connection.features.has_select_for_update:
                self._lock_row(connection, self.make_and_validate_key(key, version=version))
            return super().incr(key, delta, version)

    def _lock_row(self, connection: Any, key: str) -> None:
        table = connection.ops.quote_name(self._table)
        lock = f"SELECT cache_key FROM {table} WHERE cache_key = %s FOR UPDATE"  # noqa: S608
        with connection.cursor() as cursor:
            cursor.execute(lock, [key])


def prune_expired() -> int:
    """Delete the database cache's expired rows (Redis expires keys itself); how many went."""
    store = shared_store()
    if not isinstance(store, DatabaseCache):
        return 0
    connection = connections[router.db_for_write(store.cache_model_class)]
    quote = connection.ops.quote_name
    now = connection.ops.adapt_datetimefield_value(timezone.now().replace(microsecond=0))
    sql = f"DELETE FROM {quote(store._table)} WHERE {quote('expires')} < %s"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, [now])
        return cursor.rowcount
