"""Readiness: can this process reach what a request may need, the database and Redis?"""

import logging
from collections.abc import Callable

from django.conf import settings
from django.core.cache import cache
from django.db import connection

logger = logging.getLogger(__name__)


def check_database() -> None:
    """One round trip to the default database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_redis() -> None:
    """One round trip to the Redis behind the cache (the key sets and version stamps)."""
    cache.get("ops:readiness-probe")


def readiness() -> dict[str, str]:
    """Each dependency's state: ``ok``, ``unreachable``, or ``not configured``."""
    checks: dict[str, Callable[[], None] | None] = {
        "database": check_database,
        "redis": check_redis if settings.REDIS_URL else None,
    }
    return {name: _run(name, check) for name, check in checks.items()}


def _run(name: str, check: Callable[[], None] | None) -> str:
    if check is None:
        return "not configured"
    try:
        check()
    except Exception as exc:
        logger.warning("readiness: %s unreachable: %s", name, exc, extra={"check": name})
        return "unreachable"
    return "ok"
