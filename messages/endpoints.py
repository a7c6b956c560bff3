"""Endpoint keys of the messages API and the scopes they demand unless a tenant says otherwise."""

from authz.endpoints import register_endpoint

PRIVATE = register_endpoint(
    "messages:private", (), "GET /api/private: any valid token of the tenant"
)
PRIVATE_SCOPED = register_endpoint(
    "messages:private-scoped", ("read:messages",), "GET /api/private-scoped"
)
