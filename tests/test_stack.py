"""The compose deployment, proven without a Docker engine.

First the file itself: valid against the Compose Specification's JSON schema (vendored as
platform/compose-spec.json), every service of our image started by a platform/ start script, the
healthchecks, dependencies, volumes and scaling rules the deployment relies on.

Then the stack, natively: PostgreSQL and Redis of its own, the development issuer, two web
replicas, a worker and beat, each a separate process started by the very start script compose
runs, with the environment compose would give it (.env.example filled in, then the service's
``environment``); only addresses and paths differ. Over real HTTP, acting as the TLS proxy.
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.test_e2e import free_port, tenants_document
from tests.test_tasks import wait_for

ROOT = Path(__file__).resolve().parent.parent
PLATFORM = ROOT / "platform"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
OUR_IMAGE = {name: service for name, service in SERVICES.items() if "build" in service}
CORE = ("postgres", "redis", "web", "worker", "beat")
# The container runtime and bash set these; nobody configures them.
RUNTIME_VARIABLES = {"HOSTNAME", "BASH_SOURCE"}


def parse_env_file(text: str) -> dict[str, str]:
    """``NAME=value`` lines, as compose reads an env file (no quoting is used in ours)."""
    pairs = (line.split("=", 1) for line in text.splitlines() if re.match(r"[A-Z_]+=", line))
    return {name: value.strip() for name, value in pairs}


VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Z_]+)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}`` and ``$$``."""

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        current = variables.get(match["name"], "")
        if not current and match["op"] == ":?":
            pytest.fail(f"compose would refuse to start: {match['arg']}")
        return current or (match["arg"] if match["op"] == ":-" else "")

    return VARIABLE.sub(replace, value)


def service_environment(name: str, dotenv: Mapping[str, str]) -> dict[str, str]:
    """What compose passes to a container: the env_file, then the service's ``environment``."""
    service = SERVICES[name]
    passed = dict(dotenv) if service.get("env_file") == ".env" else {}
    for key, value in (service.get("environment") or {}).items():
        passed[key] = interpolate(str(value), dotenv)
    return passed


def healthcheck_shell(name: str) -> str:
    """A service's healthcheck as the shell command the container runs."""
    test = SERVICES[name]["healthcheck"]["test"]
    kind, *command = test
    assert kind in ("CMD-SHELL", "CMD")
    text = command[0] if kind == "CMD-SHELL" else " ".join(command)
    return interpolate(text, {})


# --- the compose file -------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification():
    schema = json.loads((PLATFORM / "compose-spec.json").read_text())
    jsonschema.Draft201909Validator.check_schema(schema)

    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in jsonschema.Draft201909Validator(schema).iter_errors(COMPOSE)
    ]

    assert errors == []


def test_every_service_of_our_image_runs_a_start_script():
    assert set(SERVICES) - set(OUR_IMAGE) == {"postgres", "redis"}
    for name, service in OUR_IMAGE.items():
        assert service["build"] == {"context": ".", "dockerfile": "platform/Dockerfile"}
        [script] = service["command"]
        assert script == f"platform/start-{name}", name
        assert os.access(ROOT / script, os.X_OK), script


def test_healthchecks_dependencies_and_volumes():
    checks = {name: healthcheck_shell(name) for name in CORE}
    assert checks["postgres"].startswith("pg_isready ")
    assert checks["redis"].startswith("redis-cli ping")
    assert "/readyz" in checks["web"]
    assert "celery -A config inspect ping -d celery@$" in checks["worker"]
    assert "celery -A config inspect ping -d celerybeat@$" in checks["beat"]
    for name in ("web", "worker", "beat"):
        conditions = {dep: rule["condition"] for dep, rule in SERVICES[name]["depends_on"].items()}
        assert set(conditions.values()) == {"service_healthy"}, name
        assert {"postgres", "redis"} <= set(conditions), name
    mounted = {
        volume.split(":")[0]
        for service in SERVICES.values()
        for volume in service.get("volumes", [])
    }
    assert mounted == set(COMPOSE["volumes"]), "every volume is a named volume, and used"
    assert SERVICES["beat"]["environment"]["BEAT_SCHEDULE_FILE"].startswith("/var/lib/beat/")


