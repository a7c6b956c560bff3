"""Checking a tenant's issuer on demand, for operators: discovery, then the key set."""

from dataclasses import dataclass, field
from typing import Protocol

from authz.jwks import JWKSError, fetch_document, fetch_jwks, load_document


class IssuerAddresses(Protocol):
    """Anything that knows a tenant's issuer and JWKS URL (a Tenant row, a TenantConfig)."""

    issuer: str
    jwks_url: str


@dataclass
class IssuerReport:
    """What a live check of an issuer found: facts, and problems in plain sentences."""

    facts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


def check_issuer(tenant: IssuerAddresses) -> IssuerReport:
    """Fetch the issuer's discovery document and key set now, and compare with the tenant."""
    report = IssuerReport()
    _check_discovery(tenant, report)
    try:
        keys = fetch_jwks(tenant.jwks_url)
    except JWKSError as exc:
        report.problems.append(f"Key set at {tenant.jwks_url}: {exc}")
    else:
        kids = ", ".join(f"{key['kid']} ({key.get('alg', key['kty'])})" for key in keys)
        report.facts.append(f"Key set at {tenant.jwks_url}: {len(keys)} key(s): {kids}.")
        if not keys:
            report.problems.append(
                f"Key set at {tenant.jwks_url} has no usable signing key: every token is refused."
            )
    return report


def _check_discovery(tenant: IssuerAddresses, report: IssuerReport) -> None:
    url = f"{tenant.issuer.rstrip('/')}/.well-known/openid-configuration"
    try:
        document = load_document(fetch_document(url), "discovery document")
    except JWKSError as exc:
        report.problems.append(f"Discovery at {url}: {exc}")
        return
    if not isinstance(document, dict):
        report.problems.append(f"Discovery at {url} is not a JSON object.")
        return
    if document.get("issuer") == tenant.issuer:
        report.facts.append(f"Discovery issuer matches: {tenant.issuer}")
    else:
        report.problems.append(
            f"Discovery says the issuer is {document.get('issuer')!r}, but this tenant expects "
            f"{tenant.issuer!r}: tokens would be refused. Fix the domain or the issuer override."
        )
    if document.get("jwks_uri") not in (None, tenant.jwks_url):
        report.problems.append(
            f"Discovery publishes keys at {document['jwks_uri']}, but this tenant fetches "
            f"{tenant.jwks_url}. Set the JWKS URL override to match."
        )
