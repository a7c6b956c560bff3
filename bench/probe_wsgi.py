"""config.wsgi naming the serving worker's pid in ``X-Bench-Worker``.

Only the scale measurement serves through this: it must warm every gunicorn worker with every
tenant, and which worker accepts a connection is up to the kernel.
"""

import os
from collections.abc import Callable, Iterable
from typing import Any

from config.wsgi import application as platform_application


def application(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
    """The platform's WSGI application, plus one response header."""

    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
        return start_response(status, [*headers, ("X-Bench-Worker", str(os.getpid()))], exc_info)

    return platform_application(environ, start)
