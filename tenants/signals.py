"""Receivers that write every tenant change to the change feed and keep key sets in step."""

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save
from django.dispatch import receiver

from tenants.directory import record_change
from tenants.models import ScopeRule, Tenant, TenantAudience, TenantCorsOrigin, TenantHost
from tenants.tasks import forget_unused_key_sets, queue_refresh

PARTS = (TenantHost, TenantAudience, ScopeRule, TenantCorsOrigin)


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
def remember_key_set_url(sender: type, instance: Tenant, **kwargs: object) -> None:
    """Note the JWKS URL the tenant used before this save or delete."""
    if instance.pk is None:
        return
    before = Tenant.objects.filter(pk=instance.pk).first()
    instance._jwks_url_before = before.jwks_url if before else None


@receiver(post_save, sender=Tenant)
def refresh_keys_after_save(sender: type, instance: Tenant, **kwargs: object) -> None:
    """Queue the (possibly new) issuer's refresh once the save commits; drop a dropped URL."""
    before = getattr(instance, "_jwks_url_before", None)
    if instance.active:
        queue_refresh({instance.jwks_url})
    if before and before != instance.jwks_url:
        transaction.on_commit(lambda: forget_unused_key_sets({before}))


@receiver(post_delete, sender=Tenant)
def forget_keys_after_delete(sender: type, instance: Tenant, **kwargs: object) -> None:
    """The last tenant of a URL takes its record with it."""
    url = getattr(instance, "_jwks_url_before", None) or instance.jwks_url
    transaction.on_commit(lambda: forget_unused_key_sets({url}))
