"""Processes a benchmark run starts (PostgreSQL, Redis, issuer, worker, gunicorn), and their stop.

Every process is started in its own session so that stopping it also stops its children
(gunicorn's and Celery's workers); whatever happens, leaving the ``Stack`` stops them all.
"""

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLATFORM = ROOT / "platform"
PYTHON = sys.executable


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> tuple:
    """GET ``url``; return (status, headers, body), also for HTTP error statuses."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback only
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def wait_until(condition: Callable[[], object], what: str, timeout: float = 60) -> object:
    """Poll until ``condition()`` is truthy; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")


class Stack:
    """Starts the benchmark's processes and services; stops all of them on exit."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-"))
        self._stops: list[Callable[[], None]] = [lambda: shutil.rmtree(self.workdir, True)]

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is not None and issubclass(exc_type, Exception):  # a failure, not a stop
            for log in sorted(self.workdir.glob("*.log")):
                print(f"--- last lines of {log.name}:\n{self.log_tail(log.stem)}", file=sys.stderr)
        while self._stops:
            try:
                self._stops.pop()()
            except Exception as error:  # keep stopping the rest
                print(f"bench: cleanup step failed: {error}", file=sys.stderr)

    def service(self, kind: str) -> tuple[str, Path]:
        """Start ``platform/start-<kind>`` (postgres or redis); return its URL and directory."""
        directory = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))  # chowned to postgres
        self._stops.append(lambda: shutil.rmtree(directory, True))
        stop = [str(PLATFORM / f"stop-{kind}"), str(directory)]
        self._stops.append(lambda: subprocess.run(stop, check=False, capture_output=True))  # noqa: S603
        started = subprocess.run(  # noqa: S603 - our own platform scripts
            [str(PLATFORM / f"start-{kind}"), str(directory)],
            check=True,
            capture_output=True,
            text=True,
        )
        return started.stdout.strip().splitlines()[-1], directory

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path = ROOT
    ) -> subprocess.Popen:
        """Start a long-running process in its own session, output to ``<workdir>/<name>.log``."""
        log = (self.workdir / f"{name}.log").open("ab")
        process = subprocess.Popen(  # noqa: S603 - argv built by the benchmark
            argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self._stops.append(lambda: self.stop(process))
        return process

    def stop(self, process: subprocess.Popen) -> None:
        """Stop a spawned process and its children: SIGTERM to its group, SIGKILL after 20 s."""
        if process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def log_tail(self, name: str, lines: int = 20) -> str:
        """The last lines of a spawned process's log, for error messages."""
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_http(self, name: str, process: subprocess.Popen, url: str) -> None:
        """Wait until ``url`` answers; fail with the process log if the process died."""

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.log_tail(name)}")
            try:
                http_get(url, timeout=2)
            except OSError:
                return False
            return True

        wait_until(answers, f"{name} answering at {url}")


# What the platform's processes get from the benchmark, never from the caller's environment.
PLATFORM_KEYS = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_TASK_ALWAYS_EAGER")


PROXY_SECRET = "bench-proxy-secret-of-enough-length-0123456789"  # noqa: S105 - loopback only


