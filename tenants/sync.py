"""Each web process's background thread: applies tenant changes and keeps key sets fresh.

Every CONFIG_RECHECK_INTERVAL it reads the tenant change feed (one query) and the shared key
set stamp (one store read), so no request ever waits on either; and it refreshes the key sets
that this process uses once they are older than JWKS_REFRESH_INTERVAL, one process per URL,
so a deployment without a worker (the embedded default) keeps its keys fresh too. Where a
worker is expected (a broker is configured), it steps in only after twice the interval. It also
writes this process's traffic counts every TRAFFIC_FLUSH_INTERVAL (``tenants/traffic.py``). A
process without the thread (tests, management commands) does the same checks inline instead.
"""

import atexit
import logging
import os
import threading
import time

from celery import current_app
from django.db import close_old_connections

from authz.conf import authz_settings
from authz.keys import key_cache
from authz.store import prune_expired
from tenants.directory import PRUNE_EVERY, directory, prune_feed
from tenants.ratelimit import prune_windows
from tenants.traffic import backend as traffic_backend
from tenants.traffic import traffic_counter

logger = logging.getLogger(__name__)


def sync_once() -> None:
    """One round: apply tenant changes, follow key set changes, refresh what is due."""
    try:
        directory.sync()
        key_cache.sync()
        key_cache.refresh_due(worker_expected=not current_app.conf.task_always_eager)
        _flush_traffic_now_and_then()
        _prune_now_and_then()
    except Exception:
        logger.exception("Background sync failed; the next round tries again.")
    finally:
        close_old_connections()


# The database cache's expired rows (DPoP proof ids, mostly) are deleted this often per process,
# long before its MAX_ENTRIES could make Django cull live entries.
EXPIRE_EVERY = 60.0
_pruned_at = _expired_at = _flushed_at = float("-inf")


def _flush_traffic_now_and_then() -> None:
    global _flushed_at
    now = time.monotonic()
    if now - _flushed_at >= authz_settings.TRAFFIC_FLUSH_INTERVAL:
        _flushed_at = now
        traffic_counter.flush()


def _prune_now_and_then() -> None:
    global _pruned_at, _expired_at
    now = time.monotonic()
    if now - _expired_at >= EXPIRE_EVERY:
        _expired_at = now
        prune_expired()
        traffic_backend().prune()
        prune_windows()
    if now - _pruned_at >= PRUNE_EVERY:
        _pruned_at = now
        prune_feed()


class BackgroundSync:
    """Starts the thread once per process, and again in each forked child."""

    def __init__(self) -> None:
        self._pid: int | None = None
        self._registered = False

    def enable(self, here: bool = True) -> None:
        """Run the thread in every process forked from this one, and in this one if ``here``."""
        if not authz_settings.BACKGROUND_SYNC:
            return
        if not self._registered:
            os.register_at_fork(after_in_child=self._after_fork)
            atexit.register(traffic_counter.flush)  # a stopping worker's last seconds
            self._registered = True
        if here:
            self._start()

    def _after_fork(self) -> None:
        directory.synced_in_background = key_cache.synced_in_background = False
        traffic_counter.flushed_in_background = False
        traffic_counter.clear()  # the parent's, counted there
        self._pid = None
        self._start()

    def _start(self) -> None:
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        threading.Thread(target=self._run, name="authz-sync", daemon=True).start()

    def _run(self) -> None:
        pid = os.getpid()
        sync_once()
        directory.synced_in_background = key_cache.synced_in_background = True
        traffic_counter.flushed_in_background = True
        stop = threading.Event()
        while self._pid == pid and not stop.wait(authz_settings.CONFIG_RECHECK_INTERVAL):
            sync_once()


background_sync = BackgroundSync()
