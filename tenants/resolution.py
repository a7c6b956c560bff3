"""Resolving a request to its tenant: by /t/<slug>/ prefix, by hostname, or the default."""

from django.http import HttpRequest
from django.http.request import split_domain_port
from rest_framework.exceptions import NotFound

from authz.conf import authz_settings
from tenants.directory import TenantConfig, directory


class TenantNotFound(NotFound):
    """No active tenant answers at this address."""

    default_detail = "No tenant is served at this address."
    default_code = "tenant_not_found"


def resolve_tenant(request: HttpRequest, slug: str | None) -> TenantConfig:
    """Return the tenant for a path slug, else the request's host, else DEFAULT_TENANT."""
    if slug is not None:
        tenant = directory.by_slug(slug)
    else:
        hostname, _port = split_domain_port(request.get_host())
        tenant = directory.by_host(hostname)
        if tenant is None and authz_settings.DEFAULT_TENANT:
            tenant = directory.by_slug(authz_settings.DEFAULT_TENANT)
    if tenant is None:
        raise TenantNotFound()
    return tenant
