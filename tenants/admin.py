"""Basic admin for tenants, with their hosts, audiences and scope rules inline."""

from django.contrib import admin

from tenants.forms import (
    AudienceForm,
    CorsOriginForm,
    HostForm,
    RequiredInlineFormSet,
    ScopeRuleForm,
    TenantForm,
)
from tenants.models import ScopeRule, Tenant, TenantAudience, TenantCorsOrigin, TenantHost


class HostInline(admin.TabularInline):
    """Hostnames that serve the tenant."""

    model = TenantHost
    form = HostForm
    extra = 0


class AudienceInline(admin.TabularInline):
    """API identifiers; at least one."""

    model = TenantAudience
    form = AudienceForm
    formset = RequiredInlineFormSet
    min_num = 1
    extra = 0


class CorsOriginInline(admin.TabularInline):
    """Browser origins allowed to call the tenant's API."""

    model = TenantCorsOrigin
    form = CorsOriginForm
    extra = 0


class ScopeRuleInline(admin.TabularInline):
    """Per-endpoint scope overrides."""

    model = ScopeRule
    form = ScopeRuleForm
    extra = 0


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    """Tenants and their parts on one page."""

    form = TenantForm
    list_display = ("slug", "name", "active", "issuer")
    list_filter = ("active",)
    search_fields = ("slug", "name", "domain", "hosts__hostname")
    inlines = (HostInline, AudienceInline, ScopeRuleInline, CorsOriginInline)
