"""The forward-auth decision endpoint: a proxy asks whether one request to any API may pass.

nginx (``auth_request``), Caddy (``forward_auth``), Traefik (``forwardAuth``) and Envoy
(``ext_authz``) send the original request's method, scheme, host and URI; the tenant comes from
that host, its routes decide what the path demands, and the token is checked as for the API the
platform serves itself. Allowed: 200 with the caller's identity in ``X-Authz-*`` headers.
Refused: what the in-process API would answer. Only a caller that presents
``AUTHZ_PROXY_SECRET`` sees the endpoint at all; anyone else gets the 404 of an unknown URL.

A gateway asks on every upstream call, so the decision is a plain Django view: the allowed
answer is built here, with the headers DRF's carried; a refusal is handed to ``Refusal``, an
``APIView``, so that DRF and ``authz.handlers`` answer it exactly as they answer the API's.
"""

import functools
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.exceptions import APIException
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from authz.authentication import Principal, TenantTokenAuthentication
from authz.errors import InsufficientScope
from authz.metrics import route_labels
from ops.login import client_address
from tenants.ratelimit import (
    anonymous_limited,
)
from tenants.resolution import TenantNotFound, tenant_of_host
from tenants.routes import Outcome, Route, scopes_allow
from tenants.views import limits_counted, rate_and_nonce_headers

PREFIX = "/authz/decision"
# RFC 9110 section 5.6.2: a method is a token.
METHOD = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}$")
ABSOLUTE_FORM = re.compile(r"^https?://[^/?#]*", re.IGNORECASE)
# What a header value may carry as it is; anything else (and "%") is percent-encoded (UTF-8).
HEADER_SAFE = "".join(chr(code) for code in range(0x20, 0x7F) if chr(code) != "%")
NO_ROUTE_LABEL = "no_route"
# What DRF's handler answers (it turns Django's two into its own); anything else is a 500.
REFUSALS = (APIException, Http404, PermissionDenied)
# Every method is decided; DRF's answer named them all in Allow.
ALLOW = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS, TRACE"


class ForwardedRequestInvalid(exceptions.ParseError):
    """The proxy sent an original request that cannot be read: its headers are at fault."""

    default_detail = "The proxy's description of the original request cannot be read."
    default_code = "invalid_forwarded_request"


class RouteRefused(exceptions.PermissionDenied):
    """No route of the tenant matches the request (deny by default), or its path is refused."""

    default_code = "no_route"


@dataclass(frozen=True)
class OriginalRequest:
    """The request the client sent to the proxy, as the proxy describes it."""

    method: str
    scheme: str
    host: str  # name[:port], as the client addressed it
    target: str  # path and query, as sent (percent-escapes kept)

    @property
    def path(self) -> str:
        """The path, without query or fragment."""
        return self.target.split("?", 1)[0].split("#", 1)[0]

    @property
    def url(self) -> str:
        """The URL a DPoP proof's ``htu`` must name: scheme, host and path."""
        return f"{self.scheme}://{self.host}{self.path}"


def original_request(request: HttpRequest) -> OriginalRequest:
    """Read the original request: X-Forwarded-* (Traefik, Caddy), X-Original-* (nginx), or
    Envoy's path-prefixed request itself; ForwardedRequestInvalid when it cannot be read."""
    meta = request.META
    method = _one(meta, "HTTP_X_FORWARDED_METHOD") or _one(meta, "HTTP_X_ORIGINAL_METHOD")
    target = meta.get("HTTP_X_FORWARDED_URI") or meta.get("HTTP_X_ORIGINAL_URI")
    if not target:
        if method:  # a header form without its URI: never decide the decision's own path
            raise ForwardedRequestInvalid("The original method came without the original URI.")
        target = _after_prefix(_raw_target(request))
    host = _one(meta, "HTTP_X_FORWARDED_HOST") or _one(meta, "HTTP_HOST") or ""
    scheme = (_one(meta, "HTTP_X_FORWARDED_PROTO") or request.scheme).lower()
    original = OriginalRequest(method or request.method or "", scheme, host, _text(target))
    _check(original)
    return original


