"""Checking a tenant's issuer on demand, for operators: discovery, then the key set."""

import logging
from dataclasses import dataclass, field
from typing import Protocol

from authz.jwks import JWKSError, fetch_document, fetch_jwks, load_document, quoted

logger = logging.getLogger(__name__)


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
    try:
        _check_discovery(tenant, report)
        _check_key_set(tenant.jwks_url, report)
    except Exception:  # whatever an issuer sends, the operator gets a sentence, never a 500
        logger.exception("Check issuer of %s stopped on an unexpected error", tenant.issuer)
        report.problems.append("The check stopped on an unexpected error; the log has details.")
    return report


def _check_key_set(jwks_url: str, report: IssuerReport) -> None:
    try:
        key_set = fetch_jwks(jwks_url)
    except JWKSError as exc:
        report.problems.append(f"Key set at {jwks_url}: {exc}")
        return
    kids = ", ".join(
        f"{quoted(key['kid'])} ({quoted(key.get('alg', key['kty']))})" for key in key_set.keys
    )
    report.facts.append(f"Key set at {jwks_url}: {len(key_set.keys)} key(s): {kids}.")
    report.problems.extend(f"Key set at {jwks_url}: {reason}" for reason in key_set.skipped)
    if not key_set.keys:
        report.problems.append(
            f"Key set at {jwks_url} has no usable signing key: every token is refused."
        )


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
    published, keys_at = quoted(document.get("issuer"), 200), quoted(document.get("jwks_uri"), 200)
    if document.get("issuer") == tenant.issuer:
        report.facts.append(f"Discovery issuer matches: {tenant.issuer}")
    else:
        report.problems.append(
            f"Discovery says the issuer is {published}, but this tenant expects "
            f"{tenant.issuer!r}: tokens would be refused. Fix the domain or the issuer override."
        )
    if document.get("jwks_uri") not in (None, tenant.jwks_url):
        report.problems.append(
            f"Discovery publishes keys at {keys_at}, but this tenant fetches "
            f"{tenant.jwks_url}. Set the JWKS URL override to match."
        )
