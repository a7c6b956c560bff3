"""Resolving a request to its tenant: by /t/<slug>/ prefix, by hostname, or the default."""

import re

from django.http import HttpRequest
from django.http.request import split_domain_port
from rest_framework.exceptions import NotFound

from authz.conf import authz_settings
from tenants.directory import TenantConfig, directory


class TenantNotFound(NotFound):
    """No active tenant answers at this address."""

    default_detail = "No tenant is served at this address."
    default_code = "tenant_not_found"


PATH_PREFIX = re.compile(r"^/t/(?P<slug>[-a-zA-Z0-9_]+)/")


def find_tenant(request: HttpRequest, slug: str | None) -> TenantConfig | None:
    """The tenant for a path slug, else the request's host, else DEFAULT_TENANT, else None."""
    if slug is not None:
        return directory.by_slug(slug)
    return tenant_of_host(request.get_host())


def tenant_of_host(host: str) -> TenantConfig | None:
    """The tenant served on a host (``name[:port]``), else DEFAULT_TENANT, else None."""
    hostname, _port = split_domain_port(host)
    tenant = directory.by_host(hostname) if hostname else None
    if tenant is None and authz_settings.DEFAULT_TENANT:
        tenant = directory.by_slug(authz_settings.DEFAULT_TENANT)
    return tenant


def resolve_tenant(request: HttpRequest, slug: str | None) -> TenantConfig:
    """The tenant of an API request; 404 ``tenant_not_found`` when there is none."""
    tenant = find_tenant(request, slug)
    if tenant is None:
        raise TenantNotFound()
    return tenant


def tenant_of_path(request: HttpRequest) -> TenantConfig | None:
    """The tenant of a request seen before URL routing (middleware), from its path or host."""
    match = PATH_PREFIX.match(request.path_info)
    return find_tenant(request, match["slug"] if match else None)
