"""config.wsgi naming the serving worker's pid in ``X-Bench-Worker``, and counting its SQL.

The scale measurements serve through this: they must know which gunicorn worker answered (to
warm every worker, or to see every worker apply a change), and which worker accepts a connection
is up to the kernel. ``/_bench/held`` answers how many tenants the worker holds. With
``BENCH_SQL_DIR`` set (the embedded mode, whose SQLite has no statement log), every SQL statement
the worker runs is counted, apart for its request threads and for the background sync thread,
and the counts are written to ``<BENCH_SQL_DIR>/<pid>.json``.
"""

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from django.db.backends.signals import connection_created

from bench.stack import HELD_PATH

SQL_DIR = os.environ.get("BENCH_SQL_DIR")
SYNC_THREADS = ("authz-sync", "authz-refresh")  # tenants/sync.py names its threads so
DUMP_EVERY = 0.2
statements: Counter = Counter()


def count_statement(execute: Callable, sql: str, params: Any, many: bool, context: dict) -> Any:
    """Count one statement by thread, and apart the change feed's and the shared store's."""
    thread = "sync" if threading.current_thread().name in SYNC_THREADS else "request"
    statements[thread] += 1
    if "tenants_tenantchange" in sql:
        statements[f"{thread}_feed"] += 1
    if "authz_cache" in sql:
        statements[f"{thread}_store"] += 1
    return execute(sql, params, many, context)


def wrap_connection(sender: type, connection: Any, **kwargs: object) -> None:
    """Count every statement of every connection (one per thread), from its first."""
    if count_statement not in connection.execute_wrappers:
        connection.execute_wrappers.append(count_statement)


def dump_counts(directory: Path) -> None:
    """Write this worker's counts to a file now and then, when they changed."""
    written: dict[str, int] = {}
    path = directory / f"{os.getpid()}.json"
    while True:
        time.sleep(DUMP_EVERY)
        if dict(statements) != written:
            written = dict(statements)
            path.with_suffix(".tmp").write_text(json.dumps(written))
            path.with_suffix(".tmp").replace(path)


if SQL_DIR:
    # Before config.wsgi: its background thread opens a connection as soon as it is loaded.
    connection_created.connect(wrap_connection)
    threading.Thread(target=dump_counts, args=(Path(SQL_DIR),), daemon=True).start()

from config.wsgi import application as platform_application  # noqa: E402


def held(start_response: Callable) -> Iterable[bytes]:
    """How many tenants this worker's directory holds now."""
    from tenants.directory import directory

    headers = [("Content-Type", "application/json"), ("X-Bench-Worker", str(os.getpid()))]
    start_response("200 OK", headers)
    return [json.dumps({"held": directory.held()}).encode()]


def application(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
    """The platform's WSGI application, plus one response header (and the held count)."""
    if environ.get("PATH_INFO") == HELD_PATH:
        return held(start_response)

    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
        return start_response(status, [*headers, ("X-Bench-Worker", str(os.getpid()))], exc_info)

    return platform_application(environ, start)