def test_web_and_worker_scale_and_beat_stays_single():
    for name in ("web", "worker"):
        assert "container_name" not in SERVICES[name]
        assert "volumes" not in SERVICES[name], "replicas share only PostgreSQL and Redis"
    [published] = SERVICES["web"]["ports"]
    host_ip, host_ports, container_port = interpolate(published, {}).split(":")
    assert re.fullmatch(r"\d+-\d+", host_ports), "a range of host ports: one per replica"
    assert (host_ip, container_port) == ("127.0.0.1", "8000")
    assert SERVICES["beat"]["deploy"]["replicas"] == 1
    assert all("profiles" not in SERVICES[name] for name in CORE)
    assert SERVICES["devissuer"]["profiles"] == ["dev"]


def configured_variables() -> set[str]:
    """Every environment variable the settings, gunicorn config, start scripts and compose read."""
    sources = {
        ROOT / "config" / "settings.py": r"env\.\w+\(\s*\"([A-Z_]+)\"",
        PLATFORM / "gunicorn.conf.py": r"os\.environ\.get\(\"([A-Z_]+)\"",
        ROOT / "docker-compose.yml": r"\$\$?\{([A-Z_]+)",
    }
    sources.update({script: r"\$\{([A-Z_]+)" for script in PLATFORM.glob("start-[wbd]*")})
    names = {
        name for path, pattern in sources.items() for name in re.findall(pattern, path.read_text())
    }
    names |= {key for service in OUR_IMAGE.values() for key in service.get("environment", {})}
    return names - RUNTIME_VARIABLES


def test_env_example_documents_every_variable():
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#? ?([A-Z_]+)=", example, flags=re.MULTILINE))

    assert configured_variables() - documented == set()
    assert "SECRET_KEY=\n" in example, "the example never ships a usable secret"


def test_compose_refuses_to_start_without_the_secret_key_or_database_password():
    for missing in ("SECRET_KEY", "POSTGRES_PASSWORD"):
        dotenv = {**filled_in_dotenv({}), missing: ""}
        with pytest.raises(pytest.fail.Exception, match=f"set {missing} in .env"):
            service_environment("web", dotenv)


def test_the_image_runs_every_app_as_a_user_and_bakes_no_secret():
    dockerfile = (PLATFORM / "Dockerfile").read_text().replace("\\\n", " ")
    copied = {
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    }
    local_apps = {path.parent.name for path in ROOT.glob("*/apps.py")}
    allowed = (PLATFORM / "Dockerfile.dockerignore").read_text()

    assert local_apps | {"config", "templates", "platform", "manage.py"} <= copied
    for source in copied:
        assert f"!{source.rstrip('/')}" in allowed, f"{source} is left out of the build context"
    assert re.search(r"^FROM python:[\d.]+-slim", dockerfile, flags=re.MULTILINE)
    assert re.search(r"^USER app$", dockerfile, flags=re.MULTILINE)
    assert not re.search(r"^(ENV|ARG)\b[^\n]*(SECRET|PASSWORD)", dockerfile, flags=re.MULTILINE)
    assert "collectstatic" in dockerfile and "STATIC_ROOT=" in dockerfile


def test_the_dependency_layer_is_redone_only_when_pyproject_changes():
    dockerfile = (PLATFORM / "Dockerfile").read_text().replace("\\\n", " ")
    lines = dockerfile.splitlines()
    install = next(i for i, line in enumerate(lines) if "pip install" in line)
    copied_before = [line.split()[1:-1] for line in lines[:install] if line.startswith("COPY ")]

    assert copied_before == [["pyproject.toml"]]


# --- the stack, natively ----------------------------------------------------------------------


