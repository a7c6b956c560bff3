"""Receivers that write every tenant change to the change feed and keep key sets in step."""

from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save
from django.dispatch import receiver

from tenants.directory import record_change
from tenants.models import (
    Route,
    ScopeRule,
    Tenant,
    TenantAudience,
    TenantCorsOrigin,
    TenantHost,
    TenantIssuer,
)
from tenants.tasks import forget_unused_key_sets, queue_refresh

PARTS = (TenantIssuer, TenantHost, TenantAudience, ScopeRule, TenantCorsOrigin, Route)


@receiver([post_save, post_delete], sender=Tenant)
def publish_tenant_change(sender: type, instance: Tenant, **kwargs: object) -> None:
    """A saved or deleted tenant is one change of that tenant."""
    record_change(instance.pk)


def publish_part_change(sender: type, instance: Any, **kwargs: object) -> None:
    """An issuer, host, audience, rule, origin or route that changed is a change of its tenant."""
    record_change(instance.tenant_id)


for part in PARTS:
    post_save.connect(publish_part_change, sender=part, dispatch_uid=f"part-change-{part}")
    post_delete.connect(publish_part_change, sender=part, dispatch_uid=f"part-delete-{part}")


@receiver(pre_save, sender=Tenant)
def remember_activity(sender: type, instance: Tenant, **kwargs: object) -> None:
    """Note whether the tenant was active before this save."""
    before = Tenant.objects.filter(pk=instance.pk) if instance.pk is not None else None
    instance._was_active = bool(before and before.values_list("active", flat=True).first())


@receiver(post_save, sender=Tenant)
def refresh_keys_after_reactivation(sender: type, instance: Tenant, **kwargs: object) -> None:
    """A tenant active again may use key sets nobody refreshed meanwhile: queue them. A new
    tenant's issuers are saved after it, and queue their own (below)."""
    if instance.active and not getattr(instance, "_was_active", True):
        queue_refresh(instance.jwks_urls)


@receiver(pre_save, sender=TenantIssuer)
@receiver(pre_delete, sender=TenantIssuer)
def remember_key_set_source(sender: type, instance: TenantIssuer, **kwargs: object) -> None:
    """Note the JWKS URL the issuer had before this save or delete."""
    before = TenantIssuer.objects.filter(pk=instance.pk).first() if instance.pk else None
    instance._jwks_url_before = before.jwks_url if before else None


@receiver(post_save, sender=TenantIssuer)
def refresh_keys_after_save(sender: type, instance: TenantIssuer, **kwargs: object) -> None:
    """Queue a refresh once the save commits, when the issuer's keys may be new to us: it was
    added or repointed. A save of anything else fetches nothing (the Refresh keys button and
    the schedule remain); the URL it no longer uses is dropped when unused."""
    before = getattr(instance, "_jwks_url_before", None)
    if before == instance.jwks_url:
        return
    if Tenant.objects.filter(pk=instance.tenant_id, active=True).exists():
        queue_refresh({instance.jwks_url})
    if before:
        transaction.on_commit(lambda: forget_unused_key_sets({before}))


@receiver(post_delete, sender=TenantIssuer)
def forget_keys_after_delete(sender: type, instance: TenantIssuer, **kwargs: object) -> None:
    """The last issuer of a URL takes its record with it (a deleted tenant's issuers too)."""
    url = getattr(instance, "_jwks_url_before", None) or instance.jwks_url
    transaction.on_commit(lambda: forget_unused_key_sets({url}))
