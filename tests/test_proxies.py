"""The shipped proxy configurations, run by the real nginx and Caddy in front of a real API.

Per mode ("embedded": SQLite and no Redis; "redis": PostgreSQL and Redis) one development issuer,
the platform on ``gunicorn -w 2`` with the decision endpoint on, an echo API (it answers 200 with
the headers it got), and nginx and Caddy from Debian's packages, each a process of this test
with its own directory and loopback port. Their configurations are the files in
platform/proxies/ with only the ports and the secret filled in. Every request goes through a
proxy exactly as a client sends it (raw target, Host with port); a ``probe`` query parameter,
which routes ignore, tells from gunicorn's access log which worker decided it.
"""

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from devissuer import dpop
from tenants.decision import PREFIX
from tests.processes import (
    EVERYONE_WITHIN,
    ROOT,
    WORKERS,
    Stack,
    inherited_env,
    mode_env,
    platform,
    running,
    wait_until_up,
)
from tests.test_control_plane import SETTINGS
from tests.test_e2e import free_port, manage

pytestmark = pytest.mark.timeout(120)

PROXIES_DIR = ROOT / "platform" / "proxies"
SECRET = "proxy-tests-secret-" + "s" * 24
RECHECK = float(SETTINGS["AUTHZ_CONFIG_RECHECK_INTERVAL"])
PROPAGATION = RECHECK + 2.5  # the recheck interval, a feed query, and margin
REDIS_DATABASE = 13  # apart from clean_state's and from the other process suites'
PROXIES = ["nginx", "caddy"]
PROBE = re.compile(r"probe=([0-9a-f]{32})")
# The access log names the worker and the original URI (X-Original-URI from nginx,
# X-Forwarded-Uri from Caddy), which carries the probe.
ACCESS_FORMAT = "%(p)s %({x-original-uri}i)s%({x-forwarded-uri}i)s %(s)s"
PACKAGES = {"nginx": ("/usr/sbin/nginx", "nginx"), "caddy": ("/usr/bin/caddy", "caddy")}

SHOP_ROUTES = [
    {"methods": ["GET"], "path": "/orders/{id}", "scopes": ["read:orders", "admin"]},
    {"methods": ["GET"], "path": "/orders/admin", "scopes": ["admin"]},
    {"methods": ["POST"], "path": "/orders", "scopes": ["read:orders write:orders"]},
    {"methods": ["GET"], "path": "/health", "public": True},
    {"methods": ["GET"], "path": "/files/{path...}", "public": True},
    {"methods": ["GET"], "path": "/items/{id}", "scopes": ["admin"]},
    {"methods": ["GET"], "path": "/items/{rest...}", "public": True},
]


# Marked so pytest-django sets up the test database, but not transactional: a transactional
# test would empty the tables after each test, and the tenants here are imported once per mode.
@pytest.fixture(
    scope="module", params=["embedded", pytest.param("redis", marks=pytest.mark.django_db)]
)
def mode(request: pytest.FixtureRequest) -> str:
    """Which store the platform runs on: the embedded default, or PostgreSQL and Redis."""
    return request.param


# 1. The processes: platform, echo API, nginx and Caddy.


class EchoHandler(BaseHTTPRequestHandler):
    """Any method: 200 and a JSON body with the method, the target and the headers received."""

    protocol_version = "HTTP/1.1"

    def handle_one_request(self) -> None:
        """Every method is answered the same way."""
        self.raw_requestline = self.rfile.readline(65537)
        if not self.raw_requestline or not self.parse_request():
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        received = [*self.headers.items()]
        echo = {"echo": True, "method": self.command, "target": self.path, "headers": received}
        body = json.dumps(echo).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@contextmanager
