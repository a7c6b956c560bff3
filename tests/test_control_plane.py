"""The control plane over real processes: every gunicorn worker sees every change, in both modes.

"embedded": SQLite, the database cache as shared store, no Redis, eager Celery. "redis": the test
PostgreSQL database, Redis, eager Celery (no worker). Each mode runs one development issuer and
one ``gunicorn -w 2``; changes come from other processes (``manage.py tenants import``, ``shell``)
and must reach both workers within the recheck interval.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from devissuer import dpop
from devissuer.issuer import DevKeyStore, start_in_thread
from tests.processes import (
    NOT_FOUND,
    OK,
    ROOT,
    Answer,
    Stack,
    Web,
    answered,
    assert_every,
    gunicorn,
    inherited_env,
    mode_env,
    platform,
    realm_of,
    running,
    summary,
    wait_until_up,
)
from tests.test_e2e import free_port, manage

RECHECK = 0.5
COOLDOWN = 1.0
FETCH_DEADLINE = 2.0
REFRESH = 2.0
PROPAGATION = 3.0  # recheck interval, a feed query, and margin
SETTINGS = {
    "ENV_FILE": "",
    "SECRET_KEY": "control-plane-tests-only-" + "k" * 32,
    "DEBUG": "false",
    "ALLOWED_HOSTS": "127.0.0.1,.localhost",
    "SECURE_COOKIES": "false",  # the admin login over plain HTTP
    "AUTHZ_CONFIG_RECHECK_INTERVAL": str(RECHECK),
    "AUTHZ_ALLOW_INSECURE_ISSUERS": "true",
    "AUTHZ_INSECURE_ISSUERS_ACKNOWLEDGED": "true",
    "AUTHZ_UNKNOWN_KID_COOLDOWN": str(COOLDOWN),
    "AUTHZ_JWKS_FETCH_DEADLINE": str(FETCH_DEADLINE),
    "METRICS_TOKEN": "control-plane-metrics-" + "m" * 20,
    "AUTHZ_TRAFFIC_FLUSH_INTERVAL": "0.5",
}
PRIVATE = "/api/private"
REDIS_DATABASE = 11
RUN = uuid.uuid4().hex[:6]  # that Redis database outlives a run: counts kept there too

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def stack(
    mode: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The devissuer and ``gunicorn -w 2`` of one mode, shared by the module's tests."""
    home = tmp_path_factory.mktemp(f"control-plane-{mode}")
    env = {**inherited_env(), **SETTINGS, "DEVISSUER_KEY_DIR": str(home / "keys")}
    env.update(mode_env(mode, request, home, REDIS_DATABASE))
    with platform(env, home) as running:
        yield running


def audience(item: dict) -> str:
    """The first audience of an import item."""
    return item["audiences"][0]


def fresh_tokens(stack: Stack, issuer_name: str, aud: str) -> Callable[[], str]:
    """A new token (never seen by any worker) at each call."""
    return lambda: stack.token(issuer_name, aud, sub=f"client-{uuid.uuid4().hex}@clients")


# 1. Tenant changes from another process reach every worker.


def test_added_tenant_is_served_by_every_worker(stack: Stack) -> None:
    assert_every(stack.web.everyone("/t/newco/api/public"), NOT_FOUND)

    stack.import_tenants(stack.tenant("newco"))

    assert stack.web.until(OK, "/t/newco/api/public", within=PROPAGATION) < PROPAGATION


def test_deactivated_tenant_is_gone_from_every_worker(stack: Stack) -> None:
    item = stack.tenant("byeco")
    stack.import_tenants(item)
    token = stack.token("byeco", audience(item))
    stack.web.until(OK, "/t/byeco/api/private", token=token, within=PROPAGATION)

    stack.import_tenants({**item, "active": False})

    stack.web.until(NOT_FOUND, "/t/byeco/api/private", token=token, within=PROPAGATION)
    assert_every(stack.web.everyone("/t/byeco/api/public"), NOT_FOUND)


def test_repointed_issuer_is_trusted_by_every_worker(stack: Stack) -> None:
    item = stack.tenant("movingco", "movingco-old")
    old = stack.token("movingco-old", audience(item))
    new = stack.token("movingco-new", audience(item))
    stack.import_tenants(item)
    stack.web.until(OK, "/t/movingco/api/private", token=old, within=PROPAGATION)
    assert_every(stack.web.everyone("/t/movingco/api/private", token=new), answered(401))

    stack.import_tenants({**item, "issuer": stack.issuer_url("movingco-new")})

    stack.web.until(OK, "/t/movingco/api/private", token=new, within=PROPAGATION)
    assert_every(stack.web.everyone("/t/movingco/api/private", token=old), answered(401))


