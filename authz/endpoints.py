"""The registry of protected endpoints: a stable key and the scopes it demands by default."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoint:
    """A protected endpoint that tenants can attach a scope rule to."""

    key: str
    default_scopes: tuple[str, ...]
    description: str


_registry: dict[str, Endpoint] = {}


def register_endpoint(key: str, default_scopes: tuple[str, ...], description: str) -> Endpoint:
    """Register an endpoint key once; re-registering the same definition is harmless."""
    endpoint = Endpoint(key, tuple(default_scopes), description)
    if _registry.setdefault(key, endpoint) != endpoint:
        raise ValueError(f"Endpoint {key!r} is already registered with another definition.")
    return endpoint


def get_endpoint(key: str) -> Endpoint:
    """Return the registered endpoint; KeyError for an unknown key."""
    return _registry[key]


def all_endpoints() -> list[Endpoint]:
    """Return every registered endpoint, sorted by key."""
    return sorted(_registry.values(), key=lambda endpoint: endpoint.key)
