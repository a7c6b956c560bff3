"""What a timed run cost: SQL statements, issuer fetches, Redis commands and CPU time."""

import json
import os
import re
import time
from typing import Any

from bench.stack import Platform, busy_cpu_seconds, cpu_seconds, http_get, own_cpu_seconds

# "<time> [<backend pid>] LOG:  statement: <sql>" (PostgreSQL's default log_line_prefix).
STATEMENT = re.compile(rb"\[(\d+)\] LOG:  statement: (.*)")
FEED = b'FROM "tenants_tenantchange"'  # the feed poll (a process saving a change inserts)
STORE_KEYS = ("sync_store", "request_store")  # embedded: statements on the database cache


class Counters:
    """SQL statements, issuer fetches, Redis commands and CPU time over a timed run.

    SQL: in redis mode PostgreSQL's statement log, in embedded mode ``probe_wsgi``'s counts. The
    statements of the web workers' background sync thread (the change feed poll every recheck
    interval, and the connection health check before it) are counted apart from the requests':
    in PostgreSQL's log, by the backends that ran a feed poll.
    """

    def __init__(
        self, plat: Platform, web_pids: list[int], others: set[int | None] | None = None
    ) -> None:
        self.plat = plat
        self.stats_url = f"{plat.issuer_url}/_stats"
        self.redis = None
        if plat.redis_url:
            import redis

            self.redis = redis.Redis.from_url(plat.redis_url)
        self.web_pids = web_pids
        self.sync_backends: set[bytes] = set()
        # PostgreSQL backends of other processes (a saving process), left out of the counts.
        self.other_backends = {str(pid).encode() for pid in others or () if pid is not None}

    def log_statements(self, on: bool) -> None:
        """Switch PostgreSQL's ``log_statement`` for every session, open ones included."""
        if self.plat.postgres_log is None:
            return
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(f"ALTER SYSTEM SET log_statement = '{'all' if on else 'none'}'")
            cursor.execute("SELECT pg_reload_conf()")
        connection.close()
        time.sleep(0.5)  # sessions apply the reload before their next statement

    def read(self) -> dict[str, Any]:
        """Current totals."""
        stats = json.loads(http_get(self.stats_url)[2])
        totals = {
            "wall": time.monotonic(),
            "server_cpu": cpu_seconds(self.web_pids),
            "own_cpu": own_cpu_seconds(),
            "busy_cpu": busy_cpu_seconds(),
            "fetches": sum(n for key, n in stats.items() if "/.well-known/" in key),
        }
        if self.redis is not None:
            totals["redis"] = self.redis.info("stats")["total_commands_processed"]
        if self.plat.postgres_log is not None:
            totals["log_offset"] = self.plat.postgres_log.stat().st_size
        return totals

    def probe_counts(self) -> dict[str, int]:
        """The web workers' SQL counts so far, summed (embedded mode)."""
        total: dict[str, int] = {}
        for path in self.plat.sql_dir.glob("*.json"):
            for key, count in json.loads(path.read_text()).items():
                total[key] = total.get(key, 0) + count
        return total

    def logged_statements(self, offset: int) -> dict[str, int]:
        """Statements logged since ``offset``: the requests', and the background thread's."""
        with self.plat.postgres_log.open("rb") as log:
            log.seek(offset)
            found = STATEMENT.findall(log.read())
        found = [(backend, sql) for backend, sql in found if backend not in self.other_backends]
        self.sync_backends |= {backend for backend, sql in found if FEED in sql}
        sync = [sql for backend, sql in found if backend in self.sync_backends]
        return {
            "request": len(found) - len(sync),
            "sync": len(sync),
            "sync_feed": sum(FEED in sql for sql in sync),
        }

    def start(self) -> dict[str, Any]:
        """Totals at the start of a timed run."""
        before = self.read()
        if self.plat.mode == "embedded":
            time.sleep(2 * 0.2)  # probe_wsgi writes its counts every 0.2 s
            before["sql"] = self.probe_counts()
        return before

    def since(self, before: dict[str, Any], requests: int) -> dict[str, Any]:
        """What the last ``requests`` requests cost since ``before``."""
        after = self.read()
        delta = {key: after[key] - before[key] for key in after if key != "log_offset"}
        time.sleep(0.5)  # let the statement log (or the probe's counts) catch up
        if self.plat.mode == "embedded":
            now, was = self.probe_counts(), before["sql"]
            sql = {key: now.get(key, 0) - was.get(key, 0) for key in ("request", "sync")}
            for key in ("sync_feed", *STORE_KEYS):
                sql[key] = now.get(key, 0) - was.get(key, 0)
        else:
            sql = self.logged_statements(before["log_offset"])
        others = delta["busy_cpu"] - delta["server_cpu"] - delta["own_cpu"]
        redis = None
        if "redis" in delta:
            redis = round((delta["redis"] - 1) / max(requests, 1), 3)  # less the INFO itself
        return {
            "sql_queries": sql["request"],
            "sync_sql_queries": sql["sync"],
            "feed_polls": sql["sync_feed"],
            **{f"{key}_sql": sql[key] for key in STORE_KEYS if key in sql},
            "http_fetches": int(delta["fetches"]),
            "server_cpu_ms": round(delta["server_cpu"] * 1000 / max(requests, 1), 3),
            "others_cpu_pct": round(max(others, 0) * 100 / (delta["wall"] * os.cpu_count()), 1),
            "redis_per_request": redis,
        }
