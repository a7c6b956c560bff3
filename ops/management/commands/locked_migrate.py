"""``manage.py locked_migrate``: ``migrate``, one process at a time across the deployment.

Every web replica migrates as it starts; scaled replicas start together. On PostgreSQL an
advisory lock makes them take turns, so the first applies the migrations and the rest find
nothing to do, instead of racing to create the same tables.
"""

import time
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.core.management.commands.migrate import Command as MigrateCommand
from django.db import connections

# Any constant shared by every replica; it names this lock among the database's advisory locks.
LOCK_ID = 0x61757468_6D696772


class Command(MigrateCommand):
    """Django's ``migrate`` under a PostgreSQL advisory lock (other databases: plain migrate)."""

    help = "Apply migrations, one process at a time (PostgreSQL advisory lock)."

    def add_arguments(self, parser: CommandParser) -> None:
        """Migrate's options, and how long to wait for another process's migration."""
        super().add_arguments(parser)
        parser.add_argument("--lock-timeout", type=float, default=300, help="seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        """Take the lock, migrate, release the lock."""
        connection = connections[options["database"]]
        if connection.vendor != "postgresql":
            return super().handle(*args, **options)
        self._acquire(connection, options["lock_timeout"])
        try:
            return super().handle(*args, **options)
        finally:
            self._release(connection)

    def _acquire(self, connection: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_ID])
                if cursor.fetchone()[0]:
                    return
            if time.monotonic() >= deadline:
                raise CommandError(
                    f"Another process held the migration lock for over {timeout:g} s."
                )
            time.sleep(0.5)

    def _release(self, connection: Any) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_ID])
