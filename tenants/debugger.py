"""The token debugger: what the API answers to a token (and proof) on one of a tenant's endpoints.

It builds the request the client would send and runs the API's own view up to its handler:
tenant resolution, the DRF authentication class, the permission class and the error handler,
so the answer is the API's, never a copy of it. It runs as a dry run: a DPoP proof is looked up
in the replay store but not recorded, and no user is provisioned; key sets are fetched under the
usual cooldowns. The handler itself never runs, so nothing is created or deleted. Every refusal
names its check (``authz/steps.py``): the checks before it passed, those after it were not reached.
"""

import io
import json
import string
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, quote, unquote_to_bytes, urlsplit

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.wsgi import WSGIRequest
from django.db.models import Q
from django.http.request import split_domain_port
from django.urls import Resolver404, URLPattern, get_resolver, resolve
from rest_framework.exceptions import APIException

from authz import steps
from authz.errors import InsufficientScope
from authz.jwks import KeySetRecord, read_records
from authz.policy import IssuerPolicy
from authz.tokens import (
    MalformedToken,
    SigningKey,
    TokenError,
    UnknownKey,
    base64url,
    json_object,
    read_header,
    read_token,
    verify_token,
)
from tenants.directory import TenantConfig, directory
from tenants.models import Tenant, TenantIssuer, derive_issuer
from tenants.resolution import find_tenant
from tenants.routes import Route, scopes_allow, stored_table
from tenants.views import TenantAPIView, TenantResolutionMixin

PASSED, FAILED, NOT_REACHED, NOT_APPLICABLE = "passed", "failed", "not reached", "not applicable"
DETAIL_ID = "1"  # the id put in a message path: the handler never runs, any id does
FOREIGN_CANDIDATES = 10  # other tenants whose stored keys a token is tried against


@dataclass
class Check:
    """One check of the list, in the API's order."""

    name: str
    label: str
    state: str
    detail: str = ""


@dataclass
class Answer:
    """What the API answers, and why."""

    checks: list[Check] = field(default_factory=list)
    header: Any = None
    claims: Any = None
    status: int | None = None
    code: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    served: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def header_text(self) -> str:
        """The header as indented JSON, or why it cannot be read."""
        return _as_text(self.header)

    @property
    def claims_text(self) -> str:
        """The claims as indented JSON, or why they cannot be read."""
        return _as_text(self.claims)


