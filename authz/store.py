"""The shared store: the one cache every process of a deployment shares, and how keys are named.

Redis when ``REDIS_URL`` is set; otherwise the database cache, which every local process reaches.
Data derived from admin input (JWKS URLs, slugs) is stored under ``<namespace>:<sha256 prefix>``
and fixed internal keys live in the ``internal`` namespace with plain names, so no slug, host or
URL can ever produce a key that another tenant's data or an internal key uses.
"""

import hashlib
from typing import Any

from django.core.cache import BaseCache, caches
from django.core.cache.backends.db import DatabaseCache
from django.db import connections, router
from django.utils import timezone

INTERNAL = "internal"


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
    condition, so two processes could both win it: an expired row is deleted first, and then only
    one insert can succeed (the key is unique).
    """
    store = shared_store()
    if isinstance(store, DatabaseCache):
        _delete_if_expired(store, key)
    return bool(store.add(key, value, timeout=timeout))


def _delete_if_expired(store: DatabaseCache, key: str) -> None:
    """Compare as Django's own cull does: whole seconds, the backend's datetime form."""
    connection = connections[router.db_for_write(store.cache_model_class)]
    quote = connection.ops.quote_name
    now = connection.ops.adapt_datetimefield_value(timezone.now().replace(microsecond=0))
    table, expires = quote(store._table), quote("expires")
    sql = f"DELETE FROM {table} WHERE cache_key = %s AND {expires} < %s"  # noqa: S608 - quoted names
    with connection.cursor() as cursor:
        cursor.execute(sql, [store.make_and_validate_key(key), now])
