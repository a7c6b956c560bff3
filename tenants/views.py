"""The base of every tenant-served API view."""

from typing import Any

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
