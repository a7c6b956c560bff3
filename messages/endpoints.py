"""Endpoint keys of the messages API and the scopes they demand unless a tenant says otherwise."""

from authz.endpoints import register_endpoint

PRIVATE = register_endpoint(
    "messages:private", (), "GET /api/private: any valid token of the tenant"
)
PRIVATE_SCOPED = register_endpoint(
    "messages:private-scoped", ("read:messages",), "GET /api/private-scoped"
)
LIST = register_endpoint("messages:list", ("read:messages",), "GET /api/messages")
CREATE = register_endpoint("messages:create", ("write:messages",), "POST /api/messages")
READ = register_endpoint("messages:read", ("read:messages",), "GET /api/messages/<id>")
DELETE = register_endpoint("messages:delete", ("delete:messages",), "DELETE /api/messages/<id>")