def _one(meta: dict[str, Any], name: str) -> str | None:
    """One header's value; a list (``a, b``) is refused: which entry is ours is unknowable."""
    value = meta.get(name, "").strip()
    if "," in value:
        header = name.removeprefix("HTTP_").replace("_", "-").title()
        raise ForwardedRequestInvalid(f"{header} must hold one value, not a list.")
    return value or None


def _raw_target(request: HttpRequest) -> str:
    """The decision request's own target, escapes intact (gunicorn's RAW_URI, REQUEST_URI)."""
    raw = request.META.get("RAW_URI") or request.META.get("REQUEST_URI")
    return raw if raw else request.get_full_path()


def _after_prefix(target: str) -> str:
    """Envoy's form: the original path and query follow the decision path."""
    target = ABSOLUTE_FORM.sub("", target, count=1)
    rest = target.removeprefix(PREFIX)
    return rest if rest.startswith("/") else "/" + rest


def _text(target: str) -> str:
    """A target as text: WSGI gives headers as latin-1, the bytes were UTF-8 (or escapes)."""
    target = ABSOLUTE_FORM.sub("", target, count=1) or "/"
    try:
        return target.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise ForwardedRequestInvalid("The original URI is not UTF-8.") from None


def _check(original: OriginalRequest) -> None:
    if not METHOD.match(original.method):
        raise ForwardedRequestInvalid("The original method is not an HTTP method.")
    if original.scheme not in ("http", "https"):
        raise ForwardedRequestInvalid("The original scheme must be http or https.")
    if not original.target.startswith("/"):
        raise ForwardedRequestInvalid("The original URI must be a path, starting with /.")


def from_the_proxy(request: HttpRequest) -> bool:
    """Whether the request presents the proxy secret (compared in constant time)."""
    secret = settings.AUTHZ_PROXY_SECRET
    offered = request.META.get("HTTP_X_AUTHZ_PROXY_SECRET", "")
    return bool(secret) and hmac.compare_digest(offered.encode(), secret.encode())


class JSONAlways(BaseContentNegotiation):
    """The client's Accept is the upstream's business: a decision always answers JSON."""

    def select_parser(self, request: Request, parsers: list) -> Any:
        """No body is read."""
        return None

    def select_renderer(self, request: Request, renderers: list, format_suffix: Any = None) -> Any:
        """JSON."""
        renderer = JSONRenderer()
        return renderer, renderer.media_type


