"""RFC 6750 error responses: one place that turns every API failure into JSON and a challenge."""

import re
from typing import Any

from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from authz.errors import InsufficientScope, InvalidRequest, InvalidToken, IssuerUnavailable

# RFC 6750 section 3: error_description and scope may not carry '"' or backslash.
UNQUOTABLE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def bearer_challenge(realm: str, **params: str) -> str:
    """A ``WWW-Authenticate: Bearer`` value with quoted, sanitized parameters."""
    pairs = {"realm": realm, **params}
    return "Bearer " + ", ".join(
        f'{name}="{UNQUOTABLE.sub("", value)}"' for name, value in pairs.items()
    )


def _challenge_params(exc: Exception) -> dict[str, str] | None:
    """The RFC 6750 parameters for an exception, or None if it carries no challenge."""
    if isinstance(exc, InsufficientScope):
        return {"error": exc.bearer_error, "scope": " ".join(exc.required_scopes)}
    if isinstance(exc, InvalidToken | InvalidRequest):
        return {"error": exc.bearer_error, "error_description": str(exc.detail)}
    if isinstance(exc, exceptions.NotAuthenticated):
        return {}
    return None


def _body(exc: exceptions.APIException) -> dict[str, Any]:
    if isinstance(exc.detail, dict | list):
        return {"message": "Invalid input.", "code": "invalid", "errors": exc.detail}
    return {"message": str(exc.detail), "code": exc.detail.code}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, with the quickstart's ``{"message"}`` body and RFC 6750 challenges."""
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    response.data = _body(exc)
    params = _challenge_params(exc)
    tenant = getattr(context.get("request"), "tenant", None)
    if params is not None and tenant is not None:
        response["WWW-Authenticate"] = bearer_challenge(tenant.slug, **params)
    if isinstance(exc, IssuerUnavailable):
        response["Retry-After"] = str(exc.retry_after_seconds)
    return response
