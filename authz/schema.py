"""OpenAPI: the Bearer and DPoP schemes, and each operation's default scopes, from the registry."""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent

from authz.endpoints import get_endpoint

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "message": {"type": "string", "description": "A sentence for humans."},
        "code": {"type": "string", "description": "A stable machine code."},
        "errors": {"type": "object", "description": "Field errors, for invalid input."},
    },
    "required": ["message", "code"],
}
ERRORS_EVERYWHERE = {
    "404": "No tenant at this address (`tenant_not_found`), or no such row.",
    "406": "The Accept header admits no type this API answers with (`application/json`).",
    "429": "A rate limit of the tenant was reached (`rate_limited`): `Retry-After`, "
    "`RateLimit` and `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers) say when to retry.",
}
ERRORS_WITH_BODY = {"415": "The body is not `application/json`."}
ERRORS_WHEN_PROTECTED = {
    "400": "Malformed Authorization header or invalid input.",
    "401": "No token, or an invalid, expired or foreign token, or a bad DPoP proof "
    "(RFC 6750 and RFC 9449 `WWW-Authenticate`).",
    "403": "The token lacks a required scope (`insufficient_scope`).",
    "503": "The tenant's issuer is unreachable and no key is cached, or DPoP replays cannot "
    "be checked right now.",
}


class TenantTokenScheme(OpenApiAuthenticationExtension):
    """Documents TenantTokenAuthentication: a Bearer JWT, or (either one) a DPoP-bound JWT."""

    target_class = "authz.authentication.TenantTokenAuthentication"
    name = ["bearerAuth", "dpopAuth"]

    def get_security_requirement(self, auto_schema: AutoSchema) -> list[dict[str, list]]:
        """Either scheme, as the tenant's ``dpop`` mode allows (a list means OR)."""
        return [{"bearerAuth": []}, {"dpopAuth": []}]

    def get_security_definition(self, auto_schema: AutoSchema) -> list[dict[str, str]]:
        """Access tokens from the tenant's issuer, as Bearer or as DPoP with a proof."""
        return [
            {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "An access token minted by the tenant's issuer for its audience. "
                "A token bound to a key (cnf.jkt) is refused here: send it as DPoP.",
            },
            {
                "type": "http",
                "scheme": "dpop",  # OpenAPI 3.0 allows bearerFormat on bearer only
                "description": "`Authorization: DPoP <token>` with one `DPoP` proof header "
                "(RFC 9449): a token bound to the proof's key, for tenants whose dpop mode is "
                "allowed or required; the 401 challenge names the proof algorithms accepted.",
            },
        ]


class ScopedAutoSchema(AutoSchema):
    """Adds the scopes an operation requires by default to its description."""

    def _required_scopes(self) -> tuple[str, ...] | None:
        key_for = getattr(self.view, "endpoint_key_for", None)
        key = key_for(self.method) if key_for else None
        return get_endpoint(key).default_scopes if key else None

    def get_description(self) -> str:
        """The view's docstring, then its scope requirement."""
        scopes = self._required_scopes()
        if scopes is None:
            return super().get_description()
        needed = ", ".join(f"`{scope}`" for scope in scopes) or "none (any valid token)"
        return f"{super().get_description()}\n\nRequired scopes by default: {needed}."

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        """The operation, with ``x-required-scopes`` for client generators."""
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        scopes = self._required_scopes()
        errors = dict(ERRORS_EVERYWHERE)
        if scopes is not None:
            operation["x-required-scopes"] = list(scopes)
            errors.update(ERRORS_WHEN_PROTECTED)
        if "requestBody" in operation:
            errors.update(ERRORS_WITH_BODY)
        for status, description in errors.items():
            operation["responses"].setdefault(status, self._error_response(description))
        return operation

    def _error_response(self, description: str) -> dict[str, Any]:
        component = ResolvedComponent("Error", ResolvedComponent.SCHEMA, object="Error")
        component.schema = ERROR_SCHEMA
        self.registry.register_on_missing(component)
        return {
            "description": description,
            "content": {"application/json": {"schema": component.ref}},
        }


def host_paths_only(endpoints: list[tuple[Any, ...]], **kwargs: Any) -> list[tuple[Any, ...]]:
    """Document each operation once, at its /api/ path; /t/<slug>/ mirrors it."""
    return [endpoint for endpoint in endpoints if not endpoint[0].startswith("/t/")]