def echo_api() -> Iterator[int]:
    """The API behind the proxies, on a loopback port of its own."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def binary(name: str) -> str:
    """The proxy's executable, installed from Debian's packages first if it is missing."""
    path, package = PACKAGES[name]
    if not (shutil.which(name) or Path(path).exists()):
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"], install):
            done = subprocess.run(command, capture_output=True, text=True, env=environment)
            if done.returncode:
                pytest.fail(f"{' '.join(command)} failed (as root?):\n{done.stderr}")
    return shutil.which(name) or path


def render(template: str, values: dict[str, str]) -> str:
    """The shipped file with its ``${NAME}`` placeholders filled in; none may be left over."""
    for name, value in values.items():
        template = template.replace("${" + name + "}", value)
    code = "\n".join(line for line in template.splitlines() if not line.lstrip().startswith("#"))
    assert "${" not in code, f"a placeholder is left: {code}"
    return template


NGINX_MAIN = """
worker_processes 1;
pid {home}/nginx.pid;
error_log {home}/error.log;
events {{}}
http {{
    access_log {home}/access.log;
    client_body_temp_path {home}/body;
    proxy_temp_path {home}/proxy;
    fastcgi_temp_path {home}/fastcgi;
    uwsgi_temp_path {home}/uwsgi;
    scgi_temp_path {home}/scgi;
    include {home}/site.conf;
}}
"""


@contextmanager
def nginx(home: Path, platform_port: int, api_port: int) -> Iterator[int]:
    """nginx with the shipped server block, in a directory of its own; its port."""
    home.mkdir()
    port = free_port()
    site = render(
        (PROXIES_DIR / "nginx.conf").read_text(),
        {
            "PROXY_LISTEN": f"127.0.0.1:{port}",
            "AUTHZ_PLATFORM": f"127.0.0.1:{platform_port}",
            "API_UPSTREAM": f"127.0.0.1:{api_port}",
            "AUTHZ_PROXY_SECRET": SECRET,
        },
    )
    (home / "site.conf").write_text(site)
    (home / "nginx.conf").write_text(NGINX_MAIN.format(home=home))
    command = [binary("nginx"), "-p", str(home), "-c", str(home / "nginx.conf")]
    command += ["-g", "daemon off;"]
    log = home / "nginx.log"
    with running(command, os.environ.copy(), log) as process:
        wait_until_up(f"http://127.0.0.1:{port}/", process, log)
        yield port


@contextmanager
def caddy(home: Path, platform_port: int, api_port: int) -> Iterator[int]:
    """Caddy with the shipped Caddyfile, its state in a directory of its own; its port."""
    home.mkdir()
    port = free_port()
    env = {
        **os.environ,
        "PROXY_LISTEN": f"http://:{port}",
        "PROXY_BIND": "127.0.0.1",
        "AUTHZ_PLATFORM": f"127.0.0.1:{platform_port}",
        "API_UPSTREAM": f"127.0.0.1:{api_port}",
        "AUTHZ_PROXY_SECRET": SECRET,
        "CADDY_ADMIN": "off",
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
    }
    command = [binary("caddy"), "run", "--adapter", "caddyfile"]
    command += ["--config", str(PROXIES_DIR / "Caddyfile")]
    log = home / "caddy.log"
    with running(command, env, log) as process:
        wait_until_up(f"http://127.0.0.1:{port}/", process, log)
        yield port


@dataclass
class Deployment:
    """The platform, the API and both proxies of one mode."""

    mode: str
    stack: Stack
    ports: dict[str, int]
    access_log: Path

    def audience(self, slug: str) -> str:
        """The audience of a tenant of this module."""
        return f"https://api.{slug}.test"

    def token(self, slug: str, sub: str = "alice@clients", **claims: Any) -> str:
        """A token of the tenant's issuer for its audience."""
        return self.stack.token(slug, self.audience(slug), sub=sub, **claims)

    def workers(self, probes: list[str], timeout: float = 5) -> dict[str, int]:
        """The worker that decided each probe, from the access log (written after the answer)."""
        deadline = time.monotonic() + timeout
        while True:
            found: dict[str, int] = {}
            for line in self.access_log.read_text().splitlines():
                fields, probe = line.split(" ", 1), PROBE.search(line)
                if probe and fields[0].startswith("<") and line.endswith(tuple("0123456789")):
                    found[probe[1]] = int(fields[0].strip("<>"))
            if all(probe in found for probe in probes):
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"{self.access_log} lacks decisions that were answered")
            time.sleep(0.02)


TENANTS = {
    "shop": {"routes": SHOP_ROUTES},
    "mall": {"routes": [{"methods": ["GET"], "path": "/orders/{id}"}]},
    "quota": {"routes": [{"methods": ["GET"], "path": "/q"}], "rate_limit_per_subject": "3/min"},
    "dark": {"routes": [{"methods": ["GET"], "path": "/d"}]},
    "grow": {"routes": [{"methods": ["GET"], "path": "/a", "public": True}]},
    "nonce": {"routes": [{"methods": ["GET"], "path": "/n"}], "dpop_nonce": True},
}


