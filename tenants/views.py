"""The base class of every tenant-served API view."""

from typing import Any

from rest_framework.request import Request
from rest_framework.views import APIView

from tenants.resolution import resolve_tenant


class TenantAPIView(APIView):
    """Resolves the tenant before authentication, so unknown tenants never reach token work."""

    endpoint_key: str | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # The slug comes from the /t/<slug>/ URL prefix; handlers never see it.
        request.tenant = resolve_tenant(request, self.kwargs.pop("tenant_slug", None))
        super().initial(request, *args, **kwargs)
