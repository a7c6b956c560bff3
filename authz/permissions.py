"""DRF permission: the token must carry every scope the tenant demands on the endpoint."""

from typing import TYPE_CHECKING

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from authz.authentication import Principal
from authz.errors import InsufficientScope

if TYPE_CHECKING:  # rest_framework.views imports this module through its settings
    from rest_framework.views import APIView


class HasEndpointScopes(BasePermission):
    """The tenant's scope rule for the view's endpoint key, else the endpoint's default."""

    def has_permission(self, request: Request, view: "APIView") -> bool:
        """False without a principal (DRF answers 401); 403 with the scopes when short."""
        if not isinstance(request.auth, Principal) or not hasattr(view, "endpoint_key_for"):
            return False
        endpoint_key = view.endpoint_key_for(request.method)
        required = request.tenant.required_scopes(endpoint_key) if endpoint_key else ()
        if not set(required) <= request.auth.scopes:
            raise InsufficientScope(required)
        return True
