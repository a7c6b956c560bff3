"""What the verification core needs to know about an issuer: the policy tokens are checked against.

The tenant directory builds one policy per distinct set of values and shares it, so tenants that
trust the same issuer in the same way hold one object; the verified-token cache relies on that
identity (an edited tenant gets a new policy, and its earlier verifications no longer count).
"""

import weakref
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, eq=False, weakref_slot=True)
class IssuerPolicy:
    """Issuer, audiences, algorithms, leeway and scope claims of one trust relationship."""

    issuer: str
    jwks_url: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...]
    leeway: int
    scope_claims: str

    def identity(self) -> tuple:
        """The values that make two policies the same."""
        return (
            self.issuer,
            self.jwks_url,
            self.audiences,
            self.algorithms,
            self.leeway,
            self.scope_claims,
        )


_shared: "weakref.WeakValueDictionary[tuple, IssuerPolicy]" = weakref.WeakValueDictionary()


def shared_policy(
    issuer: str,
    jwks_url: str,
    audiences: tuple[str, ...],
    algorithms: tuple[str, ...],
    leeway: int,
    scope_claims: str,
) -> IssuerPolicy:
    """The one live policy with these values, created when none is held."""
    candidate = IssuerPolicy(issuer, jwks_url, audiences, algorithms, leeway, scope_claims)
    return _shared.setdefault(candidate.identity(), candidate)
