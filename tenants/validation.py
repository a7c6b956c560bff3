"""Validators for operator input: issuer domains and URLs, hostnames, scopes, algorithms."""

import ipaddress
import re
import socket
from urllib.parse import SplitResult, urlsplit

from django.core.exceptions import ValidationError

from authz.conf import authz_settings
from tenants.routes import (
    MAX_ALTERNATIVE_LENGTH,
    MAX_ALTERNATIVES,
    TemplateError,
    parse_methods,
    parse_template,
)

ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
# A host (name, IPv4 or bracketed IPv6) and an optional port: nothing that changes the URL.
BARE_DOMAIN = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^/?#@\\\s:\[\]]*)(:[0-9]+)?")
HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
# Auth0 organization ids: org_ and letters or digits.
ORGANIZATION_ID = re.compile(r"^org_[A-Za-z0-9]{1,64}$")
MAX_ORGANIZATIONS = 1000
# Issuers of one tenant: a canonical and a custom domain, a migration or two; never a catalogue.
MAX_ISSUERS = 10


def validate_hostname(value: str) -> None:
    """Require a DNS hostname: dot-separated labels of letters, digits and hyphens."""
    if len(value) > 253 or not all(HOST_LABEL.match(label) for label in value.lower().split(".")):
        raise ValidationError(
            "Enter a hostname such as api.example.com: letters, digits, hyphens and dots only.",
            code="invalid_hostname",
        )


def _is_internal_address(host: str) -> bool:
    """Tell whether a host is an IP literal or a loopback name, which only development allows."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return True
    try:
        socket.inet_aton(host)  # also the short and numeric forms: 127.1, 2130706433, 0x7f.1
    except OSError:
        return False
    return True


def _validate_issuer_address(parts: SplitResult, code: str) -> None:
    """Apply the insecure-issuer policy to the host and port of a parsed address."""
    try:
        port = parts.port
    except ValueError as exc:
        raise ValidationError("The port is not a number.", code=code) from exc
    _validate_issuer_host(parts.hostname or "", port)


def _validate_issuer_host(host: str, port: int | None) -> None:
    if authz_settings.ALLOW_INSECURE_ISSUERS:
        if not _is_internal_address(host):
            validate_hostname(host)
        return
    if _is_internal_address(host):
        raise ValidationError(
            "IP addresses and loopback names are not allowed as issuers; use the issuer's "
            "public hostname.",
            code="internal_issuer",
        )
    validate_hostname(host)
    if port is not None:
        raise ValidationError("A port is not allowed in an issuer address.", code="issuer_port")


def validate_domain(value: str) -> None:
    """Require a bare Auth0 domain such as acme.eu.auth0.com: no scheme, path or port."""
    if not BARE_DOMAIN.fullmatch(value):
        raise ValidationError(
            "Enter the bare domain, such as acme.eu.auth0.com, without https:// or a path.",
            code="invalid_domain",
        )
    _validate_issuer_address(urlsplit(f"//{value}"), "invalid_domain")


def validate_issuer_url(value: str) -> None:
    """Require an https URL on a public hostname (http and loopback only in development)."""
    try:
        parts = urlsplit(value)
    except ValueError:  # https://[::1/, https://[zz]/
        raise ValidationError("Enter a valid URL.", code="invalid_url") from None
    allowed_schemes = ("https", "http") if authz_settings.ALLOW_INSECURE_ISSUERS else ("https",)
    if parts.scheme not in allowed_schemes:
        raise ValidationError(
            "Issuer and JWKS addresses must start with https://.", code="insecure_url"
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValidationError(
            "Remove credentials, query string and fragment from the address.", code="invalid_url"
        )
    _validate_issuer_address(parts, "invalid_url")


def validate_scopes(value: str) -> None:
    """Require space-separated RFC 6749 scope tokens."""
    for token in filter(None, value.split(" ")):
        if not SCOPE_TOKEN.match(token):
            raise ValidationError(
                "%(token)s is not a valid scope: use printable characters other than "
                'space, " and \\.',
                code="invalid_scope",
                params={"token": token},
            )


def validate_single_scope(value: str) -> None:
    """Require one RFC 6749 scope token (or nothing)."""
    if " " in value.strip():
        raise ValidationError(
            "Enter one scope; a token with this one scope may moderate every message.",
            code="one_scope",
        )
    validate_scopes(value)


def validate_organizations(value: object) -> None:
    """Require a list of distinct Auth0 organization ids (org_...)."""
    if not isinstance(value, list):
        raise ValidationError("Enter a list of organization ids.", code="invalid_organizations")
    if len(value) > MAX_ORGANIZATIONS:
        raise ValidationError(
            "Enter at most %(limit)d organizations.",
            code="too_many_organizations",
            params={"limit": MAX_ORGANIZATIONS},
        )
    for name in value:
        if not isinstance(name, str) or not ORGANIZATION_ID.match(name):
            raise ValidationError(
                "%(name)s is not an Auth0 organization id such as org_W8rUvXaAQ1o6BGRy.",
                code="invalid_organization",
                params={"name": name if isinstance(name, str) else repr(name)},
            )
    if len(set(value)) != len(value):
        raise ValidationError("An organization is listed twice.", code="duplicate_organization")


def validate_algorithms(value: object) -> None:
    """Require a non-empty list of asymmetric JWS algorithms."""
    if not isinstance(value, list) or not value:
        raise ValidationError("Choose at least one algorithm.", code="no_algorithms")
    for name in value:
        if name not in ASYMMETRIC_ALGORITHMS:
            raise ValidationError(
                "%(name)s is not allowed: choose asymmetric algorithms (%(allowed)s).",
                code="invalid_algorithm",
                params={"name": name, "allowed": ", ".join(ASYMMETRIC_ALGORITHMS)},
            )


def validate_dpop_algorithms(value: object) -> None:
    """Require a non-empty list of asymmetric JWS algorithms for DPoP proofs."""
    if not isinstance(value, list) or not value:
        raise ValidationError("Choose at least one proof algorithm.", code="no_algorithms")
    validate_algorithms(value)


def validate_origin(value: str) -> None:
    """Require a browser origin: scheme, host and optional port, nothing more."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("https", "http")
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username
        or value != value.strip()
    ):
        raise ValidationError(
            "Enter an origin such as https://app.example.com (no path or trailing slash).",
            code="invalid_origin",
        )


