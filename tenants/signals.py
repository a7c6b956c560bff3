"""Receivers that write every tenant change to the change feed and keep key sets in step."""

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save
from django.dispatch import receiver

from tenants.directory import record_change
from tenants.models import Route, ScopeRule, Tenant, TenantAudience, TenantCorsOrigin, TenantHost
from tenants.tasks import forget_unused_key_sets, queue_refresh

PARTS = (TenantHost, TenantAudience, ScopeRule, TenantCorsOrigin, Route)


@receiver([post_save, post_delete], sender=Tenant)
def publish_tenant_change(sender: type, instance: Tenant, **kwargs: object) -> None:
    """A saved or deleted tenant is one change of that tenant."""
    record_change(instance.pk)


def publish_part_change(sender: type, instance: Any, **kwargs: object) -> None:
    """A host, audience, rule or origin that changed is a change of its tenant."""
    record_change(instance.tenant_id)


for part in PARTS:
    post_save.connect(publish_part_change, sender=part, dispatch_uid=f"part-change-{part}")
    post_delete.connect(publish_part_change, sender=part, dispatch_uid=f"part-delete-{part}")


@receiver(pre_save, sender=Tenant)
@receiver(pre_delete, sender=Tenant)
def remember_key_set_source(sender: type, instance: Tenant, **kwargs: object) -> None:
    """Note the JWKS URL and the active flag the tenant had before this save or delete."""
    before = Tenant.objects.filter(pk=instance.pk).first() if instance.pk is not None else None
    instance._key_set_before = (before.jwks_url, before.active) if before else None


@receiver(post_save, sender=Tenant)
def refresh_keys_after_save(sender: type, instance: Tenant, **kwargs: object) -> None:
    """Queue a refresh once the save commits, when the tenant's keys may be new to us: it was
    created, reactivated or repointed. A save of anything else fetches nothing (the Refresh keys
    button and the schedule remain); the URL it no longer uses is dropped when unused."""
    before = getattr(instance, "_key_set_before", None)
    if instance.active and before != (instance.jwks_url, True):
        queue_refresh({instance.jwks_url})
    if before and before[0] != instance.jwks_url:
        transaction.on_commit(lambda: forget_unused_key_sets({before[0]}))


@receiver(post_delete, sender=Tenant)
def forget_keys_after_delete(sender: type, instance: Tenant, **kwargs: object) -> None:
    """The last tenant of a URL takes its record with it."""
    before = getattr(instance, "_key_set_before", None)
    url = before[0] if before else instance.jwks_url
    transaction.on_commit(lambda: forget_unused_key_sets({url}))
