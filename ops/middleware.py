"""Health probes and metrics answered first; one structured log line and count per API request."""

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse, JsonResponse

from ops.health import readiness
from ops.metrics import METRICS_PATH, count_request, metrics_response
from tenants.traffic import REPLAY, traffic_counter

logger = logging.getLogger(__name__)

API_PATH = re.compile(r"^(/t/[^/]+)?/api/")
DECISION_PATH = re.compile(r"^/authz/decision(/|$)")
# What a token authenticates: the tenants' endpoints and the forward-auth decisions. Neither has
# a browser session, so sessions, logins and messages are skipped there. The API's docs
# and schema are pages a browser opens: they keep everything.
TOKEN_PATH = re.compile(r"^(?:(?:/t/[^/]+)?/api/(?!docs$|schema$)|/authz/decision(?:/|$))")


class WebOnly:
    """Mixed into a Django middleware: it runs for every path but the API's (TOKEN_PATH)."""

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Straight on for an API request; the middleware's own work for anything else."""
        if TOKEN_PATH.match(request.path_info):
            return self.get_response(request)  # type: ignore[attr-defined]
        return super().__call__(request)  # type: ignore[misc]


class WebSessionMiddleware(WebOnly, SessionMiddleware):
    """Sessions, for the admin and its login only."""


class WebAuthenticationMiddleware(WebOnly, AuthenticationMiddleware):
    """The session's user, for the admin only (the API's principal comes from its token)."""


class WebMessageMiddleware(WebOnly, MessageMiddleware):
    """The admin's flash messages."""


class HealthProbeMiddleware:
    """``/healthz``, ``/readyz`` and ``/metrics``, answered before host checks, HTTPS redirects
    and sessions.

    Probes and scrapers reach a container by its address over plain HTTP, from inside or beside
    it: they carry no tenant hostname and no ``X-Forwarded-Proto``, and must not be redirected.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Answer a probe here; pass anything else on."""
        if request.path_info == "/healthz":
            return JsonResponse({"status": "ok"})
        if request.path_info == "/readyz":
            return readiness_response()
        if request.path_info == METRICS_PATH:
            return metrics_response(request) or self.get_response(request)
        return self.get_response(request)


def readiness_response() -> JsonResponse:
    """200 when every configured dependency answers, else 503 naming the ones that did not."""
    checks = readiness()
    failed = [name for name, state in checks.items() if state == "unreachable"]
    body: dict[str, Any] = {"status": "unavailable" if failed else "ready", "checks": checks}
    if failed:
        body["failed"] = failed
    response = JsonResponse(body, status=503 if failed else 200)
    # An expected answer, logged by the check that failed: Django need not log it as an error.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


class RequestLogMiddleware:
    """One line and one count per API request: tenant, endpoint, status, error code (and, in the
    line only, method, path, latency and subject).

    Never the query string or a header: either may carry an access token.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Time the request and log it, if it is an API request."""
        if not API_PATH.match(request.path_info) and not DECISION_PATH.match(request.path_info):
            return self.get_response(request)
        started = time.perf_counter()
        response = self.get_response(request)
        if not API_PATH.match(request.path_info) and not hasattr(request, "authz_decision"):
            return response  # the decision endpoint is unknown to whoever lacks the secret
        fields = request_fields(request, response, time.perf_counter() - started)
        count_request(
            fields["tenant"],
            endpoint_of(request, response),
            response.status_code,
            fields["error_code"],
        )
        if fields["tenant"]:
            code = traffic_code(request, response, fields["error_code"])
            traffic_counter.record(fields["tenant"], response.status_code, code)
        level = logging.WARNING if response.status_code >= 500 else logging.INFO
        message = "%(method)s %(path)s %(status)s"
        logger.log(level, message, fields, extra={"event": "api_request", **fields})
        return response


def request_fields(request: HttpRequest, response: HttpResponse, seconds: float) -> dict[str, Any]:
    """The logged fields; tenant and error code come from DRF's request and response data (a
    decision's own answer leaves its tenant on the Django request)."""
    drf_request = getattr(response, "renderer_context", {}).get("request", request)
    tenant = getattr(drf_request, "tenant", None)
    # DRF copies the authenticated principal onto the Django request; reading it is free.
    principal = getattr(request, "auth", None)
    data = getattr(response, "data", None)
    error = data.get("code") if isinstance(data, dict) and response.status_code >= 400 else None
    # A forward-auth decision logs the request it decided on.
    original = getattr(request, "authz_original", request)
    return {
        "tenant": getattr(tenant, "slug", None),
        "method": original.method,
        "path": original.path,
        "status": response.status_code,
        "latency_ms": round(seconds * 1000, 1),
        "error_code": error,
        "subject": getattr(principal, "subject", None),
    }


def endpoint_of(request: HttpRequest, response: HttpResponse) -> str:
    """A decision's route label; the endpoint key of the view and method (a scope rule's key);
    else the route's name."""
    decided = getattr(request, "authz_endpoint", None)
    if decided is not None:
        return decided
    view = getattr(response, "renderer_context", {}).get("view")
    key_for = getattr(view, "endpoint_key_for", None)
    key = key_for(request.method) if key_for else None
    if key:
        return key
    match = getattr(request, "resolver_match", None)
    return (match and match.url_name) or "unmatched"


def traffic_code(
    request: HttpRequest, response: HttpResponse, error_code: str | None
) -> str | None:
    """The error code the tenant page counts: the API's, but a replayed DPoP proof apart."""
    drf_request = getattr(response, "renderer_context", {}).get("request", request)
    return REPLAY if getattr(drf_request, "dpop_replayed", False) else error_code