def platform_env(mode: str, home: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """The platform's settings: the control plane suite's, the mode's stores, the secret."""
    chosen = mode_env(mode, request, home, REDIS_DATABASE)
    if "REDIS_URL" in chosen:  # this database outlives a run: start it empty
        redis.Redis.from_url(chosen["REDIS_URL"]).flushdb()
    env = {**inherited_env(), **SETTINGS, **chosen, "DEVISSUER_KEY_DIR": str(home / "keys")}
    # The proxy is the edge: TRUSTED_PROXY_COUNT stays 0, the proxy's own entry is the client.
    return {**env, "AUTHZ_PROXY_SECRET": SECRET}


@pytest.fixture(scope="module")
def deployment(
    mode: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """Everything of one mode, shared by the module's tests; the tenants imported once."""
    home = tmp_path_factory.mktemp(f"proxies-{mode}")
    env = platform_env(mode, home, request)
    access_log = home / "web-access.log"
    options = ["--access-logformat", ACCESS_FORMAT]
    with ExitStack() as stack_of:
        stack = stack_of.enter_context(platform(env, home, options))
        api_port = stack_of.enter_context(echo_api())
        platform_port = int(stack.web.url.rsplit(":", 1)[1])
        ports = {
            "nginx": stack_of.enter_context(nginx(home / "nginx", platform_port, api_port)),
            "caddy": stack_of.enter_context(caddy(home / "caddy", platform_port, api_port)),
        }
        # dark's key set is at a port nobody listens on: its issuer is down, no keys held.
        dead = {"dark": {"jwks_url": f"http://127.0.0.1:{free_port()}/.well-known/jwks.json"}}
        items = [
            stack.tenant(slug, hosts=[f"{slug}.localhost"], **fields, **dead.get(slug, {}))
            for slug, fields in TENANTS.items()
        ]
        stack.import_tenants(*items)
        every_worker_decides(stack, "shop.localhost", "/health")  # one import: every name with it
        yield Deployment(mode, stack, ports, access_log)
        if mode == "redis":  # what a transactional test leaves: empty tables for the next
            manage(env, "flush", "--no-input")


def every_worker_decides(stack: Stack, host: str, target: str) -> None:
    """Wait until every worker has allowed GET ``target`` at ``host``: a worker learns a newly
    imported hostname at its next feed read, and knows it from then on."""
    headers = {"X-Authz-Proxy-Secret": SECRET, "X-Forwarded-Method": "GET", "Connection": "close"}
    headers["X-Forwarded-Host"] = host

    def decide(probe: str) -> bool:
        uri = {"X-Forwarded-Uri": f"{target}?probe={probe}", "X-Probe": probe}
        return requests.get(stack.web.url + PREFIX, headers=headers | uri, timeout=5).ok

    deadline, allowed_by = time.monotonic() + PROPAGATION + EVERYONE_WITHIN, set()
    with ThreadPoolExecutor(max_workers=4) as pool:  # four at once, so that every worker gets some
        while len(allowed_by) < WORKERS:
            assert time.monotonic() < deadline, f"{host} is not decided by every worker"
            probes = [uuid.uuid4().hex for _ in range(4)]
            for probe, allowed in zip(probes, pool.map(decide, probes), strict=True):
                if allowed:
                    allowed_by.add(worker_of(stack.web.access_log, probe))


def worker_of(access_log: Path, probe: str, timeout: float = 5) -> int:
    """The pid of the worker that answered ``probe``, from an access log whose lines start with
    ``<pid>`` and end with the status (gunicorn writes them just after the answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in access_log.read_text().splitlines():
            pid = line.split(" ", 1)[0]
            if probe in line and pid[:1] == "<" and pid[-1:] == ">" and line[-1:].isdigit():
                return int(pid.strip("<>"))
        time.sleep(0.02)
    pytest.fail(f"{access_log} lacks the decision {probe}")


@pytest.fixture(params=PROXIES)
def proxy(request: pytest.FixtureRequest, deployment: Deployment) -> "Proxy":
    """One of the two proxies in front of the API."""
    return Proxy(request.param, deployment.ports[request.param], deployment)


# 2. The client: exactly the bytes a client sends.


@dataclass(frozen=True)
class Reply:
    """A response through the proxy, and what the API received if the request reached it."""

    status: int
    headers: http.client.HTTPMessage
    body: Any
    probe: str

    @property
    def code(self) -> str | None:
        """The refusal's code, from the JSON body."""
        return self.body.get("code") if isinstance(self.body, dict) else None

    @property
    def upstream(self) -> dict[str, list[str]] | None:
        """The headers the API received (lowercase names), or None if it was not reached."""
        if not (isinstance(self.body, dict) and self.body.get("echo")):
            return None
        received: dict[str, list[str]] = {}
        for name, value in self.body["headers"]:
            received.setdefault(name.lower(), []).append(value)
        return received

    def __str__(self) -> str:
        return f"{self.status} {dict(self.headers)} {self.body}"


@dataclass(frozen=True)
class Proxy:
    """A proxy of the deployment, asked over fresh connections."""

    name: str
    port: int
    deployment: Deployment

    def url(self, host: str, path: str) -> str:
        """The URL the client addresses (what a DPoP proof's htu names)."""
        return f"http://{host}:{self.port}{path}"

    def send(
        self,
        method: str,
        target: str,
        *,
        host: str = "shop.localhost",
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One request with a raw target (no client-side normalization), on its own connection."""
        probe = uuid.uuid4().hex
        target += f"{'&' if '?' in target else '?'}probe={probe}"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", f"{host}:{self.port}")
            if token:
                connection.putheader("Authorization", f"Bearer {token}")
            for name, value in (headers or {}).items():
                connection.putheader(name, value)
            if method not in ("GET", "HEAD"):
                connection.putheader("Content-Length", "0")
            connection.endheaders()
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = raw.decode("latin-1")
        return Reply(response.status, response.headers, body, probe)

    def worker(self, reply: Reply) -> int:
        """The gunicorn worker that decided ``reply``."""
        return self.deployment.workers([reply.probe])[reply.probe]


def assert_refused(reply: Reply, status: int, code: str) -> None:
    """The platform's refusal, as the client sees it: status, JSON code, never the API."""
    assert (reply.status, reply.code) == (status, code), str(reply)
    assert reply.headers.get_content_type() == "application/json", str(reply)
    assert reply.upstream is None


def identity(reply: Reply) -> dict[str, list[str]]:
    """The X-Authz-* headers the API received."""
    assert reply.status == 200 and reply.upstream is not None, str(reply)
    return {name: values for name, values in reply.upstream.items() if name.startswith("x-authz-")}


# 3. Through each proxy, in each mode.


def test_a_public_route_passes_without_a_token_and_never_with_a_clients_identity(
    proxy: Proxy,
) -> None:
    spoofed = {"X-Authz-Subject": "admin@clients", "X-Authz-Scopes": "admin"}

    reply = proxy.send("GET", "/health", headers=spoofed)

    assert identity(reply) == {"x-authz-tenant": ["shop"], "x-authz-route": ["/health"]}


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/orders/7", "read:orders"),
        ("GET", "/orders/7", "admin"),  # the other alternative
        ("POST", "/orders", "read:orders write:orders"),  # an alternative of two, both granted
    ],
)
def test_a_granted_scope_reaches_the_api_with_the_callers_identity(
    proxy: Proxy, method: str, path: str, scope: str
) -> None:
    token = proxy.deployment.token("shop", scope=scope)

    reply = proxy.send(method, path, token=token)

    assert reply.upstream is not None and reply.body["method"] == method, str(reply)
    seen = identity(reply)
    assert seen["x-authz-tenant"] == ["shop"] and seen["x-authz-subject"] == ["alice@clients"]
    assert seen["x-authz-scopes"] == [" ".join(sorted(scope.split()))]
    assert seen["x-authz-route"] == ["/orders/{id}" if method == "GET" else "/orders"]


def test_a_missing_token_is_401_with_the_challenge(proxy: Proxy) -> None:
    reply = proxy.send("GET", "/orders/7")

    assert_refused(reply, 401, "not_authenticated")
    assert reply.headers.get_all("WWW-Authenticate")[0].startswith("Bearer realm=")


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [("GET", "/orders/7", "write:orders"), ("POST", "/orders", "read:orders")],
)
def test_an_insufficient_scope_is_403_naming_what_would_do(
    proxy: Proxy, method: str, path: str, scope: str
) -> None:
    reply = proxy.send(method, path, token=proxy.deployment.token("shop", scope=scope))

    assert_refused(reply, 403, "insufficient_scope")
    challenges = reply.headers.get_all("WWW-Authenticate")
    assert len(challenges) == 1 and 'error="insufficient_scope"' in challenges[0], challenges


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/nowhere"), ("DELETE", "/orders/7"), ("PUT", "/health")]
)
def test_no_route_and_a_wrong_method_are_403_no_route(proxy: Proxy, method: str, path: str) -> None:
    token = proxy.deployment.token("shop", scope="admin")

    assert_refused(proxy.send(method, path, token=token), 403, "no_route")


