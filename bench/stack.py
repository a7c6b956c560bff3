"""Processes a benchmark run starts (PostgreSQL, Redis, issuer, worker, gunicorn), and their stop.

Every process is started in its own session so that stopping it also stops its children
(gunicorn's and Celery's workers); whatever happens, leaving the ``Stack`` stops them all.
"""

import json
import os
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

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Start a long-running process in its own session, output to ``<workdir>/<name>.log``."""
        log = (self.workdir / f"{name}.log").open("ab")
        process = subprocess.Popen(  # noqa: S603 - argv built by the benchmark
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
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


def platform_env(database_url: str, redis_url: str, key_dir: Path) -> dict[str, str]:
    """Environment of the platform's processes: production settings, loopback issuers allowed."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": "bench-only-not-secret",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost,.localhost",
        "AUTHZ_ALLOW_INSECURE_ISSUERS": "true",
        "AUTHZ_INSECURE_ISSUERS_ACKNOWLEDGED": "true",
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "DEVISSUER_KEY_DIR": str(key_dir),
        "LOG_LEVEL": "WARNING",
    }


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
    manage(env, "tenants", "import", str(path))
    return time.monotonic() - started
