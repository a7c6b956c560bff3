"""Celery tasks that keep every tenant's key set fresh in the shared cache."""

import logging

from celery import Task, shared_task

from authz import jwks
from tenants.directory import directory, load_key_set_source

logger = logging.getLogger(__name__)


class KeySetTask(Task):
    """Retries only transient issuer failures, with jittered exponential backoff."""

    autoretry_for = (jwks.IssuerUnreachable,)
    retry_backoff = 2
    retry_backoff_max = 120
    retry_jitter = True
    max_retries = 5
    soft_time_limit = 30
    time_limit = 45


@shared_task(base=KeySetTask, bind=True, name="authz.tasks.refresh_key_set")
def refresh_key_set(self: Task, slug: str) -> str:
    """Fetch one tenant's key set; returns the outcome (``ok``, ``busy``, ``invalid``...)."""
    # From the database, not this worker's snapshot: a tenant saved a moment ago, or its new
    # JWKS URL, may not have reached the snapshot yet.
    tenant = load_key_set_source(slug)
    if tenant is None:
        return "no-such-tenant"
    try:
        record = jwks.refresh_key_set(tenant)
    except jwks.RefreshInProgress:
        return "busy"
    except jwks.InvalidKeySet:
        return "invalid"
    except jwks.IssuerUnreachable:
        if self.request.is_eager:
            return "unreachable"  # in-process: never stall the caller with retries
        raise
    return f"ok: {len(record.keys)} keys"


@shared_task(name="authz.tasks.refresh_all_key_sets")
def refresh_all_key_sets() -> int:
    """Fan out one refresh per active tenant; returns how many were queued."""
    slugs = directory.active_slugs()
    for slug in slugs:
        refresh_key_set.delay(slug)
    return len(slugs)
