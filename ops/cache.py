"""The embedded default's shared store: the database cache's table, created on every migrate."""

from typing import Any

from django.core.management import call_command


def create_cache_table(using: str, verbosity: int = 1, **kwargs: Any) -> None:
    """Create the database cache's table in the migrated database, if configured and missing."""
    # createcachetable skips caches that are not database caches and tables that exist.
    call_command("createcachetable", database=using, verbosity=max(verbosity - 1, 0))
