"""WWW-Authenticate values: RFC 6750 Bearer and RFC 9449 DPoP challenges for a tenant."""

import re
from typing import Any

# RFC 6750 section 3: error_description and scope may not carry '"' or backslash.
UNQUOTABLE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def challenge(scheme: str, **params: str) -> str:
    """One challenge (``Bearer realm="acme"``) with quoted, sanitized parameters."""
    pairs = ", ".join(f'{name}="{UNQUOTABLE.sub("", value)}"' for name, value in params.items())
    return f"{scheme} {pairs}" if pairs else scheme


def bearer_challenge(realm: str, **params: str) -> str:
    """A ``WWW-Authenticate: Bearer`` value with quoted, sanitized parameters."""
    return challenge("Bearer", realm=realm, **params)


def challenges(tenant: Any, scheme_used: str | None, params: dict[str, str]) -> str:
    """Every scheme the tenant takes, the error ``params`` on the one the client used.

    Bearer carries the tenant as its realm; DPoP names the proof algorithms (RFC 9449 section
    7.1). A client that used a scheme the tenant does not take gets the error on the other one.
    """
    policy = tenant.policy
    offered = policy.schemes
    target = scheme_used if scheme_used in offered else offered[0]
    values = []
    for scheme in offered:
        own = params if scheme == target else {}
        if scheme == "Bearer":
            values.append(bearer_challenge(tenant.slug, **own))
        else:
            values.append(challenge("DPoP", **own, algs=" ".join(policy.dpop_algorithms)))
    return ", ".join(values)