def test_moved_host_serves_its_new_tenant_in_every_worker(stack: Stack) -> None:
    first, second = stack.tenant("hosta", hosts=["shared.localhost"]), stack.tenant("hostb")
    stack.import_tenants(first, second)
    token = stack.token("hostb", audience(second))
    stack.web.until(realm_of("hosta"), PRIVATE, host="shared.localhost", within=PROPAGATION)
    assert_every(stack.web.everyone(PRIVATE, host="shared.localhost", token=token), answered(401))

    stack.import_tenants({**first, "hosts": []}, {**second, "hosts": ["shared.localhost"]})

    stack.web.until(realm_of("hostb"), PRIVATE, host="shared.localhost", within=PROPAGATION)
    assert_every(stack.web.everyone(PRIVATE, host="shared.localhost", token=token), OK)


def test_deleted_tenant_is_gone_from_every_worker(stack: Stack) -> None:
    stack.import_tenants(stack.tenant("goneco", hosts=["goneco.localhost"]))
    stack.web.until(OK, "/api/public", host="goneco.localhost", within=PROPAGATION)

    stack.shell("from tenants.models import Tenant; Tenant.objects.get(slug='goneco').delete()")

    stack.web.until(NOT_FOUND, "/api/public", host="goneco.localhost", within=PROPAGATION)
    assert_every(stack.web.everyone("/t/goneco/api/public"), NOT_FOUND)


# 2. Key rotation at the issuer.


def test_rotated_key_is_accepted_by_every_worker(stack: Stack) -> None:
    item = stack.tenant("rotor")
    stack.import_tenants(item)
    before = stack.token("rotor", audience(item))
    stack.web.until(OK, "/t/rotor/api/private", token=before, within=PROPAGATION)
    # The cooldown of the first fetch is over (the database cache keeps whole seconds).
    time.sleep(COOLDOWN + 1.2)

    fetches = stack.jwks_fetches("rotor")

    rotated = stack.rotate("rotor")
    after = fresh_tokens(stack, "rotor", audience(item))

    assert jwt.get_unverified_header(after())["kid"] == rotated["kid"]
    assert stack.web.get("/t/rotor/api/private", token=after()).status == 200
    assert stack.jwks_fetches("rotor") > fetches  # on demand: the refresh interval is 300 s
    stack.web.until(OK, "/t/rotor/api/private", token=after, within=PROPAGATION)
    assert_every(stack.web.everyone("/t/rotor/api/private", token=before), OK)


def test_key_the_issuer_stopped_publishing_stops_verifying_in_every_worker(stack: Stack) -> None:
    item = stack.tenant("retire")
    stack.import_tenants(item)
    repeated = stack.token("retire", audience(item))
    kid, key = DevKeyStore(stack.key_dir).current("retire")

    def removed_key_token() -> str:
        now = int(time.time())
        claims = {"iss": item["issuer"], "aud": audience(item), "iat": now, "exp": now + 600}
        claims["sub"] = f"client-{uuid.uuid4().hex}@clients"
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})

    env = {**stack.env, "AUTHZ_JWKS_REFRESH_INTERVAL": str(REFRESH)}
    with gunicorn(env, stack.home, "web-refresh") as web:
        web.until(OK, "/t/retire/api/private", token=removed_key_token, within=PROPAGATION)
        assert_every(web.everyone("/t/retire/api/private", token=repeated), OK)

        stack.rotate("retire")
        stack.rotate("retire")  # only the two newer keys are published now

        refused = answered(401, "unknown_key")
        bound = REFRESH + RECHECK + 2
        web.until(refused, "/t/retire/api/private", token=removed_key_token, within=bound)
        assert_every(web.everyone("/t/retire/api/private", token=repeated), refused)


# 3. A hanging issuer costs one worker for at most the fetch deadline.


class DrippingJWKS(BaseHTTPRequestHandler):
    """Sends the headers of a large key set, then one byte every half second, forever."""

    server: "DripServer"

    def do_GET(self) -> None:
        """Drip until the client gives up or the server stops."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            self.wfile.write(b'{"keys": [')
            while not self.server.stopping.wait(0.5):
                self.wfile.write(b" ")
                self.wfile.flush()
        except OSError:
            pass  # the fetch gave up and closed the connection

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


class DripServer(ThreadingHTTPServer):
    """A threaded server of DrippingJWKS that can be stopped mid-drip."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), DrippingJWKS)
        self.stopping = threading.Event()