def platform_env(database_url: str, redis_url: str | None, key_dir: Path) -> dict[str, str]:
    """Environment of the platform's processes: production settings, loopback issuers allowed.

    Without ``redis_url`` it is the embedded deployment: the database cache is the shared store
    and tasks run in-process (no broker, no worker).
    """
    env = {key: value for key, value in os.environ.items() if key not in PLATFORM_KEYS}
    env.update(
        {
            "DATABASE_URL": database_url,
            "SECRET_KEY": "bench-only-not-secret",
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1,localhost,.localhost",
            "AUTHZ_ALLOW_INSECURE_ISSUERS": "true",
            "AUTHZ_INSECURE_ISSUERS_ACKNOWLEDGED": "true",
            "CELERY_TASK_ALWAYS_EAGER": "false" if redis_url else "true",
            # No beat runs here: without this, a web worker's refresher would fetch the key sets
            # it uses once they are 5 minutes old, a background fetch in whichever row it fell.
            "AUTHZ_JWKS_REFRESH_INTERVAL": "3600",
            "DEVISSUER_KEY_DIR": str(key_dir),
            "LOG_LEVEL": "WARNING",
            # The forward-auth decision endpoint on (decision_repeat).
            "AUTHZ_PROXY_SECRET": PROXY_SECRET,
        }
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    """Run a manage.py command to completion; return its stdout."""
    result = subprocess.run(  # noqa: S603 - this interpreter, our manage.py
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result.stdout


def import_tenants(env: dict[str, str], workdir: Path, tenants: list[dict]) -> float:
    """Import tenants through ``manage.py tenants import``; return the seconds it took."""
    path = workdir / f"tenants-{len(tenants)}.json"
    path.write_text(json.dumps({"tenants": tenants}))
    started = time.monotonic()
    manage(env, "tenants", "import", str(path), timeout=3600)
    return time.monotonic() - started


PROBE_APP = "bench.probe_wsgi:application"
HELD_PATH = "/_bench/held"  # probe_wsgi answers there how many tenants the worker holds


@dataclass
class Platform:
    """The running services of one deployment mode and the environment of its processes.

    ``redis``: PostgreSQL, Redis (shared store and broker) and a Celery worker. ``embedded``: a
    SQLite file, the database cache as the shared store, tasks in-process, no worker.
    """

    stack: Stack
    mode: str
    env: dict[str, str]
    issuer_url: str
    redis_url: str | None = None
    postgres_log: Path | None = None
    tenants: int = 0

    @property
    def sql_dir(self) -> Path:
        """Where ``probe_wsgi`` writes the web workers' SQL counts (embedded mode)."""
        return self.stack.workdir / "sql"


def start_platform(stack: Stack, mode: str) -> Platform:
    """The database, the shared store, migrations, the development issuer (and a worker)."""
    if mode == "redis":
        database_url, postgres_dir = stack.service("postgres")
        redis_url, _ = stack.service("redis")
        log: Path | None = postgres_dir / "postgres.log"
    else:
        database_url, redis_url, log = f"sqlite:///{stack.workdir / 'bench.sqlite3'}", None, None
    env = platform_env(database_url, redis_url, stack.workdir / "keys")
    manage(env, "migrate", "--no-input", "-v", "0")
    port = free_port()
    issuer = stack.spawn("devissuer", [PYTHON, "manage.py", "devissuer", "--port", str(port)], env)
    stack.wait_http("devissuer", issuer, f"http://127.0.0.1:{port}/_stats")
    plat = Platform(stack, mode, env, f"http://127.0.0.1:{port}", redis_url, log)
    if redis_url:
        setup_django(env)  # this process reads key set records and queues tasks itself
        start_worker(stack, env)
    return plat


def setup_django(env: dict[str, str]) -> None:
    """Configure Django in this process for the (first) Redis-mode platform."""
    import django
    from django.apps import apps

    if apps.ready:
        raise RuntimeError("Django is already set up for another platform in this process")
    os.environ.update({**env, "DJANGO_SETTINGS_MODULE": "config.settings"})
    django.setup()


def start_worker(stack: Stack, env: dict[str, str]) -> subprocess.Popen:
    """A real Celery worker (2 processes) consuming the Redis broker."""
    from config.celery import app

    argv = [PYTHON, "-m", "celery", "-A", "config", "worker", "--concurrency", "2"]
    argv += ["--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    worker = stack.spawn("worker", argv, env)
    wait_until(lambda: app.control.ping(timeout=0.5), "the Celery worker answering")
    return worker


def start_web(plat: Platform, app: str | None = None) -> tuple[str, subprocess.Popen]:
    """gunicorn with 2 sync workers on loopback; return its URL and process.

    The embedded mode always serves through ``probe_wsgi``, which counts SQL statements there.
    """
    env = dict(plat.env)
    if plat.mode == "embedded":
        app = PROBE_APP
        shutil.rmtree(plat.sql_dir, True)
        plat.sql_dir.mkdir()
        env["BENCH_SQL_DIR"] = str(plat.sql_dir)
    port = free_port()
    argv = [PYTHON, "-m", "gunicorn", app or "config.wsgi", "-w", "2", "-b", f"127.0.0.1:{port}"]
    web = plat.stack.spawn("web", argv, env)
    # A path no route serves: answering it touches neither tenants nor keys.
    plat.stack.wait_http("web", web, f"http://127.0.0.1:{port}/bench-not-found")
    wait_until(lambda: len(worker_pids(web.pid)) == 2, "both gunicorn workers started")
    return f"http://127.0.0.1:{port}", web


PEER_DIR = ROOT / "bench" / "peer"


def peer_env(issuer: str, audience: str) -> dict[str, str]:
    """The peer's whole environment: only what its README names, none of the platform's."""
    return {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "apiexample.settings",
        "SECRET_KEY": "bench-only-not-secret",
        "AUTH0_DOMAIN": issuer,
        "API_IDENTIFIER": audience,
    }


def start_peer(stack: Stack, issuer: str, audience: str) -> tuple[str, subprocess.Popen]:
    """The quickstart done right (bench/peer) under gunicorn with 2 sync workers, as ours is.

    Started from its own directory with only the environment its README names: no
    gunicorn.conf.py, and none of the platform's settings.
    """
    env = peer_env(issuer, audience)
    port = free_port()
    argv = [PYTHON, "-m", "gunicorn", "apiexample.wsgi", "-w", "2", "-b", f"127.0.0.1:{port}"]
    peer = stack.spawn("peer", argv, env, cwd=PEER_DIR)
    stack.wait_http("peer", peer, f"http://127.0.0.1:{port}/api/public")
    wait_until(lambda: len(worker_pids(peer.pid)) == 2, "both peer workers started")
    return f"http://127.0.0.1:{port}", peer


def worker_pids(master: int) -> list[int]:
    """The gunicorn workers: the master's children."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(pid) for pid in children)


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process in MiB: now (VmRSS) or at its peak (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no {field} for pid {pid}")


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of processes, in seconds."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds() -> float:
    """CPU time all processes on this machine used since boot, in seconds."""
    # user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    ticks = [int(field) for field in Path("/proc/stat").read_text().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU time of this process and its finished children (the load generator)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def helper(plat: Platform, *args: str, timeout: float = 600) -> dict:
    """Run ``bench/control_helper.py`` against the platform; return its RESULT."""
    done = subprocess.run(  # noqa: S603 - this interpreter, our helper
        [PYTHON, "-m", "bench.control_helper", *args],
        cwd=ROOT,
        env=plat.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise RuntimeError(
        f"control_helper {args[0]} failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}"
    )
