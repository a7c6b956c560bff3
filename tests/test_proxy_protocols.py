"""Traefik's forwardAuth and Envoy's ext_authz (HTTP service), spoken to the real platform.

Neither proxy is in Debian's packages, so a client here does what each does by its
documentation, driven by the shipped platform/proxies/traefik-dynamic.yml and envoy.yaml:
which headers it sends to /authz/decision, how it names the original request, what it copies
to the upstream on 200, and that a refusal reaches the client as the platform gave it.

Traefik (forwardAuth): a GET to ``address`` with the request's headers listed in
``authRequestHeaders`` and X-Forwarded-Method, -Proto, -Host, -Uri and -For of its own
(``trustForwardHeader: false``); on 2xx, the request's headers matching
``authResponseHeadersRegex`` are stripped and the response's copied; otherwise the response is
the client's. Envoy (ext_authz, http_service): the original method, ``path_prefix`` plus the
original path, the original Host, the headers matched by ``allowed_headers`` (and always
Authorization), ``headers_to_add``; on 200, the response's headers matched by
``allowed_upstream_headers`` set on the upstream request and those matched by
``allowed_client_headers_on_success`` added to the client's response; otherwise status, headers
and body are the client's.
"""

import http.client
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from devissuer import dpop
from tests.processes import Stack, inherited_env, mode_env, platform
from tests.test_control_plane import SETTINGS
from tests.test_proxies import PROXIES_DIR, SECRET, SHOP_ROUTES, every_worker_decides

pytestmark = pytest.mark.timeout(120)

PEER = "203.0.113.7"  # the client, as the proxy's socket saw it
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class ClientRequest:
    """What a client sent to the proxy."""

    method: str
    target: str
    host: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """What the proxy does: the upstream request's headers, or the client's response."""

    status: int
    headers: dict[str, str]  # lowercase names: the upstream's when allowed, else the client's
    body: bytes = b""
    client_headers: dict[str, str] = field(default_factory=dict)  # added on allow (Envoy)

    @property
    def allowed(self) -> bool:
        """The request went on to the upstream."""
        return self.status == 200

    @property
    def code(self) -> str | None:
        """The refusal's code, from the JSON body."""
        return json.loads(self.body).get("code") if self.body else None

    def identity(self) -> dict[str, str]:
        """The X-Authz-* headers the upstream received."""
        assert self.allowed, (self.status, self.headers, self.body)
        return {name: value for name, value in self.headers.items() if name.startswith("x-authz-")}


def lower(headers: dict[str, str]) -> dict[str, str]:
    """Header names as HTTP compares them."""
    return {name.lower(): value for name, value in headers.items()}


