"""RFC 6750 and RFC 9449 error responses: every API failure as JSON with its challenges."""

from typing import Any

from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from authz.challenges import challenges
from authz.errors import (
    InsufficientScope,
    InvalidDPoPProof,
    InvalidRequest,
    InvalidToken,
    IssuerUnavailable,
    ReplayCheckUnavailable,
    UseDPoPNonce,
)


def _challenge_params(exc: Exception) -> dict[str, str] | None:
    """The error parameters for an exception, or None if it carries no challenge."""
    if isinstance(exc, InsufficientScope):
        # RFC 6750's scope is one set: of alternatives, the first (the body lists them all).
        return {"error": exc.bearer_error, "scope": " ".join(exc.required_scopes)}
    if isinstance(exc, InvalidToken | InvalidRequest | InvalidDPoPProof):
        return {"error": exc.bearer_error, "error_description": str(exc.detail)}
    if isinstance(exc, exceptions.NotAuthenticated):
        return {}
    return None


def _body(exc: exceptions.APIException) -> dict[str, Any]:
    if isinstance(exc.detail, dict | list):
        return {"message": "Invalid input.", "code": "invalid", "errors": exc.detail}
    return {"message": str(exc.detail), "code": exc.detail.code}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, with the quickstart's ``{"message"}`` body and the right challenges."""
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    response.data = _body(exc)
    if isinstance(exc, InsufficientScope) and exc.alternatives:
        response.data["scopes"] = list(exc.alternatives)
    params = _challenge_params(exc)
    request = context.get("request")
    tenant = getattr(request, "tenant", None)
    if params is not None and tenant is not None:
        scheme = getattr(request, "authorization_scheme", None)
        response["WWW-Authenticate"] = challenges(tenant, scheme, params)
    if isinstance(exc, UseDPoPNonce):
        response["DPoP-Nonce"] = exc.nonce
    if isinstance(exc, IssuerUnavailable | ReplayCheckUnavailable):
        response["Retry-After"] = str(exc.retry_after_seconds)
    return response
