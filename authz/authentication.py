"""DRF authentication: a tenant's access token, Bearer or DPoP-bound, becomes a principal."""

import time
from dataclasses import dataclass
from typing import Any

from rest_framework import HTTP_HEADER_ENCODING
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from authz import dpop, steps
from authz.challenges import challenges
from authz.conf import authz_settings
from authz.errors import (
    InvalidDPoPProof,
    InvalidRequest,
    InvalidToken,
    IssuerUnavailable,
    ReplayCheckUnavailable,
    UseDPoPNonce,
)
from authz.keys import KeySetUnavailable, key_cache
from authz.metrics import TOKEN_CACHE, VERIFICATION
from authz.policy import DPOP_DISABLED, DPOP_REQUIRED, IssuerPolicy, TrustedIssuers
from authz.token_cache import refused_tokens, token_digest, verified_tokens
from authz.tokens import (
    Claims,
    InvalidIssuer,
    SigningKey,
    TokenError,
    read_token,
    verify_read,
)
from authz.users import provisioned_user

BEARER, DPOP = "Bearer", "DPoP"
# Label lookups cost more than the counting itself: bound once.
TOKEN_CACHE_HIT = TOKEN_CACHE.labels("hit")
TOKEN_CACHE_REFUSED_HIT = TOKEN_CACHE.labels("refused_hit")
TOKEN_CACHE_MISS = TOKEN_CACHE.labels("miss")
VERIFIED_CACHED = VERIFICATION.labels("cached")
VERIFIED_FRESH = VERIFICATION.labels("fresh")
SCHEMES = {"bearer": BEARER, "dpop": DPOP}  # scheme names are case-insensitive (RFC 9110)


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

    @property
    def organization(self) -> str | None:
        """The Auth0 organization (``org_id``) the token was issued for, if any."""
        organization = self.claims.payload.get("org_id")
        return organization if isinstance(organization, str) else None