def _as_text(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    return str(value or "")


class CannotDebug(Exception):
    """The request cannot be built for this tenant; the message says why."""


def protected_endpoints() -> dict[str, tuple[str, str]]:
    """Each endpoint key with a scope rule, and the method and API path it guards."""
    routes: dict[str, tuple[str, str]] = {}
    for pattern in get_resolver().url_patterns:
        if getattr(pattern, "pattern", None) and str(pattern.pattern) == "api/":
            for route in pattern.url_patterns:
                routes.update(_routes_of(route))
    return dict(sorted(routes.items()))


def _routes_of(route: URLPattern) -> dict[str, tuple[str, str]]:
    view_class = getattr(route.callback, "view_class", None)
    if view_class is None or not issubclass(view_class, TenantResolutionMixin):
        return {}
    view = view_class()
    path = "/api/" + str(route.pattern).replace("<str:message_id>", DETAIL_ID)
    methods = [m.upper() for m in ("get", "post", "put", "patch", "delete") if hasattr(view, m)]
    return {key: (method, path) for method in methods if (key := view.endpoint_key_for(method))}


def default_url(tenant: Tenant, path: str, platform_host: str) -> str:
    """The URL a client of the tenant calls: on its first host, else under /t/<slug>/ on the
    platform's own host (the one the admin is reached at)."""
    host = tenant.hosts.order_by("hostname").values_list("hostname", flat=True).first()
    scheme = "https" if settings.SECURE_PROXY_SSL_HEADER else "http"
    if host:
        return f"{scheme}://{host}{path}"
    return f"{scheme}://{platform_host}/t/{tenant.slug}{path}"


def debug(tenant: Tenant, token: str, proof: str, method: str, url: str) -> Answer:
    """The API's answer to this token (and proof) sent to ``url`` with ``method``."""
    answer = Answer()
    answer.header, answer.claims = _decoded(token)
    scheme = "DPoP" if proof else "Bearer"
    django_request = _request(method, url, f"{scheme} {token}" if token else "", proof)
    view, match = _view_for(django_request, tenant)
    request = view.initialize_request(django_request, *match.args, **match.kwargs)
    request.authz_dry_run = True
    view.request, view.headers = request, view.default_response_headers
    try:
        view.initial(request, *match.args, **match.kwargs)
    except Exception as exc:  # the API's own refusal, answered by its own handler
        try:
            _answer_refusal(answer, view, request, exc)
        except Exception:
            raise CannotDebug(f"The API could not answer ({type(exc).__name__}).") from exc
        answer.checks = _checks(_failed_check(exc), str(_detail(exc)), scheme, tenant)
        answer.notes += _foreign_token_notes(tenant, token, answer.claims, answer.checks)
        return answer
    answer.served = True
    answer.checks = _checks(None, "", scheme, tenant)
    return answer


def _decoded(token: str) -> tuple[Any, Any]:
    """The header and claims as sent (unverified), or why they cannot be read."""
    segments = token.split(".")
    if len(segments) != 3:
        return "not a JWT (three dot-separated parts)", None
    try:
        header = read_header(segments[0])
    except MalformedToken as exc:
        return exc.description, None
    try:
        claims = json_object(base64url(segments[1]), "The access token payload")
    except MalformedToken as exc:
        return header, exc.description
    return header, claims


def _request(method: str, url: str, authorization: str, proof: str) -> WSGIRequest:
    parts, port = _url_parts(url)
    path, query = _on_the_wire(parts)
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": parts.hostname,
        "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": parts.netloc,
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_LENGTH": "0",
        "wsgi.url_scheme": parts.scheme,
        "wsgi.input": io.BytesIO(b""),
    }
    if settings.SECURE_PROXY_SSL_HEADER:  # as the TLS proxy would tell it
        header, secure = settings.SECURE_PROXY_SSL_HEADER
        environ[header] = secure if parts.scheme == "https" else "http"
    if authorization:
        environ["HTTP_AUTHORIZATION"] = authorization
    if proof:
        environ["HTTP_DPOP"] = proof
    return WSGIRequest(environ)


def _url_parts(url: str) -> tuple[SplitResult, int]:
    """The parts and port of a URL a client could call; CannotDebug says what is wrong."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise CannotDebug("The URL is not a valid URL (its host cannot be read).") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CannotDebug("The URL must be an http or https URL with a host.")
    if not parts.netloc.isascii():
        raise CannotDebug("The URL's host must be ASCII: write a non-ASCII name in its xn-- form.")
    if parts.username is not None:
        raise CannotDebug("The URL must not carry a user name or password.")
    try:
        port = parts.port
    except ValueError:  # out of range, or not a number
        port = 0
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    if not 0 < port < 65536:
        raise CannotDebug("The URL's port must be a number from 1 to 65535.")
    if split_domain_port(parts.netloc) == ("", ""):
        raise CannotDebug("The URL's host is not a valid host name.")
    return parts, port


def _on_the_wire(parts: SplitResult) -> tuple[str, str]:
    """PATH_INFO and QUERY_STRING as a WSGI server passes them: the path decoded to bytes
    (shown as latin-1), the query still percent-encoded; non-ASCII text is sent as UTF-8."""
    path = unquote_to_bytes(parts.path or "/").decode("latin-1")
    return path, quote(parts.query, safe=string.punctuation)


def _view_for(django_request: WSGIRequest, tenant: Tenant) -> tuple[Any, Any]:
    """The API view of the URL, once the URL is known to be this tenant's."""
    try:
        match = resolve(django_request.path_info)
    except Resolver404:
        raise CannotDebug("The URL is not one of the API's endpoints.") from None
    view_class = getattr(match.func, "view_class", None)
    if view_class is None or not issubclass(view_class, TenantResolutionMixin):
        raise CannotDebug("The URL is not one of the API's endpoints.")
    try:
        served_by = find_tenant(django_request, match.kwargs.get("tenant_slug"))
    except DisallowedHost:
        raise CannotDebug("The URL's host is not in ALLOWED_HOSTS.") from None
    if served_by is None or served_by.slug != tenant.slug:
        raise CannotDebug(f"The URL is not served by the tenant {tenant.slug}.")
    view = view_class(**match.func.view_initkwargs)
    view.args, view.kwargs = match.args, dict(match.kwargs)
    return view, match


