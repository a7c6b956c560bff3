"""``manage.py wait_for_database``: block until the database accepts connections, bounded."""

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections


class Command(BaseCommand):
    """Retry connecting once a second until it works or the timeout passes."""

    help = "Wait until the database accepts connections (at most --timeout seconds)."

    def add_arguments(self, parser: CommandParser) -> None:
        """Declare the command line options."""
        parser.add_argument("--timeout", type=float, default=60, help="seconds, default 60")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)

    def handle(self, *args: Any, **options: Any) -> None:
        """Connect, or fail with the last error once the timeout has passed."""
        connection = connections[options["database"]]
        deadline = time.monotonic() + options["timeout"]
        while True:
            try:
                connection.ensure_connection()
                return
            except OperationalError as exc:
                if time.monotonic() >= deadline:
                    raise CommandError(
                        f"The database did not accept connections within "
                        f"{options['timeout']:g} s: {exc}".strip()
                    ) from exc
                time.sleep(1)