def validate_route_methods(value: object) -> None:
    """Require a list of known HTTP methods, or ``["*"]`` alone."""
    try:
        parse_methods(value)
    except TemplateError as exc:
        raise ValidationError(str(exc), code="invalid_methods") from None


def validate_route_path(value: str) -> None:
    """Require a path template: literals, ``{name}``, and ``{name...}`` last."""
    try:
        parse_template(value)
    except TemplateError as exc:
        raise ValidationError(str(exc), code="invalid_path") from None


def validate_scope_alternatives(value: object) -> None:
    """Require a list of alternatives, each a non-empty space-separated set of scopes."""
    if not isinstance(value, list) or len(value) > MAX_ALTERNATIVES:
        raise ValidationError(
            "Enter at most %(limit)d alternatives, each a space-separated set of scopes.",
            code="invalid_alternatives",
            params={"limit": MAX_ALTERNATIVES},
        )
    for alternative in value:
        if (
            not isinstance(alternative, str)
            or not alternative.strip()
            or len(alternative) > MAX_ALTERNATIVE_LENGTH
        ):
            raise ValidationError(
                "Each alternative is one or more scopes separated by spaces, at most "
                "%(limit)d characters.",
                code="invalid_alternative",
                params={"limit": MAX_ALTERNATIVE_LENGTH},
            )
        validate_scopes(alternative)
    if len({frozenset(a.split()) for a in value}) != len(value):
        raise ValidationError("An alternative is listed twice.", code="duplicate_alternative")