def test_a_name_segment_beats_the_rest_of_the_path(proxy: Proxy) -> None:
    one_segment = proxy.send("GET", "/items/1")
    two_segments = proxy.send("GET", "/items/1/2")

    assert_refused(one_segment, 401, "not_authenticated")  # /items/{id} wants admin
    assert identity(two_segments)["x-authz-route"] == ["/items/{rest...}"]


@pytest.mark.parametrize(
    ("target", "status", "code"),
    [
        # Both proxies pass dot segments on as sent, so an upstream that does not resolve them
        # would act on the path before the "..": refused, whichever route the rest reaches.
        ("/files/../orders/admin", 403, "dot_segment"),
        ("/files/%2e%2e/orders/admin", 403, "dot_segment"),
        ("/files/a/%2E%2E/%2E%2E/orders/admin", 403, "dot_segment"),
        ("/orders/admin/../../files/x", 403, "dot_segment"),
        ("/orders/./admin", 403, "dot_segment"),
        ("/files/..%2Forders%2Fadmin", 403, "encoded_slash"),
        ("/files/x/..%2F..%2Forders/admin", 403, "encoded_slash"),
    ],
)
def test_encoded_and_dot_paths_are_refused_whichever_route_they_would_reach(
    proxy: Proxy, target: str, status: int, code: str
) -> None:
    reader = proxy.deployment.token("shop", scope="read:orders")

    assert_refused(proxy.send("GET", target, token=reader), status, code)