class NativeStack:
    """The platform's processes on this machine, each in its own process group, logs in files."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: dict[str, subprocess.Popen] = {}
        self.issuer = ""  # the development issuer's base URL, once started

    def start(self, name: str, script: str, env: Mapping[str, str]) -> subprocess.Popen:
        """Run a start script from the repository root, as the image's WORKDIR."""
        with self.log_path(name).open("ab") as log:
            process = subprocess.Popen(
                [str(PLATFORM / script)],
                cwd=ROOT,
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process
        return process

    def stop(self, name: str, timeout: float = 30) -> int:
        """SIGTERM, as ``docker compose stop`` sends; return the exit status."""
        process = self.processes[name]
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=timeout)

    def kill_all(self) -> None:
        """Teardown whatever happened: every group we started is gone afterwards."""
        for process in self.processes.values():
            for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    continue
            process.poll()

    def leftovers(self) -> list[str]:
        """Names of started process groups that still have a live process."""
        left = []
        for name, process in self.processes.items():
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                continue
            left.append(name)
        return left

    def log_path(self, name: str) -> Path:
        """Where a process's output goes: one file each (``web#1`` writes ``web-1.log``)."""
        return self.workdir / f"{name.replace('#', '-')}.log"

    def log(self, name: str) -> str:
        """A process's output so far."""
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def events(self, role: str, **match: Any) -> list[dict[str, Any]]:
        """JSON log lines, of every process of a role, whose fields include ``match``."""
        found = []
        for path in sorted(self.workdir.glob(f"{role}*.log")):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    record = json.loads(line) if line.startswith("{") else None
                except ValueError:
                    continue  # a line still being written
                if record and all(record.get(key) == value for key, value in match.items()):
                    found.append(record)
        return found

    def all_logs(self) -> str:
        """Every process's output, for looking for what must never be logged."""
        return "\n".join(path.read_text(errors="replace") for path in self.workdir.glob("*.log"))


def run(command: list[str], env: Mapping[str, str], stdin: str | None = None) -> str:
    """Run a command to completion from the repository root; return its stdout."""
    result = subprocess.run(
        command,
        cwd=ROOT,
        env=dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{command}: {result.stdout}\n{result.stderr}"
    return result.stdout


def start_store(script: str, directory: Path, *args: str) -> str:
    """platform/start-postgres or start-redis; its URL."""
    return run([str(PLATFORM / script), str(directory), *args], os.environ).strip()


def require_root() -> None:
    """Fail, never skip, where platform/start-postgres cannot run: a skip would pass the suite."""
    if os.geteuid() != 0:
        pytest.fail(
            "platform/start-postgres runs PostgreSQL as the postgres user (runuser), so this "
            "test needs root: run platform/run-tests as root, as the CI and the container do."
        )


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """PostgreSQL and Redis of the stack's own, then its processes; all stopped afterwards."""
    require_root()
    # Outside tmp_path, whose parents the postgres user may not enter.
    pg_dir = Path(tempfile.mkdtemp(prefix="stack-postgres-"))
    redis_dir, logs = tmp_path / "redis", tmp_path / "logs"
    logs.mkdir()
    native = NativeStack(logs)
    try:
        database_url = start_store("start-postgres", pg_dir)
        redis_url = start_store("start-redis", redis_dir)
        yield {
            "native": native,
            "tmp": tmp_path,
            "database_url": database_url,
            "redis_url": redis_url,
            "pg_dir": pg_dir,
            "redis_dir": redis_dir,
        }
    finally:
        native.kill_all()
        subprocess.run([str(PLATFORM / "stop-redis"), str(redis_dir)], timeout=30, check=False)
        subprocess.run([str(PLATFORM / "stop-postgres"), str(pg_dir)], timeout=60, check=False)
        shutil.rmtree(pg_dir, ignore_errors=True)
        print(native.all_logs()[-20000:])  # shown by pytest only when the test fails


def filled_in_dotenv(extra: Mapping[str, str]) -> dict[str, str]:
    """.env as an operator writes it from .env.example: the required blanks filled in."""
    dotenv = parse_env_file((ROOT / ".env.example").read_text())
    dotenv.update(SECRET_KEY=secrets.token_urlsafe(50), POSTGRES_PASSWORD=secrets.token_urlsafe(16))
    dotenv.update(extra)
    return dotenv


def native_environment(service: str, dotenv: Mapping[str, str], **native: str) -> dict[str, str]:
    """Compose's environment for the service, then what differs natively: addresses and paths."""
    base = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "HOSTNAME": socket.gethostname(),
        "ENV_FILE": "",  # compose passes no .env into the container: a developer's must not leak
    }
    return {**base, **service_environment(service, dotenv), **native}


