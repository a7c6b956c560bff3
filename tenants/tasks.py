"""Tasks that keep the key sets of every tenant's JWKS URL fresh, one per distinct URL."""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial

from celery import shared_task
from django.db import transaction

from authz import jwks
from authz.tasks import refresh_key_set
from tenants.directory import jwks_urls

_queued: ContextVar[set[str] | None] = ContextVar("queued_key_set_refreshes", default=None)


@shared_task(name="tenants.tasks.refresh_all_key_sets")
def refresh_all_key_sets() -> int:
    """Fan out one refresh per distinct JWKS URL of active tenants; returns how many."""
    urls = sorted(jwks_urls())
    for url in urls:
        refresh_key_set.delay(url)
    return len(urls)


def queue_refresh(urls: set[str]) -> None:
    """Refresh these URLs once the transaction commits (on the embedded default, in-process)."""
    pending = _queued.get()
    if pending is not None:
        pending.update(urls)
        return
    for url in urls:
        transaction.on_commit(partial(refresh_key_set.delay, url))


@contextmanager
def refreshes_batched() -> Iterator[set[str]]:
    """Collect the refreshes of many saves; queue each distinct URL once at the end.

    With no worker (eager tasks, the embedded default) nothing is fetched inline: a web process
    fetches a URL on its first request, and its background refresher keeps it fresh.
    """
    urls: set[str] = set()
    token = _queued.set(urls)
    try:
        yield urls
    finally:
        _queued.reset(token)
    # Celery's live setting: the worker-less default runs tasks eagerly, and tests switch it.
    if not transaction.get_rollback() and not refresh_key_set.app.conf.task_always_eager:
        queue_refresh(urls)


def forget_unused_key_sets(urls: set[str]) -> None:
    """Drop the stored records of URLs that no tenant uses any more."""
    for url in urls - jwks_urls(active_only=False):
        jwks.drop_record(url)