def test_each_tenant_by_host_refuses_the_others_tokens(proxy: Proxy) -> None:
    deployment = proxy.deployment
    shop, mall = deployment.token("shop", scope="read:orders"), deployment.token("mall")

    own = [proxy.send("GET", "/orders/7", token=shop, host="shop.localhost")]
    own += [proxy.send("GET", "/orders/7", token=mall, host="mall.localhost")]
    crossed = [proxy.send("GET", "/orders/7", token=mall, host="shop.localhost")]
    crossed += [proxy.send("GET", "/orders/7", token=shop, host="mall.localhost")]

    assert [identity(reply)["x-authz-tenant"] for reply in own] == [["shop"], ["mall"]]
    for reply, realm in zip(crossed, ["shop", "mall"], strict=True):
        assert (reply.status, reply.upstream) == (401, None), str(reply)
        assert f'realm="{realm}"' in reply.headers["WWW-Authenticate"]


def test_an_unknown_host_is_404_tenant_not_found(proxy: Proxy) -> None:
    assert_refused(proxy.send("GET", "/health", host="nobody.localhost"), 404, "tenant_not_found")


def test_a_spoofed_identity_never_reaches_the_api(proxy: Proxy) -> None:
    token = proxy.deployment.token("shop", sub="bob@clients", scope="read:orders")
    spoofed = {
        "X-Authz-Subject": "admin@clients",
        "X-Authz-Scopes": "admin",
        "X-Authz-Tenant": "mall",
        "X-Authz-Organization": "org_evil",
        "X-Authz-Client-Id": "evil",
        "X-Authz-Route": "/orders/admin",
    }

    reply = proxy.send("GET", "/orders/7", token=token, headers=spoofed)

    seen = identity(reply)
    assert seen["x-authz-subject"] == ["bob@clients"] and seen["x-authz-tenant"] == ["shop"]
    assert seen["x-authz-scopes"] == ["read:orders"]
    assert seen["x-authz-route"] == ["/orders/{id}"]
    assert "x-authz-organization" not in seen
    assert seen.get("x-authz-client-id", []) != ["evil"]


def test_a_spoofed_original_request_is_not_what_is_decided(proxy: Proxy) -> None:
    claims = {"X-Forwarded-Uri": "/health", "X-Original-URI": "/health"}
    claims |= {"X-Forwarded-Method": "GET", "X-Original-Method": "GET"}

    reply = proxy.send("DELETE", "/orders/7", headers=claims)

    assert_refused(reply, 403, "no_route")


