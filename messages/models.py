"""Messages: a resource owned by a tenant, reachable only through a tenant-scoped manager."""

from typing import Any

from django.db import models

from tenants.directory import TenantConfig
from tenants.models import Tenant

MAX_TEXT_LENGTH = 1000


class TenantScopedQuerySet(models.QuerySet):
    """Rows of one tenant; rows created through it belong to that tenant."""

    tenant_id: int | None = None

    def create(self, **kwargs: Any) -> Any:
        """Create a row of this queryset's tenant, whatever the caller passed."""
        return super().create(**{**kwargs, "tenant_id": self.tenant_id})

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> list[Any]:
        """Create rows of this queryset's tenant, whatever the objects said."""
        objs = list(objs)
        for obj in objs:
            obj.tenant_id = self.tenant_id
        return super().bulk_create(objs, *args, **kwargs)

    def update(self, **kwargs: Any) -> int:
        """Update rows in place; moving them to another tenant is refused."""
        if "tenant" in kwargs or "tenant_id" in kwargs:
            raise TypeError("Rows cannot move between tenants.")
        return super().update(**kwargs)

    def _clone(self) -> "TenantScopedQuerySet":
        clone = super()._clone()
        clone.tenant_id = self.tenant_id
        return clone


class TenantScopedManager(models.Manager):
    """The only door to tenant-owned rows: ``for_tenant(tenant)``; unscoped access fails loudly."""

    def for_tenant(self, tenant: TenantConfig) -> TenantScopedQuerySet:
        """The rows of one tenant."""
        queryset = TenantScopedQuerySet(self.model, using=self._db).filter(tenant_id=tenant.id)
        queryset.tenant_id = tenant.id
        return queryset

    def get_queryset(self) -> models.QuerySet:
        """Refuse unscoped queries: a view that forgets its tenant must crash, not leak."""
        raise TypeError(
            f"{self.model.__name__} rows belong to tenants: use "
            f"{self.model.__name__}.objects.for_tenant(tenant)."
        )


class Message(models.Model):
    """A short text posted by a token subject of one tenant."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    text = models.CharField(max_length=MAX_TEXT_LENGTH)
    author = models.TextField(help_text="The token subject that posted it.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = TenantScopedManager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "-created_at", "-id"])]

    def __str__(self) -> str:
        return f"{self.author}: {self.text[:40]}"
