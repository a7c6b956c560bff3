"""The base of every tenant-served API view, and the API's answer where no route matches."""

import re
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework.exceptions import MethodNotAllowed
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.resolution import resolve_tenant


class TenantResolutionMixin:
    """Resolves the tenant before authentication, so unknown tenants never reach token work."""

    endpoint_key: str | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """Tenant first, then an unsupported method is 405 whatever the token, then DRF's steps."""
        # The slug comes from the /t/<slug>/ URL prefix; handlers never see it.
        tenant = resolve_tenant(request, self.kwargs.pop("tenant_slug", None))
        # On the Django request too: DRF's OPTIONS metadata checks permissions on clones of the
        # request, which read attributes they lack from the Django request they share.
        request.tenant = request._request.tenant = tenant
        method = request.method.lower()
        if method not in self.http_method_names or not hasattr(self, method):
            raise MethodNotAllowed(request.method)
        super().initial(request, *args, **kwargs)

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        """DRF's, and the current DPoP nonce for a tenant that issues them (RFC 9449 section 9)."""
        nonce = getattr(request, "dpop_nonce", None)
        if nonce is not None and "DPoP-Nonce" not in response:
            response["DPoP-Nonce"] = nonce
        return super().finalize_response(request, response, *args, **kwargs)

    def endpoint_key_for(self, method: str) -> str | None:
        """The endpoint key whose scope rule guards requests of this method."""
        return self.endpoint_key


class TenantAPIView(TenantResolutionMixin, APIView):
    """An APIView served per tenant."""


API_PATH = re.compile(r"^(/t/[^/]+)?/api/")


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """No route: under /api/ the API's JSON error, elsewhere Django's page."""
    if API_PATH.match(request.path_info):
        return JsonResponse({"message": "No such endpoint.", "code": "not_found"}, status=404)
    return defaults.page_not_found(request, exception)
