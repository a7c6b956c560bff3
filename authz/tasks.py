"""Celery task that refreshes one JWKS URL's key set in the shared store."""

import logging

from celery import Task, shared_task

from authz import jwks
from authz.conf import authz_settings

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
def refresh_key_set(self: Task, jwks_url: str) -> str:
    """Fetch one URL's key set; returns the outcome (``ok: N keys``, ``busy``, ``invalid``...)."""
    try:
        record = jwks.refresh_key_set(
            jwks_url, authz_settings.JWKS_BACKGROUND_FETCH_DEADLINE, trigger="scheduled"
        )
    except jwks.RefreshInProgress:
        return "busy"
    except jwks.InvalidKeySet:
        return "invalid"
    except jwks.IssuerUnreachable:
        if self.request.is_eager:
            return "unreachable"  # in-process: never stall the caller with retries
        raise
    return f"ok: {len(record.keys)} keys"
