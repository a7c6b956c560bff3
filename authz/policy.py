"""What the verification core needs to know about an issuer: the policy tokens are checked against.

The tenant directory builds one policy per distinct set of values and shares it, so tenants that
trust the same issuer in the same way hold one object; the verified-token cache relies on that
identity (an edited tenant gets a new policy, and its earlier verifications no longer count).
"""

import weakref
from dataclasses import dataclass, fields
from typing import Any

AUTH0_PROFILE = "auth0"
RFC9068_PROFILE = "rfc9068"
TOKEN_PROFILES = (AUTH0_PROFILE, RFC9068_PROFILE)
DPOP_DISABLED, DPOP_ALLOWED, DPOP_REQUIRED = "disabled", "allowed", "required"
DPOP_MODES = (DPOP_DISABLED, DPOP_ALLOWED, DPOP_REQUIRED)


@dataclass(frozen=True, slots=True, eq=False, weakref_slot=True)
class IssuerPolicy:
    """Issuer, audiences, algorithms, leeway, scope claims, token profile, organizations, DPoP."""

    issuer: str
    jwks_url: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...]
    leeway: int
    scope_claims: str
    token_profile: str = AUTH0_PROFILE
    # Auth0 organization ids a token's org_id must be one of; empty: org_id is not checked.
    organizations: frozenset[str] = frozenset()
    # DPoP (RFC 9449): whether the scheme is refused, taken beside Bearer, or the only one taken;
    # the proof algorithms accepted; whether proofs must carry a nonce this API issued.
    dpop: str = DPOP_ALLOWED
    dpop_algorithms: tuple[str, ...] = ("ES256",)
    dpop_nonce: bool = False

    @property
    def schemes(self) -> tuple[str, ...]:
        """The authorization schemes taken, in the order the challenges name them."""
        return {DPOP_DISABLED: ("Bearer",), DPOP_REQUIRED: ("DPoP",)}.get(
            self.dpop, ("Bearer", "DPoP")
        )

    def values(self) -> dict[str, Any]:
        """The fields by name, as ``shared_policy`` takes them."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def identity(self) -> tuple:
        """The values that make two policies the same."""
        return tuple(self.values().values())


_shared: "weakref.WeakValueDictionary[tuple, IssuerPolicy]" = weakref.WeakValueDictionary()


def shared_policy(**values: Any) -> IssuerPolicy:
    """The one live policy with these values, created when none is held."""
    candidate = IssuerPolicy(**values)
    return _shared.setdefault(candidate.identity(), candidate)


@dataclass(frozen=True, slots=True, eq=False, weakref_slot=True)
class TrustedIssuers:
    """A tenant's issuer policies, one per issuer it lists, found by a token's exact ``iss``.

    The policies differ only in issuer and JWKS URL; the first listed speaks for the tenant
    where one policy is needed (schemes, DPoP). Shared like policies, so its identity changes
    whenever any issuer is added, removed or edited: the token caches rely on that.
    """

    policies: tuple[IssuerPolicy, ...]
    by_issuer: dict[str, IssuerPolicy]

    @property
    def primary(self) -> IssuerPolicy:
        """The first listed issuer's policy."""
        return self.policies[0]

    def policy_for(self, issuer: object) -> IssuerPolicy | None:
        """The policy of the issuer a token names, if listed: one dictionary lookup."""
        return self.by_issuer.get(issuer) if isinstance(issuer, str) else None


_shared_issuers: "weakref.WeakValueDictionary[tuple, TrustedIssuers]" = (
    weakref.WeakValueDictionary()
)


def shared_issuers(policies: tuple[IssuerPolicy, ...]) -> TrustedIssuers:
    """The one live ``TrustedIssuers`` of these policies (shared ones), in this order."""
    candidate = TrustedIssuers(policies, {policy.issuer: policy for policy in policies})
    identity = tuple(policy.identity() for policy in policies)
    return _shared_issuers.setdefault(identity, candidate)


def trusting_one(policy: IssuerPolicy) -> TrustedIssuers:
    """A tenant that lists one issuer, this policy's."""
    return shared_issuers((policy,))