@pytest.fixture
def dripping_jwks_url() -> Iterator[str]:
    """The URL of a key set that never finishes arriving."""
    server = DripServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.stopping.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_dripping_issuer_answers_503_within_the_deadline_and_others_stay_fast(
    stack: Stack, dripping_jwks_url: str
) -> None:
    steady, drip = stack.tenant("steady"), stack.tenant("drip", jwks_url=dripping_jwks_url)
    stack.import_tenants(steady, drip)
    steady_token = stack.token("steady", audience(steady))
    drip_token = stack.token("drip", audience(drip))
    stack.web.until(OK, "/t/steady/api/private", token=steady_token, within=PROPAGATION)
    stack.web.until(OK, "/t/drip/api/public", within=PROPAGATION)

    with ThreadPoolExecutor(max_workers=1) as pool:
        hanging = pool.submit(stack.web.get, "/t/drip/api/private", token=drip_token)
        time.sleep(0.3)  # one worker is now reading the drip
        meanwhile = [stack.web.get("/t/steady/api/private", token=steady_token) for _ in range(10)]
        still_hanging = not hanging.done()
        second = stack.web.get("/t/drip/api/private", token=drip_token)
        first = hanging.result()

    assert still_hanging
    assert (first.status, first.code) == (503, "issuer_unavailable")
    assert first.seconds < FETCH_DEADLINE + 2, first
    assert all(a.status == 200 and a.seconds < 1 for a in meanwhile), meanwhile
    # The other worker waits for that one fetch, not a fetch of its own, and answers when it ends.
    assert (second.status, second.code) == (503, "issuer_unavailable"), second
    assert second.pid != first.pid and second.seconds < FETCH_DEADLINE + 1, second
    assert_every(stack.web.everyone("/t/steady/api/private", token=steady_token), OK)


def test_a_clean_stop_ends_within_the_graceful_timeout_while_a_fetch_hangs(
    stack: Stack, dripping_jwks_url: str, tmp_path: Path
) -> None:
    hung = stack.tenant("hung", jwks_url=dripping_jwks_url)
    stack.import_tenants(hung)
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "config.wsgi", "-w", "2", "--no-control-socket"]
    command += ["-b", f"127.0.0.1:{port}", "--graceful-timeout", "10"]
    with running(command, stack.env, tmp_path / "sigterm.log") as master:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", master, tmp_path / "sigterm.log")
        url = f"http://127.0.0.1:{port}/t/hung/api/private"
        headers = {"Authorization": f"Bearer {stack.token('hung', audience(hung))}"}
        with ThreadPoolExecutor(max_workers=1) as pool:
            hanging = pool.submit(requests.get, url, headers=headers, timeout=30)
            time.sleep(0.5)  # a worker is now reading the drip
            stopped_at = time.monotonic()
            master.send_signal(signal.SIGTERM)
            exit_code = master.wait(timeout=30)
            seconds = time.monotonic() - stopped_at
            answer = hanging.result()

    assert exit_code == 0
    assert seconds < 10, f"took {seconds:.1f} s to stop"
    assert (answer.status_code, answer.json()["code"]) == (503, "issuer_unavailable")


DRIP = 25.0  # longer than the background fetch deadline (15 s)


def test_tenant_changes_reach_every_worker_in_time_while_a_key_set_refresh_drips(
    stack: Stack,
) -> None:
    dripper, changing = stack.tenant(f"dripper-{RUN}"), stack.tenant(f"changing-{RUN}")
    stack.import_tenants(dripper, changing)
    path, token = (
        f"/t/{dripper['slug']}/api/private",
        stack.token(dripper["slug"], audience(dripper)),
    )
    env = {**stack.env, "AUTHZ_JWKS_REFRESH_INTERVAL": str(REFRESH)}
    with gunicorn(env, stack.home, "web-drip") as web:
        web.until(OK, path, token=token, within=PROPAGATION)  # both workers use the key set
        web.until(OK, f"/t/{changing['slug']}/api/public", within=PROPAGATION)
        fetches = stack.jwks_fetches(dripper["slug"])
        make_slow(stack, dripper["slug"], DRIP)
        try:
            started = time.monotonic()
            while stack.jwks_fetches(dripper["slug"]) == fetches:  # a refresh is now dripping
                assert time.monotonic() - started < REFRESH * 3, "no background refresh began"
                assert_every(web.everyone(path, token=token), OK)  # keeps the key set in use

            stack.import_tenants({**changing, "active": False})

            elapsed = web.until(NOT_FOUND, f"/t/{changing['slug']}/api/public", within=PROPAGATION)
            assert elapsed < PROPAGATION
            assert stack.jwks_fetches(dripper["slug"]) == fetches + 1  # still that one refresh
        finally:
            make_slow(stack, dripper["slug"], 0)


# 4. Slugs and hosts that look like the platform's own keys.

HOSTILE_SLUGS = ("generation", "internal", "jwks-stamp", "tenants-config-version")
ADMIN_LINK = re.compile(r'href="/admin/tenants/tenant/(\d+)/change/[^"]*">([^<]+)</a>')


