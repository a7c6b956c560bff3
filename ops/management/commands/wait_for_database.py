"""``manage.py wait_for_database``: block until the database accepts connections, bounded."""

import math
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections

RETRY_INTERVAL = 1.0
SHORTEST_CONNECT_TIMEOUT = 2  # libpq's: a shorter connect_timeout counts as 2 s


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
                _connect_by(connection, deadline)
                return
            except OperationalError as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CommandError(
                        f"The database did not accept connections within "
                        f"{options['timeout']:g} s: {exc}".strip()
                    ) from exc
                time.sleep(min(RETRY_INTERVAL, remaining))


def _connect_by(connection: Any, deadline: float) -> None:
    """Connect, waiting for an answer only as long as the deadline allows (libpq: 2 s at least)."""
    if connection.vendor != "postgresql":
        connection.ensure_connection()
        return
    options = connection.settings_dict.setdefault("OPTIONS", {})
    configured = options.get("connect_timeout")
    allowed = max(SHORTEST_CONNECT_TIMEOUT, math.ceil(deadline - time.monotonic()))
    options["connect_timeout"] = min(configured or allowed, allowed)
    try:
        connection.ensure_connection()
    finally:
        if configured is None:
            del options["connect_timeout"]
        else:
            options["connect_timeout"] = configured
