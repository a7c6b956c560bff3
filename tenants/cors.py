"""CORS per tenant: a preflight or response gets CORS headers only for that tenant's origins."""

from typing import Any

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest

from tenants.resolution import tenant_of_path


def origin_allowed_for_tenant(sender: Any, request: HttpRequest, **kwargs: Any) -> bool:
    """django-cors-headers' ``check_request_enabled`` signal: the tenant's origins only."""
    try:
        tenant = tenant_of_path(request)
    except DisallowedHost:
        return False
    return tenant is not None and request.headers.get("origin") in tenant.cors_origins