def admin_session(stack: Stack) -> requests.Session:
    """A logged-in superuser session on the admin."""
    env = {**stack.env, "DJANGO_SUPERUSER_PASSWORD": "control-plane-admin"}
    manage(env, "createsuperuser", "--no-input", "--username", "root", "--email", "root@x.test")
    session = requests.Session()
    login = f"{stack.web.url}/admin/login/"
    session.get(login, timeout=10).raise_for_status()
    credentials = {"username": "root", "password": "control-plane-admin", "next": "/admin/"}
    credentials["csrfmiddlewaretoken"] = session.cookies["csrftoken"]
    response = session.post(login, data=credentials, timeout=10)
    assert response.url.endswith("/admin/"), response.text[:500]
    return session


def test_hostile_slugs_and_hosts_each_work_without_disturbing_the_others(stack: Stack) -> None:
    items = [stack.tenant(slug, hosts=[f"{slug}.localhost"]) for slug in HOSTILE_SLUGS]
    items += [stack.tenant("dotted", hosts=["a.b.localhost"]), stack.tenant("plain")]
    stack.import_tenants(*items)
    tokens = {item["slug"]: stack.token(item["slug"], audience(item)) for item in items}

    for item in items:
        slug = item["slug"]
        assert_every(stack.web.everyone(f"/t/{slug}/api/private", token=tokens[slug]), OK)
        for host in item.get("hosts", []):
            assert_every(stack.web.everyone(PRIVATE, host=host, token=tokens[slug]), OK)
    refused = stack.web.everyone("/t/internal/api/private", token=tokens["generation"])
    assert_every(refused, answered(401))

    session = admin_session(stack)
    changelist = session.get(f"{stack.web.url}/admin/tenants/tenant/", timeout=10)
    assert changelist.status_code == 200
    ids = {slug: pk for pk, slug in ADMIN_LINK.findall(changelist.text)}
    assert set(ids) >= {*HOSTILE_SLUGS, "dotted"}, changelist.text[:2000]
    for slug in (*HOSTILE_SLUGS, "dotted"):
        page = session.get(f"{stack.web.url}/admin/tenants/tenant/{ids[slug]}/change/", timeout=10)
        assert page.status_code == 200, (slug, page.status_code)

    stack.import_tenants(*({**item, "active": False} for item in items[:2]))

    stack.web.until(NOT_FOUND, "/api/public", host="generation.localhost", within=PROPAGATION)
    stack.web.until(NOT_FOUND, "/t/internal/api/public", within=PROPAGATION)
    for item in items[2:]:
        path = f"/t/{item['slug']}/api/private"
        assert_every(stack.web.everyone(path, token=tokens[item["slug"]]), OK)


# 4b. DPoP: a proof is good once in the whole deployment; nonces hold in every worker.


def dpop_call(stack: Stack, path: str, token: str, key: object, nonce: str | None = None):
    """Headers for one DPoP request to ``path`` with a fresh proof; ``Web`` sends the Host
    header ``127.0.0.1``, so that is the URL the request addresses."""
    url = f"http://127.0.0.1{path}"

    def headers() -> dict[str, str]:
        proof = dpop.make_proof(key, "GET", url, access_token=token, nonce=nonce)
        return {"Authorization": f"DPoP {token}", "DPoP": proof}

    return headers


def test_a_dpop_proof_is_accepted_once_across_every_worker(stack: Stack) -> None:
    item = stack.tenant("proofs")
    stack.import_tenants(item)
    key = dpop.new_key()
    token = stack.token("proofs", audience(item), dpop_key=key)
    path = "/t/proofs/api/private"
    fresh = dpop_call(stack, path, token, key)
    # Both workers take fresh proofs, once the new tenant and its key set reached them.
    stack.web.until(OK, path, headers=fresh, within=PROPAGATION)

    crossed = False
    for _ in range(10):  # until one worker refused a proof that the other accepted
        proof = fresh()
        answers = stack.web.ask(path, headers=proof, n=8)
        accepted = [a for a in answers if a.status == 200]
        assert len(accepted) == 1, summary(answers)
        replays = [a for a in answers if a.status != 200]
        assert all(a.code == "invalid_dpop_proof" for a in replays), summary(answers)
        crossed = any(a.pid != accepted[0].pid for a in replays)
        if crossed:
            break
    assert crossed, "no replay reached a worker other than the one that accepted the proof"