class Client:
    """HTTP to one web replica, as the TLS proxy forwards it."""

    def __init__(self, base: str) -> None:
        self.base = base

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        host: str = "127.0.0.1",
        proxied: bool = True,
        **kwargs: Any,
    ) -> requests.Response:
        """One request; ``proxied`` adds the proxy's X-Forwarded-Proto: https."""
        headers = {"Host": host}
        if proxied:
            headers["X-Forwarded-Proto"] = "https"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(
            method,
            f"{self.base}{path}",
            headers=headers,
            timeout=10,
            allow_redirects=False,
            **kwargs,
        )

    def status(self, path: str, token: str | None = None, host: str = "127.0.0.1") -> int:
        """The status of a GET."""
        return self.call("GET", path, token, host).status_code


def mint(issuer: str, name: str, scope: str = "", sub: str = "auth0|alice") -> str:
    """A token from the development issuer's token endpoint, over HTTP."""
    body = {"audience": f"https://api.{name}.test", "sub": sub, "expires_in": 900}
    if scope:
        body["scope"] = scope
    response = requests.post(f"{issuer}/{name}/oauth/token", json=body, timeout=10)
    response.raise_for_status()
    return response.json()["access_token"]


def health_passes(service: str, env: Mapping[str, str]) -> bool:
    """Run the service's compose healthcheck natively, in its environment."""
    result = subprocess.run(
        ["sh", "-c", healthcheck_shell(service)],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        timeout=60,
        check=False,
    )
    return result.returncode == 0


def refreshed(native: NativeStack, role: str, tenant: str, keys: int) -> bool:
    """Whether a role logged a successful refresh of a tenant's key set with this many keys."""
    url = f"{native.issuer}/{tenant}/.well-known/jwks.json"
    return bool(native.events(role, event="jwks_refresh", jwks_url=url, outcome="ok", keys=keys))


