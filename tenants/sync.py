"""Each web process's two background threads: one applies changes, one keeps key sets fresh.

Every CONFIG_RECHECK_INTERVAL the ``authz-sync`` thread reads the tenant change feed (one query)
and the shared key set stamp (one store read), so no request ever waits on either. It also
writes this process's traffic counts every TRAFFIC_FLUSH_INTERVAL (``tenants/traffic.py``).

The ``authz-refresh`` thread refreshes the key sets that this process uses once they are older
than JWKS_REFRESH_INTERVAL, one process per URL, so a deployment without a worker (the embedded
default) keeps its keys fresh too. Where a worker is expected (a broker is configured), it steps
in only after twice the interval. It has a thread of its own because a slow issuer holds it for
up to JWKS_BACKGROUND_FETCH_DEADLINE per URL, and tenant changes and key removals must still
arrive within the recheck interval meanwhile.

A process without the threads (tests, management commands) does the same checks inline instead.
"""

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable

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
    """One round of the change thread: apply tenant changes, follow key set changes."""
    try:
        directory.sync()
        key_cache.sync()
        _flush_traffic_now_and_then()
        _prune_now_and_then()
    except Exception:
        logger.exception("Background sync failed; the next round tries again.")
    finally:
        close_old_connections()


def refresh_once() -> None:
    """One round of the refresh thread: refresh the key sets used here that are due."""
    try:
        key_cache.refresh_due(worker_expected=not current_app.conf.task_always_eager)
    except Exception:
        logger.exception("Background key set refresh failed; the next round tries again.")
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
    """Starts the threads once per process, and again in each forked child."""

    def __init__(self) -> None:
        self._pid: int | None = None
        self._registered = False

    def enable(self, here: bool = True) -> None:
        """Run the threads in every process forked from this one, and in this one if ``here``."""
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
        threading.Thread(target=self._sync, name="authz-sync", daemon=True).start()
        threading.Thread(target=self._refresh, name="authz-refresh", daemon=True).start()

    def _sync(self) -> None:
        sync_once()
        directory.synced_in_background = key_cache.synced_in_background = True
        traffic_counter.flushed_in_background = True
        self._every_recheck(sync_once)

    def _refresh(self) -> None:
        self._every_recheck(refresh_once)

    def _every_recheck(self, round_: Callable[[], None]) -> None:
        """Start ``round_`` every CONFIG_RECHECK_INTERVAL for as long as this process lives."""
        pid, stop = os.getpid(), threading.Event()
        due = time.monotonic()
        while self._pid == pid:
            # Rounds start on a fixed beat, so a change waits at most one interval for the next
            # read, not an interval after a slow round; a round that overran is not made up.
            due = max(due + authz_settings.CONFIG_RECHECK_INTERVAL, time.monotonic())
            stop.wait(due - time.monotonic())
            round_()


background_sync = BackgroundSync()