def ask(port: int, method: str, target: str, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    """One raw request to the platform: status, lowercase headers, body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, lower(dict(response.getheaders())), response.read()
    finally:
        connection.close()


def render_template(text: str, values: dict[str, str]) -> str:
    """Traefik's ``{{ env "NAME" }}`` and envsubst's ``${NAME}``, filled in."""
    for name, value in values.items():
        text = text.replace(f'{{{{ env "{name}" }}}}', value).replace("${" + name + "}", value)
    code = [line.split("#", 1)[0] for line in text.splitlines()]
    assert not [line for line in code if "{{" in line or "${" in line], text
    return text


class Traefik:
    """forwardAuth as traefik-dynamic.yml configures it."""

    def __init__(self, platform_port: int) -> None:
        values = {"AUTHZ_PLATFORM": f"127.0.0.1:{platform_port}", "AUTHZ_PROXY_SECRET": SECRET}
        values["API_UPSTREAM"] = "127.0.0.1:9"
        text = render_template((PROXIES_DIR / "traefik-dynamic.yml").read_text(), values)
        http_config = yaml.safe_load(text)["http"]
        names = http_config["routers"]["your-api"]["middlewares"]
        self.middlewares = [http_config["middlewares"][name] for name in names]
        self.port = platform_port

    def send(self, request: ClientRequest) -> Outcome:
        """The request through the router's middlewares, in order."""
        headers = lower({"Host": request.host, **request.headers})
        for middleware in self.middlewares:
            if "headers" in middleware:
                headers = self._custom_headers(middleware["headers"], headers)
            else:
                outcome = self._forward_auth(middleware["forwardAuth"], request, headers)
                if not outcome.allowed:
                    return outcome
                headers = outcome.headers
        return Outcome(200, headers)

    @staticmethod
    def _custom_headers(config: dict[str, Any], headers: dict[str, str]) -> dict[str, str]:
        """customRequestHeaders: set, or remove when the value is empty."""
        headers = dict(headers)
        for name, value in config.get("customRequestHeaders", {}).items():
            headers.pop(name.lower(), None)
            if value:
                headers[name.lower()] = value
        return headers

    def _forward_auth(
        self, config: dict[str, Any], request: ClientRequest, headers: dict[str, str]
    ) -> Outcome:
        assert config["trustForwardHeader"] is False
        listed = config["authRequestHeaders"]
        sent = {name: headers[name.lower()] for name in listed if name.lower() in headers}
        sent |= {
            "X-Forwarded-Method": request.method,
            "X-Forwarded-Proto": "http",
            "X-Forwarded-Host": request.host,
            "X-Forwarded-Uri": request.target,
            "X-Forwarded-For": PEER,
        }
        address = config["address"]
        host, _, path = address.removeprefix("http://").partition("/")
        status, answer, body = ask(self.port, "GET", "/" + path, {"Host": host, **sent})
        if not 200 <= status < 300:
            return Outcome(status, strip_hop_by_hop(answer), body)
        pattern = re.compile(config["authResponseHeadersRegex"], re.IGNORECASE)
        kept = {name: value for name, value in headers.items() if not pattern.search(name)}
        copied = {name: value for name, value in answer.items() if pattern.search(name)}
        return Outcome(200, kept | copied)


def strip_hop_by_hop(headers: dict[str, str]) -> dict[str, str]:
    """What a proxy passes on of a response's headers."""
    return {name: value for name, value in headers.items() if name not in HOP_BY_HOP}


def matches(matcher: dict[str, Any], name: str) -> bool:
    """Envoy's StringMatcher (exact, prefix), on a lowercase header name."""
    if "exact" in matcher:
        return name == matcher["exact"]
    return name.startswith(matcher["prefix"])


class Envoy:
    """The HTTP filters of envoy.yaml: header_mutation, then ext_authz."""

    def __init__(self, platform_port: int) -> None:
        values = {"PROXY_PORT": "8443", "AUTHZ_PROXY_SECRET": SECRET}
        values |= {"AUTHZ_PLATFORM_HOST": "127.0.0.1", "AUTHZ_PLATFORM_PORT": str(platform_port)}
        values |= {"API_HOST": "127.0.0.1", "API_PORT": "9"}
        text = render_template((PROXIES_DIR / "envoy.yaml").read_text(), values)
        listener = yaml.safe_load(text)["static_resources"]["listeners"][0]
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        assert manager["use_remote_address"] is True
        filters = {f["name"]: f["typed_config"] for f in manager["http_filters"]}
        mutations = filters["envoy.filters.http.header_mutation"]["mutations"]
        self.removed = {m["remove"] for m in mutations["request_mutations"]}
        self.authz = filters["envoy.filters.http.ext_authz"]
        self.port = platform_port

    def send(self, request: ClientRequest) -> Outcome:
        """The request through the filter chain up to the router."""
        headers = lower(request.headers)
        headers = {name: value for name, value in headers.items() if name not in self.removed}
        # use_remote_address: Envoy appends the peer and sets the scheme it served.
        forwarded_for = headers.get("x-forwarded-for")
        headers["x-forwarded-for"] = f"{forwarded_for}, {PEER}" if forwarded_for else PEER
        headers["x-forwarded-proto"] = "http"
        return self._check(request, headers)

    def _check(self, request: ClientRequest, headers: dict[str, str]) -> Outcome:
        service = self.authz["http_service"]
        allowed = self.authz["allowed_headers"]["patterns"] + [{"exact": "authorization"}]
        sent = {n: v for n, v in headers.items() if any(matches(m, n) for m in allowed)}
        sent |= {"Host": request.host, "Content-Length": "0"}
        sent |= {h["key"]: h["value"] for h in service["authorization_request"]["headers_to_add"]}
        target = service["path_prefix"] + request.target
        status, answer, body = ask(self.port, request.method, target, sent)
        if status != 200:  # Envoy's HTTP service allows on 200 only
            return Outcome(status, strip_hop_by_hop(answer), body)
        response = service["authorization_response"]
        upstream = response["allowed_upstream_headers"]["patterns"]
        to_client = response["allowed_client_headers_on_success"]["patterns"]
        copied = {n: v for n, v in answer.items() if any(matches(m, n) for m in upstream)}
        added = {n: v for n, v in answer.items() if any(matches(m, n) for m in to_client)}
        return Outcome(200, {"host": request.host, **headers, **copied}, client_headers=added)


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """The development issuer and the platform on ``gunicorn -w 2``, the decision endpoint on."""
    home = tmp_path_factory.mktemp("proxy-protocols")
    env = {**inherited_env(), **SETTINGS, **mode_env("embedded", request, home)}
    env |= {"DEVISSUER_KEY_DIR": str(home / "keys"), "AUTHZ_PROXY_SECRET": SECRET}
    with platform(env, home) as running:
        quota = {"routes": [{"methods": ["GET"], "path": "/q"}], "rate_limit_per_subject": "2/min"}
        running.import_tenants(
            running.tenant("shop", hosts=["shop.localhost"], routes=SHOP_ROUTES),
            running.tenant("quota", hosts=["quota.localhost"], **quota),
        )
        every_worker_decides(running, "shop.localhost", "/health")  # one import: both names
        yield running


@pytest.fixture(params=[Traefik, Envoy], ids=["traefik", "envoy"])
def proxy(request: pytest.FixtureRequest, stack: Stack) -> Traefik | Envoy:
    """A client speaking one proxy's protocol to the platform."""
    return request.param(int(stack.web.url.rsplit(":", 1)[1]))


def token(stack: Stack, slug: str = "shop", sub: str = "alice@clients", **claims: Any) -> str:
    """A token of the tenant's issuer for its audience."""
    return stack.token(slug, f"https://api.{slug}.test", sub=sub, **claims)


def bearer(value: str) -> dict[str, str]:
    """The Authorization header of a Bearer token."""
    return {"Authorization": f"Bearer {value}"}


SPOOFED = {"X-Authz-Subject": "admin@clients", "X-Authz-Scopes": "admin", "X-Authz-Tenant": "x"}


def test_a_public_route_is_allowed_with_no_identity_the_client_sent(proxy: Any) -> None:
    outcome = proxy.send(ClientRequest("GET", "/health", "shop.localhost:8443", dict(SPOOFED)))

    assert outcome.identity() == {"x-authz-tenant": "shop", "x-authz-route": "/health"}


def test_a_granted_scope_copies_the_platforms_identity_and_not_the_secret(
    proxy: Any, stack: Stack
) -> None:
    headers = {**bearer(token(stack, scope="read:orders")), **SPOOFED}

    outcome = proxy.send(ClientRequest("GET", "/orders/7?x=1", "shop.localhost:8443", headers))

    seen = outcome.identity()
    assert seen["x-authz-subject"] == "alice@clients" and seen["x-authz-tenant"] == "shop"
    assert (seen["x-authz-scopes"], seen["x-authz-route"]) == ("read:orders", "/orders/{id}")
    assert "x-authz-proxy-secret" not in seen


@pytest.mark.parametrize(
    ("method", "target", "scope", "status", "code"),
    [
        ("GET", "/orders/7", None, 401, "not_authenticated"),
        ("GET", "/orders/7", "write:orders", 403, "insufficient_scope"),
        ("GET", "/nowhere", "admin", 403, "no_route"),
        ("DELETE", "/orders/7", "admin", 403, "no_route"),
        ("GET", "/files/../orders/admin", "read:orders", 403, "dot_segment"),
        ("GET", "/files/..%2Forders%2Fadmin", "read:orders", 403, "encoded_slash"),
    ],
)
def test_a_refusal_reaches_the_client_as_the_platform_gave_it(
    proxy: Any, stack: Stack, method: str, target: str, scope: str | None, status: int, code: str
) -> None:
    headers = bearer(token(stack, scope=scope)) if scope else {}

    outcome = proxy.send(ClientRequest(method, target, "shop.localhost:8443", headers))

    assert (outcome.status, outcome.code) == (status, code), outcome
    assert outcome.headers["content-type"] == "application/json"
    if status == 401 or code == "insufficient_scope":
        assert outcome.headers["www-authenticate"].startswith("Bearer realm=")


def test_a_clients_own_description_of_the_request_is_not_what_is_decided(proxy: Any) -> None:
    claims = {"X-Forwarded-Uri": "/health", "X-Forwarded-Method": "GET"}
    claims |= {"X-Original-URI": "/health", "X-Original-Method": "GET"}

    outcome = proxy.send(ClientRequest("DELETE", "/orders/7", "shop.localhost:8443", claims))

    assert (outcome.status, outcome.code) == (403, "no_route"), outcome


def test_dpop_is_checked_against_the_url_the_client_addressed(proxy: Any, stack: Stack) -> None:
    key = dpop.new_key()
    bound = stack.token("shop", "https://api.shop.test", "alice@clients", key, "read:orders")

    def proof(url: str) -> dict[str, str]:
        return {"Authorization": f"DPoP {bound}", "DPoP": dpop.make_proof(key, "GET", url, bound)}

    right = proof("http://shop.localhost:8443/orders/7")
    wrong = proof("http://shop.localhost:8443/orders/8")
    served = proxy.send(ClientRequest("GET", "/orders/7", "shop.localhost:8443", right))
    refused = proxy.send(ClientRequest("GET", "/orders/7", "shop.localhost:8443", wrong))

    assert served.identity()["x-authz-subject"] == "alice@clients"
    assert (refused.status, refused.code) == (401, "invalid_dpop_proof"), refused


def test_a_rate_limited_subject_gets_429_with_retry_after(proxy: Any, stack: Stack) -> None:
    headers = bearer(token(stack, "quota", sub=f"{type(proxy).__name__}@clients"))

    outcomes = [proxy.send(ClientRequest("GET", "/q", "quota.localhost", headers)) for _ in "123"]

    assert [outcome.status for outcome in outcomes] == [200, 200, 429]
    assert int(outcomes[2].headers["retry-after"]) > 0 and outcomes[2].code == "rate_limited"


def test_envoy_hands_the_client_the_quota_of_an_allowed_request(stack: Stack) -> None:
    envoy = Envoy(int(stack.web.url.rsplit(":", 1)[1]))
    headers = bearer(token(stack, "quota", sub="quota-headers@clients"))

    outcome = envoy.send(ClientRequest("GET", "/q", "quota.localhost", headers))

    assert outcome.allowed and "ratelimit-policy" in outcome.client_headers, outcome


def test_the_shipped_files_name_every_identity_header_they_strip() -> None:
    identity = ["Tenant", "Subject", "Scopes", "Organization", "Client-Id", "Route"]
    envoy = (PROXIES_DIR / "envoy.yaml").read_text().lower()
    nginx = (PROXIES_DIR / "nginx.conf").read_text()

    for name in identity:
        assert f"remove: x-authz-{name.lower()}" in envoy
        assert f"proxy_set_header X-Authz-{name} $authz_" in nginx
