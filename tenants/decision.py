"""The forward-auth decision endpoint: a proxy asks whether one request to any API may pass.

nginx (``auth_request``), Caddy (``forward_auth``), Traefik (``forwardAuth``) and Envoy
(``ext_authz``) send the original request's method, scheme, host and URI; the tenant comes from
that host, its routes decide what the path demands, and the token is checked as for the API the
platform serves itself. Allowed: 200 with the caller's identity in ``X-Authz-*`` headers.
Refused: what the in-process API would answer. Only a caller that presents
``AUTHZ_PROXY_SECRET`` sees the endpoint at all; anyone else gets the 404 of an unknown URL.
"""

import hmac
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from authz.authentication import Principal
from authz.errors import InsufficientScope
from authz.metrics import route_labels
from ops.login import client_address
from tenants.resolution import TenantNotFound, tenant_of_host
from tenants.routes import Outcome, Route, scopes_allow
from tenants.views import TenantResolutionMixin

PREFIX = "/authz/decision"
# RFC 9110 section 5.6.2: a method is a token.
METHOD = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}$")
ABSOLUTE_FORM = re.compile(r"^https?://[^/?#]*", re.IGNORECASE)
# What a header value may carry as it is; anything else (and "%") is percent-encoded (UTF-8).
HEADER_SAFE = "".join(chr(code) for code in range(0x20, 0x7F) if chr(code) != "%")
NO_ROUTE_LABEL = "no_route"


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


class RouteAllows(BasePermission):
    """The matched route's demand: nothing when public, else a token with one scope alternative."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        """True, False (401: no token), or 403 naming the alternatives."""
        route: Route = request.route
        if route.public:
            return True
        if not isinstance(request.auth, Principal):
            return False
        if not scopes_allow(request.auth.scopes, route.scopes):
            alternatives = route.scope_alternatives
            raise InsufficientScope(tuple(alternatives[0].split()), alternatives)
        return True


class DecisionView(TenantResolutionMixin, APIView):
    """Any method: the original request's tenant, route, token and limits decide."""

    content_negotiation_class = JSONAlways
    permission_classes = (RouteAllows,)
    parser_classes = ()

    def tenant_of(self, request: Request) -> Any:
        """The tenant of the original host (its hostnames), else DEFAULT_TENANT."""
        original = original_request(request._request)
        request._request.authz_original = original
        request.authz_target = (original.method, original.url)
        tenant = tenant_of_host(original.host)
        if tenant is None:
            raise TenantNotFound()
        return tenant

    def address_of(self, request: Request) -> str | None:
        """The client's address as the calling proxy saw it (its X-Forwarded-For entry)."""
        return client_address(request._request, calling_proxy=True)

    def serves_method(self, method: str) -> bool:
        """Every method is decided: the original method is the one that counts."""
        return True

    def perform_authentication(self, request: Request) -> None:
        """The route first: no route is 403 before any token work; a public one reads none."""
        original = request._request.authz_original
        outcome: Outcome = request.tenant.routes.match(original.method, original.target)
        request._request.authz_outcome = outcome
        if outcome.route is None:
            raise RouteRefused(outcome.reason, code=outcome.code)
        request.route = outcome.route
        if not outcome.route.public:
            super().perform_authentication(request)

    def endpoint_key_for(self, method: str) -> str:
        """The metrics' endpoint label: the route template (label slots bound the series)."""
        outcome = getattr(self.request._request, "authz_outcome", None)
        if outcome is None or outcome.route is None:
            return NO_ROUTE_LABEL
        return route_labels.label(outcome.route.template)

    def decide(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Allowed: 200, no body, the identity headers."""
        response = Response(status=status.HTTP_200_OK)
        for name, value in identity_headers(request).items():
            response[name] = header_value(value)
        return response

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        """The mixin's, and for nginx (whose auth_request drops bodies) the body in a header."""
        response = super().finalize_response(request, response, *args, **kwargs)
        wants = request.META.get("HTTP_X_AUTHZ_BODY_IN_HEADER") == "1"
        if wants and response.status_code >= 400 and isinstance(response.data, dict):
            body = json.dumps(response.data, ensure_ascii=True, separators=(",", ":"))
            response["X-Authz-Body"] = body
        return response

    def http_method_not_allowed(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Methods Django's views do not name (PROPFIND, ...) are decided too."""
        return self.decide(request, *args, **kwargs)

    get = post = put = patch = delete = head = options = trace = decide


def identity_headers(request: Request) -> dict[str, str]:
    """Who called, for the upstream: tenant and route, and for a token its subject and more."""
    headers = {"X-Authz-Tenant": request.tenant.slug, "X-Authz-Route": request.route.template}
    principal = None if request.route.public else request.auth
    if isinstance(principal, Principal):
        headers["X-Authz-Subject"] = principal.subject
        headers["X-Authz-Scopes"] = " ".join(sorted(principal.scopes))
        if principal.organization:
            headers["X-Authz-Organization"] = principal.organization
        client = principal.claims.payload.get("azp") or principal.claims.payload.get("client_id")
        if isinstance(client, str):
            headers["X-Authz-Client-Id"] = client
    return headers


def header_value(text: str) -> str:
    """Printable ASCII as it is; every other character (and "%") percent-encoded as UTF-8."""
    return quote(text, safe=HEADER_SAFE, encoding="utf-8", errors="surrogatepass")


_decision_view = DecisionView.as_view()


@csrf_exempt
def decision(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """The endpoint for the proxy; for anyone else, the 404 of a URL that does not exist."""
    if not from_the_proxy(request):
        raise Http404()
    request.authz_decision = True
    return _decision_view(request)