@csrf_exempt
def decision(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """The endpoint for the proxy; for anyone else, the 404 of a URL that does not exist."""
    if not from_the_proxy(request):
        raise Http404()
    request.authz_decision = True
    request.authz_endpoint = NO_ROUTE_LABEL  # the metrics' label until a route matches
    try:
        route, principal = decide(request)
    except REFUSALS as refused:
        request.authz_refused = refused
        return _refusal_view(request)
    return allowed(request, route, principal)


def decide(request: HttpRequest) -> tuple[Route, Principal | None]:
    """The tenant, its early limits, the route, the token and the scopes, then the count: as a
    tenant's API view decides (``TenantResolutionMixin.initial``), on the Django request, whose
    attributes the authentication, the log line and the refusal read."""
    original = request.authz_original = original_request(request)
    request.authz_target = (original.method, original.url)
    tenant = request.tenant = tenant_of_host(original.host)
    if tenant is None:
        raise TenantNotFound()
    address = client_address(request, calling_proxy=True) if anonymous_limited() else None
    with limits_counted(request, tenant, address):
        return authorize(request, tenant, original)


def authorize(
    request: HttpRequest, tenant: Any, original: OriginalRequest
) -> tuple[Route, Principal | None]:
    """The route first: no route is 403 before any token work; a public one reads none. Then
    the token (401 without one) and one of the route's scope alternatives (403)."""
    outcome: Outcome = tenant.routes.match(original.method, original.target)
    if outcome.route is None:
        raise RouteRefused(outcome.reason, code=outcome.code)
    route = outcome.route
    request.authz_endpoint = route_labels.label(route.template)
    if route.public:
        return route, None
    request.user = request.auth = None  # as DRF leaves a request whose authentication failed
    authenticated = authentication.authenticate(request)
    if authenticated is None:
        raise exceptions.NotAuthenticated()
    request.user, request.auth = authenticated
    principal = authenticated[1]
    if not scopes_allow(principal.scopes, route.scopes):
        alternatives = route.scope_alternatives
        raise InsufficientScope(tuple(alternatives[0].split()), alternatives)
    return route, principal


def allowed(request: HttpRequest, route: Route, principal: Principal | None) -> HttpResponse:
    """200, no body, the identity headers, then what DRF's answer carried (nonce, limits, Allow)."""
    response = HttpResponse(status=200)
    del response["Content-Type"]  # DRF drops it from an empty body
    response["X-Authz-Tenant"] = fixed_header_value(request.tenant.slug)
    response["X-Authz-Route"] = fixed_header_value(route.template)
    if principal is not None:
        for name, value in principal_headers(principal):
            response[name] = value
    rate_and_nonce_headers(request, response)
    response["Allow"] = ALLOW
    return response


def principal_headers(principal: Principal) -> tuple[tuple[str, str], ...]:
    """Subject, scopes, organization and client id, encoded once per verified token (a
    remembered token's claims are the same object on every hit)."""
    memo = principal.claims.memo
    headers = memo.get("identity")
    if headers is None:
        headers = memo["identity"] = tuple(
            (name, header_value(value)) for name, value in identity_values(principal).items()
        )
    return headers


def identity_values(principal: Principal) -> dict[str, str]:
    """Who called, for the upstream: the token's subject, scopes, organization and client."""
    values = {
        "X-Authz-Subject": principal.subject,
        "X-Authz-Scopes": " ".join(sorted(principal.scopes)),
    }
    if principal.organization:
        values["X-Authz-Organization"] = principal.organization
    client = principal.claims.payload.get("azp") or principal.claims.payload.get("client_id")
    if isinstance(client, str):
        values["X-Authz-Client-Id"] = client
    return values


def header_value(text: str) -> str:
    """Printable ASCII as it is; every other character (and "%") percent-encoded as UTF-8."""
    return quote(text, safe=HEADER_SAFE, encoding="utf-8", errors="surrogatepass")


# Tenant slugs and route templates: few, and the same on every decision.
fixed_header_value = functools.lru_cache(maxsize=4096)(header_value)


class Refusal(APIView):
    """A refused decision, answered by DRF as the API answers its refusals: the same status,
    challenges, headers and JSON body (``authz.handlers.exception_handler``)."""

    content_negotiation_class = JSONAlways
    parser_classes = ()
    permission_classes = ()

    @property
    def allowed_methods(self) -> list[str]:
        """Every method is decided."""
        return ALLOW.split(", ")

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """The refusal the decision raised."""
        raise request._request.authz_refused

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        """Nonce and limits, DRF's, and for nginx (whose auth_request drops bodies) the body in
        a header."""
        rate_and_nonce_headers(request._request, response)
        response = super().finalize_response(request, response, *args, **kwargs)
        wants = request.META.get("HTTP_X_AUTHZ_BODY_IN_HEADER") == "1"
        if wants and response.status_code >= 400 and isinstance(response.data, dict):
            body = json.dumps(response.data, ensure_ascii=True, separators=(",", ":"))
            response["X-Authz-Body"] = body
        return response


_refusal_view = Refusal.as_view()
authentication = TenantTokenAuthentication()