def _answer_refusal(answer: Answer, view: Any, request: Any, exc: Exception) -> None:
    response = view.finalize_response(request, view.handle_exception(exc))
    response.render()
    answer.status = response.status_code
    data = getattr(response, "data", None)
    answer.code = data.get("code", "") if isinstance(data, dict) else ""
    names = ("WWW-Authenticate", "DPoP-Nonce", "Retry-After", "Content-Type")
    answer.headers = {name: response[name] for name in names if name in response}
    answer.body = json.dumps(data, indent=2) if data is not None else response.content.decode()


def _failed_check(exc: Exception) -> str:
    check = getattr(exc, "check", "")
    if check:
        return check
    code = exc.get_codes() if isinstance(exc, APIException) else ""
    return steps.CHECK_OF_CODE.get(code if isinstance(code, str) else "", steps.SCHEME)


def _detail(exc: Exception) -> str:
    return str(getattr(exc, "detail", exc))


def _checks(failed: str | None, detail: str, scheme: str, tenant: Tenant) -> list[Check]:
    """Every check in order: passed up to the failing one, then not reached."""
    checks, reached = [], True
    for name, label in steps.ORDER:
        if _not_applicable(name, scheme, tenant):
            checks.append(Check(name, label, NOT_APPLICABLE))
        elif name == failed:
            checks.append(Check(name, label, FAILED, detail))
            reached = False
        else:
            checks.append(Check(name, label, PASSED if reached else NOT_REACHED))
    return checks


def _not_applicable(name: str, scheme: str, tenant: Tenant) -> bool:
    if name == steps.PROOF:
        return scheme != "DPoP"
    if name == steps.ORGANIZATION:
        return not tenant.organizations
    return False


def _foreign_token_notes(tenant: Tenant, token: str, claims: Any, checks: list[Check]) -> list[str]:
    """Say that a token belongs to another tenant, naming neither it nor its settings: only
    when the token verifies under that tenant's policy with its stored keys, so that no
    unsigned token can ask which issuers the platform's tenants trust."""
    failed = next((c.name for c in checks if c.state == FAILED), None)
    if failed not in (steps.KEY, steps.SIGNATURE, steps.ISSUER, steps.AUDIENCE):
        return []
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    owner = _verifying_tenant(token, _candidates(tenant, issuer))
    if owner is None:
        return []
    if issuer in _issuers_of(tenant):
        return ["This token is meant for another tenant's API on this platform."]
    return ["This token was issued for another tenant of this platform, not this one."]


def _candidates(tenant: Tenant, issuer: Any) -> list[TenantConfig]:
    """At most FOREIGN_CANDIDATES other active tenants that trust this issuer, as configured."""
    if not isinstance(issuer, str):
        return []
    try:
        host = urlsplit(issuer).hostname or ""
    except ValueError:
        return []
    others = TenantIssuer.objects.filter(tenant__active=True).exclude(tenant=tenant)
    others = others.filter(Q(issuer_override=issuer) | Q(domain=host, issuer_override=""))
    rows = others.order_by("tenant_id").values_list("tenant__slug", "domain", "issuer_override")
    slugs = [slug for slug, *where in rows[:FOREIGN_CANDIDATES] if derive_issuer(*where) == issuer]
    return [config for slug in slugs if (config := directory.by_slug(slug)) is not None]