def test_a_forged_proof_sent_to_every_worker_leaves_the_victims_proof_id_unused(
    stack: Stack,
) -> None:
    item = stack.tenant("victims")
    stack.import_tenants(item)
    victim, attacker = dpop.new_key(), dpop.new_key()
    token = stack.token("victims", audience(item), dpop_key=victim)
    path, url = "/t/victims/api/private", "http://127.0.0.1/t/victims/api/private"
    stack.web.until(OK, path, headers=dpop_call(stack, path, token, victim), within=PROPAGATION)
    victims_jwk = {"jwk": dpop.public_jwk(victim)}

    def forged() -> dict[str, str]:  # the victim's key and a chosen jti, the attacker's signature
        proof = dpop.make_proof(attacker, "GET", url, token, jti="chosen", headers=victims_jwk)
        return {"Authorization": f"DPoP {token}", "DPoP": proof}

    refused = stack.web.everyone(path, headers=forged, n=8)
    genuine = dpop.make_proof(victim, "GET", url, access_token=token, jti="chosen")
    first_use = {"Authorization": f"DPoP {token}", "DPoP": genuine}
    answer = stack.web.ask(path, headers=first_use, n=1)[0]

    assert all(a.code == "invalid_dpop_proof" for a in refused), summary(refused)
    assert answer.status == 200, summary([answer])


def test_a_dpop_nonce_issued_by_one_worker_is_accepted_by_every_worker(stack: Stack) -> None:
    item = stack.tenant("nonces", dpop_nonce=True)
    stack.import_tenants(item)
    key = dpop.new_key()
    token = stack.token("nonces", audience(item), dpop_key=key)
    path = "/t/nonces/api/private"
    stack.web.until(
        answered(401, "use_dpop_nonce"),
        path,
        within=PROPAGATION,
        headers=dpop_call(stack, path, token, key),
    )
    url = f"{stack.web.url}{path}"
    proof = dpop.make_proof(key, "GET", url, access_token=token)
    first = requests.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": proof}, timeout=10)
    nonce = first.headers["DPoP-Nonce"]

    answers = stack.web.everyone(path, headers=dpop_call(stack, path, token, key, nonce))

    assert_every(answers, OK)


# 5. Redis flushed, then stopped and started again.


def platform_script(*args: str | Path) -> str:
    """Run one of platform/'s scripts; its output."""
    command = [str(ROOT / "platform" / str(args[0])), *map(str, args[1:])]
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "mode", [pytest.param("redis", marks=pytest.mark.django_db(transaction=True))], indirect=True
)
def test_redis_flush_and_restart_keep_serving_and_changes_still_arrive(
    stack: Stack, mode: str, tmp_path: Path
) -> None:
    redis_dir = tmp_path / "redis"
    url = platform_script("start-redis", redis_dir).strip()
    try:
        items = [stack.tenant(slug) for slug in ("kept", "dropped", "stopped", "restarted")]
        items[0]["rate_limit_per_subject"] = "1000/min"  # counted in the Redis about to stop
        stack.import_tenants(*items[:3])
        kept = fresh_tokens(stack, "kept", audience(items[0]))
        env = {**stack.env, "REDIS_URL": url}
        with gunicorn(env, tmp_path, "web-own-redis") as web:
            web.until(OK, "/t/kept/api/private", token=kept, within=PROPAGATION)
            web.until(OK, "/t/dropped/api/public", within=PROPAGATION)
            web.until(OK, "/t/stopped/api/public", within=PROPAGATION)

            redis.Redis.from_url(url).flushall()
            assert_every(web.everyone("/t/kept/api/private", token=kept), OK)
            stack.import_tenants({**items[1], "active": False}, env=env)
            web.until(NOT_FOUND, "/t/dropped/api/public", within=PROPAGATION)

            platform_script("stop-redis", redis_dir)
            assert_every(web.everyone("/t/kept/api/private", token=kept), OK)
            assert (
                "Cannot count requests in the shared store"
                in (tmp_path / "web-own-redis.log").read_text()
            )
            stack.import_tenants({**items[2], "active": False}, env=env)
            web.until(NOT_FOUND, "/t/stopped/api/public", within=PROPAGATION)

            port = url.rsplit(":", 1)[1].split("/")[0]
            platform_script("start-redis", redis_dir, port)
            stack.import_tenants(items[3], env=env)
            restarted = fresh_tokens(stack, "restarted", audience(items[3]))
            web.until(OK, "/t/restarted/api/private", token=restarted, within=PROPAGATION)
            assert_every(web.everyone("/t/kept/api/private", token=kept), OK)
    finally:
        platform_script("stop-redis", redis_dir)


# 6. Without a worker, a key set fetched by one web process serves the others.


def test_second_worker_uses_the_key_set_the_first_fetched(stack: Stack) -> None:
    item = stack.tenant("solo")
    stack.import_tenants(item)
    stack.web.until(OK, "/t/solo/api/public", within=PROPAGATION)
    assert stack.jwks_fetches("solo") == 0  # eager Celery: the import fetched nothing

    first = stack.web.get("/t/solo/api/private", token=stack.token("solo", audience(item)))
    assert first.status == 200
    assert stack.jwks_fetches("solo") == 1
    jwks_url = f"{item['issuer']}.well-known/jwks.json"
    stored = stack.shell(
        f"from authz.jwks import read_record; print(len(read_record({jwks_url!r}).keys))"
    )
    assert stored == "1"

    answers = stack.web.everyone(
        "/t/solo/api/private", token=fresh_tokens(stack, "solo", audience(item))
    )

    assert_every(answers, OK)
    assert {a.pid for a in answers} - {first.pid}
    assert stack.jwks_fetches("solo") == 1