def dpop_headers(token: str, key: Any, method: str, url: str) -> dict[str, str]:
    """A DPoP-bound token and a fresh proof for ``method url``."""
    return {"Authorization": f"DPoP {token}", "DPoP": dpop.make_proof(key, method, url, token)}


def test_dpop_through_the_proxy_checks_the_url_the_client_addressed(proxy: Proxy) -> None:
    key = dpop.new_key()
    token = proxy.deployment.stack.token(
        "shop", proxy.deployment.audience("shop"), "alice@clients", key, "read:orders"
    )
    right = proxy.url("shop.localhost", "/orders/7")
    wrong = [proxy.url("shop.localhost", "/orders/8"), proxy.url("mall.localhost", "/orders/7")]
    wrong += [f"https://shop.localhost:{proxy.port}/orders/7"]

    served = proxy.send("GET", "/orders/7", headers=dpop_headers(token, key, "GET", right))
    misaddressed = [
        proxy.send("GET", "/orders/7", headers=dpop_headers(token, key, "GET", url))
        for url in wrong
    ]
    as_bearer = proxy.send("GET", "/orders/7", token=token)

    assert identity(served)["x-authz-subject"] == ["alice@clients"]
    for reply in misaddressed:
        assert_refused(reply, 401, "invalid_dpop_proof")
    assert_refused(as_bearer, 401, "dpop_bound_token")


def test_a_proof_replayed_to_the_other_worker_is_refused(proxy: Proxy) -> None:
    key = dpop.new_key()
    token = proxy.deployment.stack.token(
        "shop", proxy.deployment.audience("shop"), dpop_key=key, scope="read:orders"
    )
    proof = dpop_headers(token, key, "GET", proxy.url("shop.localhost", "/orders/7"))

    first = proxy.send("GET", "/orders/7", headers=proof)
    assert first.status == 200, str(first)
    replays: list[Reply] = []
    # Four at a time, so the proxy opens several connections to the platform (Caddy keeps one
    # alive, which one worker holds), until a replay lands on the worker that did not accept it.
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(10):
            sent = 4 * [proof]
            replays += pool.map(lambda h: proxy.send("GET", "/orders/7", headers=h), sent)
            if any(proxy.worker(reply) != proxy.worker(first) for reply in replays):
                break
        else:
            pytest.fail("No replay reached the other worker.")

    for reply in replays:
        assert_refused(reply, 401, "invalid_dpop_proof")


def test_a_subject_over_its_limit_sees_429_with_retry_after(proxy: Proxy) -> None:
    subject = f"{proxy.name}-{proxy.deployment.mode}@clients"
    token = proxy.deployment.token("quota", sub=subject)

    replies = [proxy.send("GET", "/q", host="quota.localhost", token=token) for _ in range(4)]

    assert [reply.status for reply in replies] == [200, 200, 200, 429], [*map(str, replies)]
    assert_refused(replies[3], 429, "rate_limited")
    assert int(replies[3].headers["Retry-After"]) > 0
    assert replies[3].headers["RateLimit-Policy"], str(replies[3])
    # An allowed call tells the client its quota; the API gets none of it.
    assert replies[0].headers["RateLimit-Policy"] and replies[0].headers["RateLimit"]
    assert not [name for name in replies[0].upstream if "ratelimit" in name], str(replies[0])


def test_a_nonce_tenant_asks_for_a_nonce_then_serves_the_proof_that_carries_it(
    proxy: Proxy,
) -> None:
    key = dpop.new_key()
    token = proxy.deployment.stack.token(
        "nonce", proxy.deployment.audience("nonce"), "alice@clients", key
    )
    url = proxy.url("nonce.localhost", "/n")

    def call(nonce: str | None = None) -> Reply:
        proof = dpop.make_proof(key, "GET", url, access_token=token, nonce=nonce)
        headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
        return proxy.send("GET", "/n", host="nonce.localhost", headers=headers)

    first = call()
    assert_refused(first, 401, "use_dpop_nonce")
    assert len(first.headers.get_all("WWW-Authenticate")) == 1
    served = call(first.headers["DPoP-Nonce"])

    assert identity(served)["x-authz-subject"] == ["alice@clients"]
    assert served.headers["DPoP-Nonce"] == first.headers["DPoP-Nonce"]
    assert "dpop-nonce" not in served.upstream and "x-authz-reply-dpop-nonce" not in served.upstream