@pytest.mark.stack
@pytest.mark.timeout(300)
def test_the_stack_runs_as_compose_runs_it(stack):
    native: NativeStack = stack["native"]
    tmp: Path = stack["tmp"]
    issuer_port, web_ports = free_port(), (free_port(), free_port())
    issuer = native.issuer = f"http://127.0.0.1:{issuer_port}"
    recheck = 1.0
    # The operator's .env, plus what this test shortens or allows: a 2 s refresh interval and
    # an http issuer on loopback.
    dotenv = filled_in_dotenv(
        {
            "ALLOWED_HOSTS": ".localhost,127.0.0.1",
            "AUTHZ_JWKS_REFRESH_INTERVAL": "2",
            "AUTHZ_CONFIG_RECHECK_INTERVAL": str(recheck),
            "AUTHZ_ALLOW_INSECURE_ISSUERS": "true",
            "AUTHZ_INSECURE_ISSUERS_ACKNOWLEDGED": "true",
            "WEB_CONCURRENCY": "1",
            "WORKER_CONCURRENCY": "1",
            "METRICS_TOKEN": secrets.token_urlsafe(32),
        }
    )
    addresses = {
        "DATABASE_URL": stack["database_url"],
        "REDIS_URL": stack["redis_url"],
        "STATIC_ROOT": str(tmp / "staticfiles"),  # the image's ENV
    }
    env = {
        "web": [
            native_environment("web", dotenv, **addresses, BIND_ADDRESS="127.0.0.1", PORT=str(port))
            for port in web_ports
        ],
        "worker": native_environment("worker", dotenv, **addresses),
        "beat": native_environment(
            "beat", dotenv, **addresses, BEAT_SCHEDULE_FILE=str(tmp / "beat" / "schedule")
        ),
        "devissuer": native_environment(
            "devissuer",
            dotenv,
            **addresses,
            DEVISSUER_HOST="127.0.0.1",
            DEVISSUER_PORT=str(issuer_port),
            DEVISSUER_PUBLIC_URL="",
            DEVISSUER_KEY_DIR=str(tmp / "devissuer"),
        ),
    }
    (tmp / "beat").mkdir()
    webs = [Client(f"http://127.0.0.1:{port}") for port in web_ports]

    # The image's build step, collectstatic, exactly as the Dockerfile runs it.
    [build_step] = re.findall(
        r"^RUN (.*collectstatic.*)$", (PLATFORM / "Dockerfile").read_text(), re.M
    )
    run(["sh", "-c", build_step], env["web"][0])

    # Start in compose's order: the issuer; two web replicas at once (they take turns to
    # migrate); once web is healthy, the worker and beat.
    native.start("devissuer", "start-devissuer", env["devissuer"])
    for index, web_env in enumerate(env["web"]):
        native.start(f"web#{index}", "start-web", web_env)
    wait_for(lambda: _answers(f"{issuer}/_stats"), 30)
    for web in webs:
        wait_for(lambda web=web: _ready(web), 90)
    native.start("worker", "start-worker", env["worker"])
    native.start("beat", "start-beat", env["beat"])

    # Every compose healthcheck that runs in our image passes natively, as does PostgreSQL's.
    assert health_passes("web", env["web"][0])
    wait_for(lambda: health_passes("worker", env["worker"]), 60)
    wait_for(lambda: health_passes("beat", env["beat"]), 60)
    pg = re.match(r"postgres://(\w+)@([\d.]+):(\d+)/(\w+)", stack["database_url"])
    pg_env = dict(PGHOST=pg[2], PGPORT=pg[3], POSTGRES_USER=pg[1], POSTGRES_DB=pg[4])
    pg_path = f"/usr/lib/postgresql/15/bin:{os.environ['PATH']}"  # as platform/start-postgres
    assert health_passes("postgres", {**os.environ, **pg_env, "PATH": pg_path})

    # Import two tenants as an operator would (docker compose exec web ...). Saving them
    # queues a refresh of each key set, which the worker runs.
    output = run(
        [sys.executable, "manage.py", "tenants", "import", "-"],
        env["web"][0],
        stdin=tenants_document(issuer),
    )
    assert "Imported 2 tenant(s)" in output
    for slug in ("acme", "globex"):
        wait_for(lambda slug=slug: refreshed(native, "worker", slug, 1), 30)
    # The worker's refreshes reach the web role's /metrics, through the shared store.
    for web in webs:
        assert _scheduled_refreshes(web, dotenv["METRICS_TOKEN"], issuer) >= 2

    every_scope = "read:messages write:messages delete:messages"
    acme = mint(issuer, "acme", every_scope)
    acme_plain = mint(issuer, "acme")
    globex = mint(issuer, "globex", "read:messages", sub="auth0|bob")
    for web in webs:
        _call_every_endpoint(web, acme, acme_plain, globex)
    _check_request_logs(native, acme)

    # Rotate acme's key at the issuer: beat's schedule and the worker pick it up on their own.
    new_kid = requests.post(f"{issuer}/acme/rotate", timeout=10).json()["kid"]
    wait_for(lambda: refreshed(native, "worker", "acme", 2), 30)  # the new key, stored
    sent = [event["message"] for event in native.events("beat", logger="celery.beat")]
    assert any("Sending due task refresh-all-key-sets" in message for message in sent)
    time.sleep(recheck + 0.5)  # every process re-reads the shared key set after this
    rotated = mint(issuer, "acme", "read:messages")
    assert _kid(rotated) == new_kid
    for web in webs:
        assert web.status("/api/private-scoped", rotated, "acme.localhost") == 200
    assert not refreshed(native, "web", "acme", 2), "the web did not fetch the new key itself"

    # Stop the worker: the API keeps serving, readiness does not depend on it.
    assert native.stop("worker") == 0
    for web in webs:
        assert web.status("/api/private-scoped", rotated, "acme.localhost") == 200
        assert web.status("/t/globex/api/private-scoped", globex) == 200
        assert _ready(web)

    # Stop Redis: readiness names it; tokens whose keys each process holds keep passing.
    run([str(PLATFORM / "stop-redis"), str(stack["redis_dir"])], os.environ)
    for web in webs:
        response = web.call("GET", "/readyz", proxied=False)
        assert response.status_code == 503
        assert response.json()["failed"] == ["redis"]
        assert response.json()["checks"]["database"] == "ok"
        assert web.status("/api/private-scoped", rotated, "acme.localhost") == 200
        assert web.status("/api/private", acme_plain, "acme.localhost") == 200
        assert web.status("/t/globex/api/private-scoped", globex) == 200

    # Restart Redis on its address (empty: no persistence here) and the worker: readiness
    # recovers, beat's schedule refills the key sets, and a key rotated now is accepted.
    redis_port = stack["redis_url"].rsplit(":", 1)[1].split("/")[0]
    start_store("start-redis", stack["redis_dir"], redis_port)
    for web in webs:
        wait_for(lambda web=web: _ready(web), 30)
    native.start("worker#2", "start-worker", env["worker"])
    wait_for(lambda: health_passes("worker", env["worker"]), 60)
    globex_kid = requests.post(f"{issuer}/globex/rotate", timeout=10).json()["kid"]
    wait_for(lambda: refreshed(native, "worker", "globex", 2), 30)
    time.sleep(recheck + 0.5)
    globex_rotated = mint(issuer, "globex", "read:messages")
    assert _kid(globex_rotated) == globex_kid
    for web in webs:
        assert web.status("/t/globex/api/private-scoped", globex_rotated) == 200
        assert web.status("/api/private-scoped", rotated, "acme.localhost") == 200
    assert not refreshed(native, "web", "globex", 2)

    # Stop PostgreSQL: readiness names it; warm requests need no query and keep passing.
    run([str(PLATFORM / "stop-postgres"), str(stack["pg_dir"])], os.environ)
    for web in webs:
        response = web.call("GET", "/readyz", proxied=False)
        assert (response.status_code, response.json()["failed"]) == (503, ["database"])
        assert web.status("/t/globex/api/private-scoped", globex_rotated) == 200

    # Stop everything as compose does (SIGTERM): each exits cleanly, leaving no process behind.
    for name in ("beat", "worker#2", "web#0", "web#1", "devissuer"):
        assert native.stop(name) == 0, f"{name}: {native.log(name)[-2000:]}"
    assert native.leftovers() == []
    run([str(PLATFORM / "stop-redis"), str(stack["redis_dir"])], os.environ)
    assert not _redis_running(stack["redis_dir"])
    assert not (stack["pg_dir"] / "data" / "postmaster.pid").exists()
    assert secrets_never_logged(native, [acme, acme_plain, globex, rotated, globex_rotated])