def test_tenants_sharing_a_key_set_share_one_fetch_across_workers(stack: Stack) -> None:
    issuer = f"sharing-{RUN}"
    items = [stack.tenant(f"sharer-{n}-{RUN}", issuer) for n in "ab"]
    stack.import_tenants(*items)
    stack.web.until(OK, f"/t/{items[1]['slug']}/api/public", within=PROPAGATION)

    first = stack.web.get(
        f"/t/{items[0]['slug']}/api/private", token=stack.token(issuer, audience(items[0]))
    )
    answers = stack.web.everyone(
        f"/t/{items[1]['slug']}/api/private", token=fresh_tokens(stack, issuer, audience(items[1]))
    )

    assert first.status == 200, first
    assert_every(answers, OK)
    assert stack.jwks_fetches(issuer) == 1


def test_every_worker_serves_the_stored_keys_while_their_issuer_is_down(stack: Stack) -> None:
    name = f"downcached-{RUN}"
    DevKeyStore(stack.key_dir).current(name)  # the stack's issuer mints with the same key
    down = start_in_thread(DevKeyStore(stack.key_dir))
    item = stack.tenant(name, jwks_url=f"{down.url_for(name)}.well-known/jwks.json")
    stack.import_tenants(item)
    stack.web.until(OK, f"/t/{name}/api/public", within=PROPAGATION)
    first = stack.web.get(f"/t/{name}/api/private", token=stack.token(name, audience(item)))
    assert (first.status, down.hits("/.well-known/jwks.json")) == (200, 1), first

    down.stop()
    answers = stack.web.everyone(
        f"/t/{name}/api/private", token=fresh_tokens(stack, name, audience(item))
    )

    assert_every(answers, OK)
    assert {a.pid for a in answers} - {first.pid}


def test_made_up_kids_at_every_worker_cost_one_fetch_per_cooldown(stack: Stack) -> None:
    item = stack.tenant(f"kids-{RUN}")
    stack.import_tenants(item)
    slug = item["slug"]
    stack.web.until(
        OK, f"/t/{slug}/api/private", token=stack.token(slug, audience(item)), within=PROPAGATION
    )
    time.sleep(COOLDOWN + 1.2)  # the first fetch's cooldown is over (whole seconds in the database)
    fetches = stack.jwks_fetches(slug)
    _, key = DevKeyStore(stack.key_dir).current(slug)

    def made_up_kid() -> str:
        now = int(time.time())
        claims = {"iss": item["issuer"], "aud": audience(item), "iat": now, "exp": now + 600}
        return jwt.encode({**claims, "sub": "x@clients"}, key, "RS256", {"kid": uuid.uuid4().hex})

    started = time.monotonic()
    answers = stack.web.ask(f"/t/{slug}/api/private", token=made_up_kid, n=40)
    elapsed = time.monotonic() - started

    assert_every(answers, answered(401, "unknown_key"))
    assert 1 <= stack.jwks_fetches(slug) - fetches <= 1 + elapsed / COOLDOWN, elapsed


BURST_CLIENTS, BURST_REQUESTS = 8, 64
# Real issuers take a round trip or more over the internet, each its own.
LATENCIES = (0.3, 0.6)


def make_slow(stack: Stack, issuer_name: str, seconds: float) -> None:
    """The development issuer's key set of this issuer now takes ``seconds`` to arrive."""
    url = f"{stack.issuer_url(issuer_name)}slow"
    requests.post(url, json={"seconds": seconds}, timeout=10).raise_for_status()


def cold_burst(stack: Stack, tokens: dict[str, list[str]]) -> dict[str, list[int]]:
    """BURST_CLIENTS clients per tenant, all started at once, share its tokens; statuses."""
    clients = [(slug, batch) for slug, own in tokens.items() for batch in _shares(own)]
    barrier = threading.Barrier(len(clients))

    def client(slug: str, batch: list[str]) -> list[int]:
        barrier.wait(timeout=30)
        url = f"{stack.web.url}/t/{slug}/api/private"
        return [
            requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code
            for token in batch
        ]

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        answers = [(slug, pool.submit(client, slug, batch)) for slug, batch in clients]
        statuses: dict[str, list[int]] = {slug: [] for slug in tokens}
        for slug, answer in answers:
            statuses[slug] += answer.result()
    return statuses


def _shares(tokens: list[str]) -> list[list[str]]:
    return [tokens[index::BURST_CLIENTS] for index in range(BURST_CLIENTS)]


