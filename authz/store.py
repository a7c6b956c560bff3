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
from django.core.cache.backends.db import DatabaseCache
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.db import connections, router
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
    per DPoP proof). Here one upsert decides: it inserts the row, or takes over an expired one,
    or changes nothing (PostgreSQL and SQLite both count only a row it wrote), in the backend's
    own row format, so ``get`` reads the value as usual.
    """
    store = shared_store()
    if not isinstance(store, DatabaseCache):
        return bool(store.add(key, value, timeout=timeout))
    connection = connections[router.db_for_write(store.cache_model_class)]
    table, expires = connection.ops.quote_name(store._table), connection.ops.quote_name("expires")
    now = timezone.now().replace(microsecond=0)
    expiry = now + datetime.timedelta(seconds=math.ceil(timeout))
    encoded = base64.b64encode(pickle.dumps(value, pickle.HIGHEST_PROTOCOL)).decode("latin1")
    upsert = (
        f"INSERT INTO {table} (cache_key, value, {expires}) VALUES (%s, %s, %s) "  # noqa: S608
        f"ON CONFLICT (cache_key) DO UPDATE SET value = excluded.value, {expires} = "
        f"excluded.{expires} WHERE {table}.{expires} < %s"
    )
    adapt = connection.ops.adapt_datetimefield_value
    parameters = [store.make_and_validate_key(key), encoded, adapt(expiry), adapt(now)]
    with connection.cursor() as cursor:
        cursor.execute(upsert, parameters)
        return cursor.rowcount == 1


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