def _scheduled_refreshes(web: Client, metrics_token: str, issuer: str) -> float:
    """The worker's successful refreshes of this issuer's key sets, as /metrics reports them.

    A URL whose every probed label slot is held is counted as ``other`` (rare, yet possible);
    this stack serves no other issuer, so ``other`` is this issuer's too.
    """
    response = requests.get(
        f"{web.base}/metrics", headers={"Authorization": f"Bearer {metrics_token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "authz_keyset_fetch_total"
        and (sample.labels["jwks_url"].startswith(issuer) or sample.labels["jwks_url"] == "other")
        and (sample.labels["trigger"], sample.labels["outcome"]) == ("scheduled", "ok")
    )


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _ready(web: Client) -> bool:
    return _answers(f"{web.base}/readyz")


def _kid(token: str) -> str:
    import jwt

    return jwt.get_unverified_header(token)["kid"]


def _redis_running(redis_dir: Path) -> bool:
    pidfile = redis_dir / "redis.pid"
    stat = Path(f"/proc/{pidfile.read_text().strip()}/stat") if pidfile.exists() else None
    return bool(stat and stat.exists() and stat.read_text().split()[2] != "Z")


def _call_every_endpoint(web: Client, acme: str, acme_plain: str, globex: str) -> None:
    """The API, the schema and docs, admin static files and the probes, on one replica."""
    host = "acme.localhost"
    assert web.status("/api/public", host=host) == 200
    assert web.status("/api/private", acme_plain, host) == 200
    assert web.status("/api/private-scoped", acme, host) == 200
    assert web.status("/t/acme/api/private-scoped", acme) == 200
    assert web.status("/api/private", host=host) == 401
    assert web.call("GET", "/api/private-scoped", acme_plain, host).json()["code"] == (
        "insufficient_scope"
    )
    assert web.status("/api/private", globex, host) == 401
    assert web.status("/api/private-scoped", globex, "globex.localhost") == 200
    assert web.call("GET", "/api/public", host="nobody.localhost").json()["code"] == (
        "tenant_not_found"
    )

    created = web.call("POST", "/api/messages", acme, host, json={"text": "hello"})
    assert created.status_code == 201, created.text
    message_id = created.json()["id"]
    listed = web.call("GET", "/api/messages", acme, host).json()
    assert message_id in [message["id"] for message in listed["results"]]
    assert web.status(f"/api/messages/{message_id}", acme, host) == 200
    assert web.status(f"/t/globex/api/messages/{message_id}", globex) == 404
    assert web.call("DELETE", f"/api/messages/{message_id}", acme, host).status_code == 204

    assert web.status("/api/schema") == 200
    docs = web.call("GET", "/api/docs")
    assert docs.status_code == 200
    assert web.status("/admin/login/") == 200
    login_page = web.call("GET", "/admin/login/").text
    static = re.search(r'href="(/static/admin/css/base\.[0-9a-f]+\.css)"', login_page)
    assert static, "admin pages link hashed static files (collected at build)"
    assert web.status(static[1]) == 200
    assert web.call("GET", "/healthz", proxied=False).json() == {"status": "ok"}

    https = web.call("GET", "/api/public", host=host)
    assert https.headers["Strict-Transport-Security"].startswith("max-age=")
    plain = web.call("GET", "/api/public", host=host, proxied=False)
    assert plain.status_code == 301
    assert plain.headers["Location"] == f"https://{host}/api/public"


def _check_request_logs(native: NativeStack, acme: str) -> None:
    """One JSON line per API request, with the fields operators search by."""
    requests_logged = native.events("web", event="api_request")
    fields = {"time", "tenant", "method", "path", "status", "latency_ms", "error_code", "subject"}
    assert requests_logged and all(fields <= set(record) for record in requests_logged)
    [created, *_] = native.events("web", event="api_request", method="POST", status=201)
    assert (created["tenant"], created["subject"]) == ("acme", "auth0|alice")
    refused = native.events("web", event="api_request", status=403)
    assert refused[0]["error_code"] == "insufficient_scope"
    unknown = native.events("web", event="api_request", error_code="tenant_not_found")
    assert unknown[0]["tenant"] is None
    assert native.events("web", event="http_access", path="/healthz")
    refresh = native.events("worker", event="jwks_refresh")[0]
    assert {"jwks_url", "outcome", "keys", "duration_ms"} <= set(refresh)


def secrets_never_logged(native: NativeStack, tokens: list[str]) -> bool:
    """No token, nor a token's signature, appears in any process's output."""
    logs = native.all_logs()
    return not any(token in logs or token.rsplit(".", 1)[1] in logs for token in tokens)
