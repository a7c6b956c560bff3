"""The platform's routes, and two bench-only endpoints that price DRF's own dispatch.

``bench/layers.py`` serves these: ``bench-django`` is a plain Django view, ``bench-drf`` a bare
DRF ``APIView`` (no authentication, permission or throttling) with the same body, both under a
tenant's API prefix so every middleware treats them as it treats the API.
"""

from django.http import HttpRequest, JsonResponse
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.urls import handler404
from config.urls import urlpatterns as platform_urlpatterns

BODY = {"message": "Hello from a public endpoint! You don't need to be authenticated to see this."}


def bare_django(request: HttpRequest, tenant_slug: str) -> JsonResponse:
    """The body, straight from Django."""
    return JsonResponse(BODY)


class BareDRF(APIView):
    """The body, through DRF's dispatch, content negotiation and rendering only."""

    authentication_classes = ()
    permission_classes = ()

    def get(self, request: Request, tenant_slug: str) -> Response:
        """The body."""
        return Response(BODY)


urlpatterns = [
    path("t/<slug:tenant_slug>/api/bench-django", bare_django),
    path("t/<slug:tenant_slug>/api/bench-drf", BareDRF.as_view()),
    *platform_urlpatterns,
]
__all__ = ["handler404", "urlpatterns"]
