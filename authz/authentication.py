"""DRF authentication: a tenant's RS256 bearer token becomes a stateless principal."""

from dataclasses import dataclass
from typing import Any

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from authz.errors import InvalidRequest, InvalidToken, IssuerUnavailable
from authz.keys import KeySetUnavailable, key_cache
from authz.policy import IssuerPolicy
from authz.token_cache import verified_tokens
from authz.tokens import Claims, SigningKey, TokenError, verify_token
from authz.users import provisioned_user

BEARER_SCHEME = b"bearer"


@dataclass(frozen=True)
class Principal:
    """Who called: a token subject of one tenant, with its scopes and claims."""

    tenant: str
    claims: Claims
    user: Any = None

    is_authenticated = True
    is_anonymous = False

    @property
    def subject(self) -> str:
        """The token's ``sub``."""
        return self.claims.subject

    @property
    def scopes(self) -> frozenset[str]:
        """Scopes granted by the claims the tenant chose."""
        return self.claims.scopes


class TenantTokenAuthentication(BaseAuthentication):
    """Verifies ``Authorization: Bearer <token>`` against the resolved tenant's issuer policy.

    The tenant is whatever the resolver put on ``request.tenant``: anything with a ``slug``, a
    ``policy`` and ``provision_users``; this module does not know where tenants come from.
    """

    def authenticate(self, request: Request) -> tuple[Any, Principal] | None:
        """Return (user, principal), None without a bearer header, or raise for a bad one."""
        token = self.bearer_token(request)
        if token is None:
            return None
        tenant = request.tenant
        claims = verified_tokens.get(token, tenant.policy) or self.verify(token, tenant.policy)
        user = provisioned_user(tenant.slug, claims.subject) if tenant.provision_users else None
        principal = Principal(tenant.slug, claims, user)
        return (user or principal), principal

    def verify(self, token: str, policy: IssuerPolicy) -> Claims:
        """Full verification; remembered so the same token skips it next time."""
        used: list[SigningKey] = []

        def key_for_kid(kid: str) -> SigningKey:
            used.append(key_cache.signing_key(policy.jwks_url, kid))
            return used[-1]

        try:
            claims = verify_token(token, policy, key_for_kid)
        except TokenError as exc:
            raise InvalidToken(exc.description, code=exc.code) from exc
        except KeySetUnavailable as exc:
            raise IssuerUnavailable(retry_after=exc.retry_after) from exc
        verified_tokens.put(token, policy, used[-1], claims)
        return claims

    def bearer_token(self, request: Request) -> str | None:
        """The token of a bearer header; None for another scheme; 400 when malformed."""
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != BEARER_SCHEME:
            return None
        if len(parts) != 2:
            raise InvalidRequest()
        try:
            return parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise InvalidRequest() from None

    def authenticate_header(self, request: Request) -> str:
        """The bare challenge for a request that sent no token."""
        tenant = getattr(request, "tenant", None)
        return f'Bearer realm="{tenant.slug if tenant else "api"}"'
