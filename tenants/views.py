"""The base of every tenant-served API view, and the API's answer where no route matches."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework.exceptions import APIException, MethodNotAllowed
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from authz.authentication import Principal
from ops.login import client_address
from ops.middleware import API_PATH
from tenants.ratelimit import (
    Limit,
    anonymous_limited,
    early_limits,
    limiter,
    limits_of,
    policy_header,
    refusal_limits,
    state_header,
    throttled,
)
from tenants.resolution import resolve_tenant


class TenantResolutionMixin:
    """Resolves the tenant before authentication, so unknown tenants never reach token work."""

    endpoint_key: str | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """Tenant first, then an unsupported method is 405 whatever the token, then DRF's steps."""
        tenant = self.tenant_of(request)
        # On the Django request too: DRF's OPTIONS metadata checks permissions on clones of the
        # request, which read attributes they lack from the Django request they share.
        request.tenant = request._request.tenant = tenant
        if not self.serves_method(request.method):
            raise MethodNotAllowed(request.method)
        if getattr(request, "authz_dry_run", False):  # the token debugger counts nothing
            super().initial(request, *args, **kwargs)
            return
        address = self.address_of(request) if anonymous_limited() else None
        with limits_counted(request._request, tenant, address):
            super().initial(request, *args, **kwargs)

    def tenant_of(self, request: Request) -> Any:
        """The request's tenant: by the /t/<slug>/ URL prefix (handlers never see it), or host."""
        return resolve_tenant(request, self.kwargs.pop("tenant_slug", None))

    def address_of(self, request: Request) -> str | None:
        """The client's address, for the limits that count refusals per address."""
        return client_address(request._request)

    def serves_method(self, method: str) -> bool:
        """Whether this view has a handler for the method (else 405, whatever the token)."""
        name = method.lower()
        return name in self.http_method_names and hasattr(self, name)

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        """DRF's, with the DPoP nonce and the rate-limit state."""
        # The DRF request: the nonce is set on it; the verdicts fall through to Django's.
        rate_and_nonce_headers(request, response)
        return super().finalize_response(request, response, *args, **kwargs)

    def endpoint_key_for(self, method: str) -> str | None:
        """The endpoint key whose scope rule guards requests of this method."""
        return self.endpoint_key


def rate_and_nonce_headers(request: HttpRequest | Request, response: HttpResponse) -> None:
    """The current DPoP nonce for a tenant that issues them (RFC 9449 section 9), and the
    rate-limit state of the limits the request was counted against."""
    nonce = getattr(request, "dpop_nonce", None)
    if nonce is not None and "DPoP-Nonce" not in response:
        response["DPoP-Nonce"] = nonce
    verdicts = getattr(request, "rate_verdicts", None)
    if verdicts:
        response["RateLimit-Policy"] = policy_header(verdicts)
        response["RateLimit"] = state_header(verdicts)


@contextmanager
def limits_counted(request: HttpRequest, tenant: Any, address: str | None) -> Iterator[None]:
    """429 at once when an early limit is known to be over; after the work inside, the request
    counted against its limits (a refusal before authentication against the client's address)."""
    known = limiter.known_over(early_limits(tenant, address))
    if known is not None:  # refused before any token work, with no round trip
        request.rate_verdicts = [known]
        raise throttled(known, tenant.slug)
    try:
        yield
    except APIException as refused:
        limits = limits_of_refusal(tenant, subject_of(request), address, refused)
        count_limits(request, tenant, limits, refused)
        raise
    count_limits(request, tenant, limits_of(tenant, subject_of(request)))


def count_limits(
    request: Any, tenant: Any, limits: list[Limit], refused: Exception | None = None
) -> None:
    """Count the request against its limits (one round trip); 429 when one is over."""
    verdicts = limiter.count(limits)
    if not verdicts:
        return
    request.rate_verdicts = verdicts
    over = next((verdict for verdict in verdicts if not verdict.allowed), None)
    if over is not None:
        raise throttled(over, tenant.slug) from refused


def limits_of_refusal(
    tenant: Any, subject: str | None, address: str | None, refused: APIException
) -> list[Limit]:
    """A refusal before authentication completed (400, 401, 406) is the client's: its address
    first, then the tenant's unauthenticated requests. An outage (503) or a refusal of an
    authenticated caller (403) counts against the tenant and subject."""
    if subject is None and refused.status_code < 500:
        return refusal_limits(tenant, address)
    return limits_of(tenant, subject)


def subject_of(request: HttpRequest) -> str | None:
    """The authenticated subject, once the request is authenticated (or refused): DRF copies
    its principal onto the Django request, and the decision puts it there."""
    principal = getattr(request, "auth", None)
    return principal.subject if isinstance(principal, Principal) else None


class TenantAPIView(TenantResolutionMixin, APIView):
    """An APIView served per tenant."""


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """No route: under /api/ the API's JSON error, elsewhere Django's page."""
    if API_PATH.match(request.path_info):
        return JsonResponse({"message": "No such endpoint.", "code": "not_found"}, status=404)
    return defaults.page_not_found(request, exception)
