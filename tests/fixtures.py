"""Keys, tenants and token factories shared by the test modules."""

import time
from dataclasses import dataclass, field
from typing import Any

from authz.jwks import read_record
from devissuer.issuer import DevIssuerServer
from tenants.config_io import import_tenants
from tenants.models import Tenant


@dataclass
class TokenFactory:
    """Mints tokens as one development issuer, with any claim or header overridden."""

    server: DevIssuerServer
    name: str
    audience: str
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def issuer(self) -> str:
        """The ``iss`` this issuer puts in its tokens."""
        return self.server.url_for(self.name)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Valid claims for this issuer and audience, then the overrides (None removes)."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": "auth0|user-1",
            "aud": self.audience,
            "iat": now,
            "exp": now + 300,
            **self.defaults,
            **overrides,
        }
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, headers: dict[str, Any] | None = None, **overrides: Any) -> str:
        """A signed token with the issuer's current key."""
        return self.server.store.sign(self.name, self.claims(**overrides), headers=headers)


def create_tenant(
    server: DevIssuerServer, slug: str, issuer_name: str | None = None, **fields: Any
) -> Tenant:
    """Create a tenant bound to the development issuer (or to the ``issuers`` given), through
    the JSON import path."""
    name = issuer_name or slug
    item = {
        "slug": slug,
        "name": slug.title(),
        **({} if "issuers" in fields else {"issuer": server.url_for(name)}),
        "audiences": [f"https://api.{slug}.test"],
        "hosts": [f"{slug}.localhost"],
        **fields,
    }
    import_tenants({"tenants": [item]})
    return Tenant.objects.get(slug=slug)


def jwks_url_of(slug: str) -> str:
    """The JWKS URL a tenant's key set is stored and fetched under, read from its row."""
    return Tenant.objects.get(slug=slug).jwks_url


def kids_of(jwks_url: str) -> set[str]:
    """The kids in the shared record of a JWKS URL (empty when there is none)."""
    record = read_record(jwks_url)
    return {key["kid"] for key in record.keys} if record else set()


def bearer(token: str) -> dict[str, str]:
    """Django test client headers for a bearer token."""
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}