def test_a_burst_at_cold_tenants_waits_for_one_fetch_per_url_and_gets_no_503(
    stack: Stack,
) -> None:
    lone, first, second = f"lone-{RUN}", f"pair-a-{RUN}", f"pair-b-{RUN}"
    items = [stack.tenant(lone), stack.tenant(first, f"pair-{RUN}")]
    items.append(stack.tenant(second, f"pair-{RUN}"))
    stack.import_tenants(*items)
    stack.web.until(OK, f"/t/{second}/api/public", within=PROPAGATION)
    make_slow(stack, lone, LATENCIES[0])
    make_slow(stack, f"pair-{RUN}", LATENCIES[1])
    tokens = {
        item["slug"]: [
            stack.token(issuer, audience(item), sub=f"client-{n}@clients")
            for n in range(BURST_REQUESTS)
        ]
        for item, issuer in zip(items, (lone, f"pair-{RUN}", f"pair-{RUN}"), strict=True)
    }

    statuses = cold_burst(stack, tokens)

    counts = {slug: Counter(got) for slug, got in statuses.items()}
    assert all(got == {200: BURST_REQUESTS} for got in counts.values()), counts
    assert (stack.jwks_fetches(lone), stack.jwks_fetches(f"pair-{RUN}")) == (1, 1)


# 7. The embedded default, changed from another shell with no .env.


def test_import_from_another_shell_reaches_every_worker_within_2_s(stack: Stack) -> None:
    item = stack.tenant("shellco")
    stack.import_tenants(item)
    stack.web.until(OK, "/t/shellco/api/public", within=PROPAGATION)
    another_shell = {
        "PATH": os.environ["PATH"],
        "HOME": str(stack.home),
        "ENV_FILE": "",
        "DATABASE_URL": stack.env["DATABASE_URL"],
        "SECRET_KEY": SETTINGS["SECRET_KEY"],
        "AUTHZ_ALLOW_INSECURE_ISSUERS": "true",
        "AUTHZ_INSECURE_ISSUERS_ACKNOWLEDGED": "true",
        **{name: stack.env[name] for name in ("REDIS_URL",) if name in stack.env},
    }

    stack.import_tenants({**item, "active": False}, env=another_shell)

    assert stack.web.until(NOT_FOUND, "/t/shellco/api/public", within=2) < 2


# 8. Metrics: /metrics adds up every worker's figures, whichever worker answers the scrape.