def test_an_issuer_down_with_no_keys_held_is_503_with_retry_after(proxy: Proxy) -> None:
    reply = proxy.send("GET", "/d", host="dark.localhost", token=proxy.deployment.token("dark"))

    assert_refused(reply, 503, "issuer_unavailable")
    assert int(reply.headers["Retry-After"]) > 0


def test_a_route_added_in_admin_is_served_by_every_worker_within_the_recheck_interval(
    proxy: Proxy,
) -> None:
    path = f"/{proxy.name}/1"
    assert_refused(proxy.send("GET", path, host="grow.localhost"), 403, "no_route")

    proxy.deployment.stack.shell(
        "from tenants.models import Route, Tenant; "
        "Route.objects.create(tenant=Tenant.objects.get(slug='grow'), "
        f"position={PROXIES.index(proxy.name) + 1}, methods=['GET'], "
        f"path='/{proxy.name}/{{id}}', public=True)"
    )
    started = time.monotonic()
    while True:
        replies = [proxy.send("GET", path, host="grow.localhost") for _ in range(8)]
        workers = proxy.deployment.workers([reply.probe for reply in replies])
        served = {workers[reply.probe] for reply in replies if reply.status == 200}
        elapsed = time.monotonic() - started
        if len(served) == WORKERS and all(reply.status == 200 for reply in replies):
            break
        assert elapsed < PROPAGATION, [*map(str, replies)]
        time.sleep(0.05)
    assert elapsed < PROPAGATION


@pytest.mark.parametrize("name", PROXIES)
def test_with_the_platform_down_the_client_gets_502_and_the_api_nothing(
    name: str, tmp_path: Path
) -> None:
    start = {"nginx": nginx, "caddy": caddy}[name]
    with echo_api() as api_port, start(tmp_path / name, free_port(), api_port) as port:
        proxy = Proxy(name, port, deployment=None)  # type: ignore[arg-type]
        replies = [proxy.send("GET", "/health"), proxy.send("GET", "/orders/7", token="x")]

    assert [(reply.status, reply.upstream) for reply in replies] == [(502, None)] * 2


def test_the_client_address_is_what_the_proxy_saw_not_what_the_client_claims(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    env = {**inherited_env(), **SETTINGS, **mode_env("embedded", request, tmp_path)}
    env |= {"DEVISSUER_KEY_DIR": str(tmp_path / "keys"), "AUTHZ_PROXY_SECRET": SECRET}
    env["AUTHZ_RATE_LIMIT_ANONYMOUS_PER_ADDRESS"] = "6/min"
    with ExitStack() as stack_of:
        stack = stack_of.enter_context(platform(env, tmp_path))
        stack.import_tenants(stack.tenant("shop", hosts=["shop.localhost"], routes=SHOP_ROUTES))
        api_port = stack_of.enter_context(echo_api())
        platform_port = int(stack.web.url.rsplit(":", 1)[1])
        started = {"nginx": nginx, "caddy": caddy}
        ports = {
            name: stack_of.enter_context(start(tmp_path / name, platform_port, api_port))
            for name, start in started.items()
        }
        replies = []
        for n in range(7):  # each a refusal for want of a token, claiming another address
            name = PROXIES[n % 2]
            proxy = Proxy(name, ports[name], deployment=None)  # type: ignore[arg-type]
            spoofed = {"X-Forwarded-For": f"198.51.100.{n}"}
            replies.append(proxy.send("GET", "/orders/7", headers=spoofed))

    # One address was counted: the one the proxies saw.
    assert [reply.status for reply in replies] == [401] * 6 + [429], [*map(str, replies)]
    assert_refused(replies[6], 429, "rate_limited")


def test_through_nginx_a_request_the_platform_cannot_read_is_its_400_with_its_body(
    deployment: Deployment,
) -> None:
    # nginx passes the raw bytes of the target on (Caddy escapes them: the route then decides).
    port = deployment.ports["nginx"]
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    with connection:
        connection.sendall(
            b"GET /orders/\xff\xfe HTTP/1.1\r\n"
            + f"Host: shop.localhost:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        response = http.client.HTTPResponse(connection)
        response.begin()
        body = response.read()

    assert (response.status, json.loads(body)["code"]) == (400, "invalid_forwarded_request")
