"""The quickstart's three endpoints, served per tenant."""

from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from messages.endpoints import PRIVATE, PRIVATE_SCOPED
from tenants.views import TenantAPIView


class PublicMessage(TenantAPIView):
    """GET /api/public: no token needed (and none looked at)."""

    authentication_classes = ()
    permission_classes = (AllowAny,)

    def get(self, request: Request) -> Response:
        """The quickstart's public message."""
        return Response(
            {
                "message": "Hello from a public endpoint! "
                "You don't need to be authenticated to see this."
            }
        )


class PrivateMessage(TenantAPIView):
    """GET /api/private: any valid token of the tenant."""

    endpoint_key = PRIVATE.key

    def get(self, request: Request) -> Response:
        """The quickstart's private message."""
        return Response(
            {"message": "Hello from a private endpoint! You need to be authenticated to see this."}
        )


class PrivateScopedMessage(TenantAPIView):
    """GET /api/private-scoped: the tenant's rule, by default read:messages."""

    endpoint_key = PRIVATE_SCOPED.key

    def get(self, request: Request) -> Response:
        """The quickstart's scoped message, naming the scopes this tenant demands."""
        scopes = " ".join(request.tenant.required_scopes(self.endpoint_key))
        return Response(
            {
                "message": "Hello from a private endpoint! You need to be authenticated "
                f"and have a scope of {scopes} to see this."
            }
        )
