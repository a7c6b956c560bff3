"""Receivers that publish tenant changes and refresh key sets after the change commits."""

from functools import partial

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from tenants.directory import config_changed
from tenants.models import ScopeRule, Tenant, TenantAudience, TenantCorsOrigin, TenantHost


@receiver([post_save, post_delete], sender=Tenant)
@receiver([post_save, post_delete], sender=TenantHost)
@receiver([post_save, post_delete], sender=TenantAudience)
@receiver([post_save, post_delete], sender=ScopeRule)
@receiver([post_save, post_delete], sender=TenantCorsOrigin)
def publish_config_change(sender: type, **kwargs: object) -> None:
    """Any change to a tenant or its parts changes the directory."""
    config_changed()


@receiver(post_save, sender=Tenant)
def refresh_keys_after_save(sender: type, instance: Tenant, **kwargs: object) -> None:
    """Fetch the (possibly new) issuer's keys once the saved tenant is visible to the worker."""
    from authz.tasks import refresh_key_set

    if instance.active:
        transaction.on_commit(partial(refresh_key_set.delay, instance.slug))