class TenantTokenAuthentication(BaseAuthentication):
    """Verifies ``Authorization: Bearer <token>`` or ``DPoP <token>`` with its ``DPoP`` proof.

    The tenant is whatever the resolver put on ``request.tenant``: anything with a ``slug``,
    a ``policy`` (its first issuer's: schemes, DPoP), ``issuers`` (every issuer it lists, a
    ``TrustedIssuers``) and ``provision_users``; this module does not know where tenants come
    from. The scheme used is left on ``request.authorization_scheme`` so the error handler
    answers with the right challenge, a tenant that issues DPoP nonces gets
    ``request.dpop_nonce`` set, and a replayed proof sets ``request.dpop_replayed`` (for the
    traffic counts). A proof names the request that ``request_target`` gives. The token
    debugger sets ``request.authz_dry_run``: a proof is then looked up but not recorded, and no
    user is provisioned; everything else runs as for the API.
    """

    def authenticate(self, request: Request) -> tuple[Any, Principal] | None:
        """Return (user, principal), None without a credential, or raise for a bad one."""
        credential = self.credential(request)
        if credential is None:
            return None
        scheme, token = credential
        tenant = request.tenant
        policy = tenant.policy
        self.check_scheme(scheme, policy)
        claims = self.claims_of(token, tenant.issuers)
        bound_to = confirmation_key(claims)
        if scheme == BEARER and bound_to is not None:
            raise InvalidToken(
                "The access token is bound to a DPoP key: send it as DPoP with a proof.",
                code="dpop_bound_token",
            )
        if scheme == DPOP:
            record = not dry_run(request)
            self.check_proof(request, token, tenant.slug, policy, bound_to, record=record)
        provision = tenant.provision_users and not dry_run(request)
        user = provisioned_user(tenant.slug, claims.subject) if provision else None
        principal = Principal(tenant.slug, claims, user)
        return (user or principal), principal

    def credential(self, request: Request) -> tuple[str, str] | None:
        """(scheme, token) of a Bearer or DPoP header; None for another; 400 when malformed."""
        # DRF's get_authorization_header, from META: request.headers would copy every header.
        # Bytes, as DRF splits them: only ASCII whitespace separates (str.split takes U+00A0).
        parts = request.META.get("HTTP_AUTHORIZATION", "").encode(HTTP_HEADER_ENCODING).split()
        scheme = SCHEMES.get(parts[0].decode("latin-1").lower()) if parts else None
        if scheme is None:
            return None
        request.authorization_scheme = scheme
        if len(parts) == 2 and parts[1].isascii():
            return scheme, parts[1].decode("ascii")
        raise InvalidRequest(f"The Authorization header must be: {scheme} <access token>.")

    def check_scheme(self, scheme: str, policy: IssuerPolicy) -> None:
        """Refuse the scheme the tenant does not take, before any token work."""
        if scheme == DPOP and policy.dpop == DPOP_DISABLED:
            raise InvalidToken(
                "This API does not accept DPoP: send the access token as Bearer.",
                code="dpop_not_accepted",
            )
        if scheme == BEARER and policy.dpop == DPOP_REQUIRED:
            raise InvalidToken(
                "This API accepts DPoP-bound access tokens only, each with a DPoP proof.",
                code="dpop_required",
            )

    def check_proof(
        self,
        request: Request,
        token: str,
        realm: str,
        policy: IssuerPolicy,
        bound_to: str | None,
        record: bool = True,
    ) -> None:
        """The one DPoP proof must describe this request and come from the token's key, once."""
        if bound_to is None:
            raise InvalidToken(
                "The access token is not bound to a DPoP key (no cnf.jkt): send it as Bearer.",
                code="token_not_bound",
            )
        proofs = request.META.get("HTTP_DPOP", "")
        if not proofs or "," in proofs or proofs != proofs.strip():
            raise InvalidDPoPProof("Send exactly one DPoP proof in one DPoP header.")
        method, url = request_target(request)
        context = dpop.ProofContext(method, url, token, realm)
        if policy.dpop_nonce:
            request.dpop_nonce = nonce = dpop.current_nonce(realm)
        try:
            dpop.check_proof(proofs, context, policy, bound_to, record)
        except dpop.NonceRequired as exc:
            raise UseDPoPNonce(exc.description, nonce) from exc  # raised only with nonces on
        except dpop.ProofError as exc:
            request.dpop_replayed = isinstance(exc, dpop.ProofReplayed)
            raise InvalidDPoPProof(exc.description, code=exc.code) from exc
        except dpop.ReplayCheckUnavailable as exc:
            raise ReplayCheckUnavailable() from exc

    def claims_of(self, token: str, trust: TrustedIssuers) -> Claims:
        """The token's claims: remembered, refused as remembered, or verified now."""
        started = time.perf_counter()
        digest = token_digest(token)
        claims = verified_tokens.get(token, trust, digest)
        if claims is not None:
            TOKEN_CACHE_HIT.inc()
            VERIFIED_CACHED.observe(time.perf_counter() - started)
            return claims
        refusal = refused_tokens.get(trust, digest)
        if refusal is not None:
            TOKEN_CACHE_REFUSED_HIT.inc()
            VERIFIED_CACHED.observe(time.perf_counter() - started)
            raise InvalidToken(refusal.description, code=refusal.code, check=refusal.check)
        TOKEN_CACHE_MISS.inc()
        try:
            return self.verify(token, trust, digest)
        finally:
            VERIFIED_FRESH.observe(time.perf_counter() - started)

    def verify(self, token: str, trust: TrustedIssuers, digest: bytes) -> Claims:
        """Full verification against the issuer the token names, if the tenant lists it;
        remembered, pass or lasting failure, so a repeat skips it."""
        used: list[SigningKey] = []
        policy: IssuerPolicy | None = None

        def key_for_kid(kid: str) -> SigningKey:
            used.append(key_cache.signing_key(policy.jwks_url, kid))
            return used[-1]

        try:
            unverified = read_token(token)
            policy = issuer_policy(unverified.issuer, trust)
            claims = verify_read(unverified, policy, key_for_kid)
        except TokenError as exc:
            if exc.lasting and len(token) <= authz_settings.MAX_TOKEN_BYTES:
                refused_tokens.put(trust, policy, digest, used[-1] if used else None, exc)
            raise InvalidToken(exc.description, code=exc.code, check=exc.check) from exc
        except KeySetUnavailable as exc:
            raise IssuerUnavailable(retry_after=exc.retry_after) from exc
        verified_tokens.put(token, trust, policy, used[-1], claims)
        return claims

    def authenticate_header(self, request: Request) -> str:
        """The bare challenges for a request that sent no token."""
        tenant = getattr(request, "tenant", None)
        return challenges(tenant, None, {}) if tenant else 'Bearer realm="api"'


def dry_run(request: Request) -> bool:
    """Whether the token debugger asks (``authz_dry_run``): nothing recorded, nobody provisioned.
    Read only where it matters: on a DRF request, a missing attribute costs two exceptions."""
    return getattr(request, "authz_dry_run", False)


def issuer_policy(issuer: object, trust: TrustedIssuers) -> IssuerPolicy:
    """The policy of the listed issuer a token names: one dictionary lookup, never a URL taken
    from the token. No ``iss`` at all goes to the first issuer's checks, which refuse it."""
    policy = trust.policy_for(issuer)
    if policy is None and issuer is not None:
        raise InvalidIssuer()
    return policy or trust.primary


def request_target(request: Request) -> tuple[str, str]:
    """The method and URL (no query) a DPoP proof must name: those the client addressed.

    A forward-auth decision puts the original request's on ``request.authz_target``; the
    request itself is the target otherwise.
    """
    target = getattr(request, "authz_target", None)
    return target or (request.method, request.build_absolute_uri(request.path))


def confirmation_key(claims: Claims) -> str | None:
    """The thumbprint a token is bound to (``cnf.jkt``, RFC 9449 section 6), if any."""
    confirmation = claims.payload.get("cnf")
    if confirmation is None:
        return None
    jkt = confirmation.get("jkt") if isinstance(confirmation, dict) else None
    if not isinstance(jkt, str) or not jkt:
        raise InvalidToken(
            "The access token confirmation (cnf) must hold a key thumbprint (jkt).",
            code="invalid_claims",
            check=steps.BINDING,
        )
    return jkt