def _issuers_of(tenant: Tenant) -> set[str]:
    """Every ``iss`` the tenant lists."""
    return {issuer.issuer for issuer in tenant.issuers.all()}


def _verifying_tenant(token: str, candidates: list[TenantConfig]) -> TenantConfig | None:
    """The first candidate whose policy of the issuer the token names, and whose stored keys
    (never fetched here) accept the token."""
    issuer = _named_issuer(token)
    policies = [(c, p) for c in candidates if (p := c.issuers.policy_for(issuer)) is not None]
    if not policies:
        return None
    try:
        records = read_records(sorted({policy.jwks_url for _, policy in policies}))
    except Exception:  # the store cannot answer: say nothing rather than fail the page
        return None
    for candidate, policy in policies:
        record = records.get(policy.jwks_url)
        if record is not None and _verifies(token, policy, record):
            return candidate
    return None


def _named_issuer(token: str) -> Any:
    try:
        return read_token(token).issuer
    except TokenError:
        return None


def _verifies(token: str, policy: IssuerPolicy, record: KeySetRecord) -> bool:
    stored = {key["kid"]: key for key in record.keys}

    def stored_key(kid: str) -> SigningKey:
        if kid not in stored:
            raise UnknownKey()
        return SigningKey.from_jwk(stored[kid])

    try:
        verify_token(token, policy, stored_key)
    except TokenError:
        return False
    return True


class RouteProbe(TenantAPIView):
    """The API's authentication and refusals, with a route's scope alternatives as the rule."""

    route: Route

    def endpoint_key_for(self, method: str) -> str | None:
        """No endpoint rule: the route's alternatives are checked after the permission class."""
        return None

    def check_permissions(self, request: Any) -> None:
        """A valid token first (the API's own permission), then one alternative in full."""
        super().check_permissions(request)
        if not scopes_allow(request.auth.scopes, self.route.scopes):
            raise InsufficientScope(self.route.scope_alternatives)


def debug_route(tenant: Tenant, token: str, proof: str, method: str, path: str, url: str) -> Answer:
    """The answer to this token (and proof) on the tenant's route for ``method`` and ``path``."""
    rows = tenant.routes.values_list("methods", "path", "public", "scopes")
    outcome = stored_table(rows).match(method, path)
    answer = Answer()
    answer.header, answer.claims = _decoded(token)
    answer.notes.append(outcome.reason)
    if outcome.route is None:
        answer.status, answer.code = 403, outcome.code
        answer.body = json.dumps({"message": outcome.reason, "code": outcome.code}, indent=2)
        return answer
    if outcome.route.public:
        answer.served = True
        answer.notes.append("A public route: no token is looked at.")
        return answer
    if outcome.route.scopes:
        alternatives = " or ".join(f"[{a}]" for a in outcome.route.scope_alternatives)
        answer.notes.append(f"Scopes: one of these sets in full: {alternatives}.")
    return _run_probe(answer, tenant, token, proof, method, url, outcome.route)


def _run_probe(
    answer: Answer, tenant: Tenant, token: str, proof: str, method: str, url: str, route: Route
) -> Answer:
    scheme = "DPoP" if proof else "Bearer"
    django_request = _request(method, url, f"{scheme} {token}" if token else "", proof)
    view = RouteProbe(route=route)
    view.args, view.kwargs = (), {"tenant_slug": tenant.slug}
    request = view.initialize_request(django_request)
    request.authz_dry_run = True
    view.request, view.headers = request, view.default_response_headers
    view.http_method_names = [method.lower()]
    setattr(view, method.lower(), lambda *args, **kwargs: None)
    try:
        view.initial(request)
    except Exception as exc:  # the API's own refusal, answered by its own handler
        try:
            _answer_refusal(answer, view, request, exc)
        except Exception:
            raise CannotDebug(f"The API could not answer ({type(exc).__name__}).") from exc
        answer.checks = _checks(_failed_check(exc), str(_detail(exc)), scheme, tenant)
        return answer
    answer.served = True
    answer.checks = _checks(None, "", scheme, tenant)
    return answer
