"""CORS per tenant: a preflight or response gets CORS headers only for that tenant's origins."""

import re
from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest

from tenants.resolution import tenant_of_path


def origin_allowed_for_tenant(sender: Any, request: HttpRequest, **kwargs: Any) -> bool:
    """django-cors-headers' ``check_request_enabled`` signal: the tenant's origins only."""
    # The library enables CORS when the path matches OR a handler says yes: so check the path.
    if not re.match(settings.CORS_URLS_REGEX, request.path_info):
        return False
    try:
        tenant = tenant_of_path(request)
    except DisallowedHost:
        return False
    return tenant is not None and request.headers.get("origin") in tenant.cors_origins
