"""CORS per tenant: a preflight or response gets CORS headers only for that tenant's origins."""

import re
from typing import Any

from corsheaders.middleware import CorsMiddleware
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers

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


class TenantCorsMiddleware(CorsMiddleware):
    """django-cors-headers' middleware; a request without ``Origin`` (any call that is not a
    browser's cross-origin one) gets what it gave it, ``Vary: origin`` on CORS paths, without
    parsing every request header into ``request.headers`` to look for ``Origin``."""

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Off CORS_URLS_REGEX (the decision endpoint, the admin) CORS is never enabled (our
        signal receiver asks the same path first): step aside without sending the signal."""
        if not re.match(settings.CORS_URLS_REGEX, request.path_info):
            return self.get_response(request)
        return super().__call__(request)

    def add_response_headers(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        """The library's, when the request names an origin; else only the Vary header."""
        if request.META.get("HTTP_ORIGIN"):
            return super().add_response_headers(request, response)
        enabled = getattr(request, "_cors_enabled", None)
        if enabled is None:
            enabled = self.is_enabled(request)
        if enabled:
            patch_vary_headers(response, ("origin",))
        return response