def scrape(stack: Stack) -> dict[tuple[str, frozenset], float]:
    """Every sample of one /metrics answer, by (name, labels)."""
    headers = {"Authorization": f"Bearer {SETTINGS['METRICS_TOKEN']}", "Connection": "close"}
    response = requests.get(f"{stack.web.url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def refused_privately(samples: dict[tuple[str, frozenset], float], tenant: str) -> float:
    """401 not_authenticated on messages:private for ``tenant``, or for ``other``.

    The tenant label slot of ``tenant`` may be held by a tenant of an earlier test (one chance in
    METRICS_TENANT_LABELS each), and then its requests count under ``other``.
    """
    outcome = {"endpoint": "messages:private", "status": "401", "code": "not_authenticated"}
    return sum(
        samples.get(("authz_requests_total", frozenset({**outcome, "tenant": label}.items())), 0)
        for label in (tenant, "other")
    )


def test_metrics_add_up_every_worker_and_count_changes_in_each(stack: Stack) -> None:
    changes = ("authz_config_changes_applied_total", frozenset())
    before = scrape(stack)
    changes_before = before.get(changes, 0)
    stack.import_tenants(stack.tenant("metered"))
    stack.web.until(OK, "/t/metered/api/public", within=PROPAGATION)

    answers = stack.web.everyone("/t/metered/api/private")

    assert_every(answers, answered(401, "not_authenticated"))
    counted_before = refused_privately(before, "metered")
    for _ in range(4):  # whichever worker answers the scrape, it adds up both
        assert refused_privately(scrape(stack), "metered") - counted_before == len(answers)
    deadline = time.monotonic() + PROPAGATION  # a worker may have loaded it before its feed read
    while scrape(stack)[changes] - changes_before < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert scrape(stack)[changes] - changes_before >= 2  # each worker applied the import


def test_traffic_counts_of_every_worker_reach_the_store_for_the_admin(stack: Stack) -> None:
    counted = f"counted-{RUN}"
    stack.import_tenants(stack.tenant(counted))
    stack.web.until(OK, f"/t/{counted}/api/public", within=PROPAGATION)

    answers = stack.web.everyone(f"/t/{counted}/api/private")

    assert len({a.pid for a in answers}) == 2
    read = (
        "from tenants.traffic import tenant_traffic; "
        f"print(tenant_traffic({counted!r}).hour.get((401, 'not_authenticated'), 0))"
    )
    deadline = time.monotonic() + 5
    while (counted := int(stack.shell(read))) < len(answers) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert counted == len(answers)  # another process reads both workers' flushes


# 9. Rate limits hold across both workers: one count in the shared store, in both modes.


def limited_token(slug: str, sub: str) -> Callable[[Stack], str]:
    """A token of one of these tenants' issuers for its audience."""
    return lambda stack: stack.token(slug, f"https://api.{slug}.test", sub=sub)


@pytest.fixture(scope="module")
def limited(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """A gunicorn of the stack's mode with a limit on anonymous requests per address."""
    env = {**stack.env, "AUTHZ_RATE_LIMIT_ANONYMOUS_PER_ADDRESS": "6/min"}
    with gunicorn(env, tmp_path_factory.mktemp("limited"), "web-limited") as web:
        yield web


def limited_tenant(stack: Stack, web: Web, name: str, **limits: str) -> str:
    """A new tenant with these limits, served by every worker with its key set fetched, by
    requests that count against no limit of its own but the tenant's (one, at the end)."""
    slug = f"{name}-{RUN}"
    stack.import_tenants(stack.tenant(slug, **limits))
    if "rate_limit_per_tenant" not in limits:

        def own() -> str:  # a subject of its own each time
            return limited_token(slug, f"auth0|{uuid.uuid4()}")(stack)

        web.until(OK, f"/t/{slug}/api/private", token=own, within=PROPAGATION)
        return slug
    deadline = time.monotonic() + PROPAGATION
    warm = limited_token(slug, "auth0|warm-up")(stack)
    while web.get(f"/t/{slug}/api/private", token=warm).status != 200:
        assert time.monotonic() < deadline, "the tenant never reached a worker"
        time.sleep(0.1)
    time.sleep(RECHECK * 2)  # both workers have applied the import
    return slug


def statuses(answers: list[Answer]) -> list[int]:
    """The statuses, sorted."""
    return sorted(a.status for a in answers)


def test_a_subject_at_its_limit_is_refused_by_every_worker_and_others_are_served(
    stack: Stack, limited: Web
) -> None:
    quota = limited_tenant(stack, limited, "quota", rate_limit_per_subject="6/min")
    spare = limited_tenant(stack, limited, "spare", rate_limit_per_subject="6/min")
    alice = limited_token(quota, "auth0|alice")(stack)

    answers = limited.ask(f"/t/{quota}/api/private", token=alice, n=16)

    assert statuses(answers) == [200] * 6 + [429] * 10, summary(answers)
    assert all(a.code == "rate_limited" for a in answers if a.status == 429)
    assert len({a.pid for a in answers if a.status == 429}) == 2, summary(answers)
    bob = limited_token(quota, "auth0|bob")(stack)
    assert_every(limited.ask(f"/t/{quota}/api/private", token=bob, n=4), OK)
    other_tenant = limited_token(spare, "auth0|alice")(stack)
    assert_every(limited.ask(f"/t/{spare}/api/private", token=other_tenant, n=4), OK)


def test_a_tenant_limit_caps_all_its_subjects_together(stack: Stack, limited: Web) -> None:
    capped = limited_tenant(stack, limited, "capped", rate_limit_per_tenant="6/min")
    callers = [limited_token(capped, f"auth0|{n}")(stack) for n in "abc"]
    turn = iter(range(100))

    answers = limited.ask(f"/t/{capped}/api/private", token=lambda: callers[next(turn) % 3], n=12)

    assert statuses(answers) == [200] * 5 + [429] * 7, summary(answers)  # 6 with the warm-up


def test_anonymous_requests_are_limited_per_address(stack: Stack, limited: Web) -> None:
    open_door = limited_tenant(stack, limited, "door", rate_limit_per_subject="1000/min")

    answers = limited.ask(f"/t/{open_door}/api/private", n=10)

    assert statuses(answers) == [401] * 6 + [429] * 4, summary(answers)


def test_retry_after_is_honoured(stack: Stack, limited: Web) -> None:
    quick = limited_tenant(stack, limited, "quick", rate_limit_per_subject="3/s")
    token = limited_token(quick, "auth0|quick")(stack)
    headers = {"Authorization": f"Bearer {token}", "Connection": "close"}
    url = f"{limited.url}/t/{quick}/api/private"

    answers = [requests.get(url, headers=headers, timeout=10) for _ in range(6)]
    refused = answers[-1]
    assert refused.status_code == 429, [a.status_code for a in answers]
    time.sleep(int(refused.headers["Retry-After"]))

    assert requests.get(url, headers=headers, timeout=10).status_code == 200
    assert refused.headers["RateLimit-Policy"] == '"subject";q=3;w=1'
