"""Real platform processes for tests: the devissuer, gunicorn, and which worker answered what.

Each process writes to its own log file (a pipe nobody reads would fill and stall gunicorn).
gunicorn's access log names the worker pid of every request by a probe header, so a test can
show that every worker answered, and answered the same way.
"""

import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from devissuer import dpop
from tests.test_e2e import ROOT, free_port, manage

PROBE = "X-Probe"
ACCESS_FORMAT = "%(p)s %({x-probe}i)s %(s)s"  # "<pid> probe status"
WORKERS = 2
EVERYONE_WITHIN = 30.0  # seconds for every worker to answer a round
INHERITED_OUT = (
    "REDIS_URL",
    "DATABASE_URL",
    "DEFAULT_TENANT",
    "ENV_FILE",
    "METRICS_DIR",
    "METRICS_DIR_OWNER",
    "PROMETHEUS_MULTIPROC_DIR",
)


def inherited_env() -> dict[str, str]:
    """The test's environment without anything that chooses a store, a database or a setting."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in INHERITED_OUT and not name.startswith(("AUTHZ_", "CELERY_"))
    }


def database_url() -> str:
    """The pytest-django PostgreSQL test database, as processes reach it."""
    from django.db import connection

    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def own_database(redis_url: str, database: int) -> str:
    """The same Redis server, another database: every test's clean_state (tests/conftest.py),
    in this run and in any run beside it, flushes the database of REDIS_URL, and with it the
    cooldowns and locks a module's processes share."""
    return urlunsplit(urlsplit(redis_url)._replace(path=f"/{database}"))


def mode_env(
    mode: str,
    request: pytest.FixtureRequest,
    home: Path,
    redis_database: int | None = None,
    eager: bool = True,
) -> dict[str, str]:
    """The variables that choose one mode's database and store, the database migrated.

    embedded: a SQLite file in ``home``, no Redis. redis: the test PostgreSQL database and
    Redis (its database ``redis_database`` when given), Celery tasks eager unless told not.
    """
    if mode == "embedded":
        chosen = {"DATABASE_URL": f"sqlite:///{home / 'db.sqlite3'}"}
        manage({**inherited_env(), **chosen}, "migrate", "--no-input")
        return chosen
    if not os.environ.get("REDIS_URL"):
        pytest.fail("REDIS_URL is not set: run the suite through platform/run-tests.")
    request.getfixturevalue("django_db_setup")
    redis_url = os.environ["REDIS_URL"]
    if redis_database is not None:
        redis_url = own_database(redis_url, redis_database)
    chosen = {"DATABASE_URL": database_url(), "REDIS_URL": redis_url}
    return {**chosen, "CELERY_TASK_ALWAYS_EAGER": "true"} if eager else chosen


@contextmanager
def running(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """Run a process from the repository root, its output in ``log``; stop it on exit."""
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    """Poll a URL until it answers; fail with the process's log if it died or never answered."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args} exited:\n{log.read_text()}")
        try:
            requests.get(url, timeout=5)
            return
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.1)
    pytest.fail(f"{url} did not come up:\n{log.read_text()}")


@dataclass(frozen=True)
class Answer:
    """One API response and the worker that gave it."""

    pid: int
    status: int
    code: str | None
    challenge: str
    seconds: float

    @property
    def realm(self) -> str | None:
        """The realm of the Bearer challenge: the slug of the tenant that answered."""
        marker = 'realm="'
        start = self.challenge.find(marker)
        if start < 0:
            return None
        start += len(marker)
        return self.challenge[start : self.challenge.index('"', start)]


Check = Callable[[Answer], bool]
TokenSource = str | Callable[[], str] | None
HeaderSource = dict[str, str] | Callable[[], dict[str, str]] | None


def summary(answers: list[Answer]) -> str:
    """How many answers each worker gave, by status, code and realm."""
    counts = Counter((a.pid, a.status, a.code, a.realm) for a in answers)
    return ", ".join(f"{n}x pid {p} {s} {c} realm={r}" for (p, s, c, r), n in counts.items())


def answered(status: int, code: str | None = None) -> Check:
    """Answers with this status (and error code)."""
    return lambda a: a.status == status and (code is None or a.code == code)


OK = answered(200)
NOT_FOUND = answered(404, "tenant_not_found")


def realm_of(slug: str) -> Check:
    """A tokenless request's 401 naming this tenant: the tenant that answered."""
    return lambda a: a.status == 401 and a.realm == slug


def assert_every(answers: list[Answer], check: Check) -> None:
    """Every worker answered and every answer passed."""
    assert len({a.pid for a in answers}) >= WORKERS, summary(answers)
    assert all(check(a) for a in answers), summary(answers)


class Web:
    """A gunicorn with WORKERS sync workers, asked over fresh connections."""

    def __init__(
        self, url: str, access_log: Path, *, log: Path | None = None, master_pid: int = 0
    ) -> None:
        self.url = url
        self.access_log = access_log
        self.log = log
        self.master_pid = master_pid

    def get(self, path: str, host: str = "127.0.0.1", token: str | None = None) -> Answer:
        """One request on a connection of its own."""
        return self.ask(path, host=host, token=token, n=1)[0]

    def ask(
        self,
        path: str,
        *,
        host: str = "127.0.0.1",
        token: TokenSource = None,
        n: int = 20,
        headers: HeaderSource = None,
    ) -> list[Answer]:
        """``n`` requests, four at a time so that every worker gets some, each connection new."""
        probes = [uuid.uuid4().hex for _ in range(n)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(
                pool.map(lambda probe: self._send(path, host, token, probe, headers), probes)
            )
        pids = self._pids(probes)
        return [Answer(pids[probe], *result) for probe, result in zip(probes, results, strict=True)]

    def everyone(
        self,
        path: str,
        *,
        host: str = "127.0.0.1",
        token: TokenSource = None,
        n: int = 20,
        headers: HeaderSource = None,
    ) -> list[Answer]:
        """Batches of ``n`` requests until every worker has answered some; all the answers.

        At least 10 batches and up to EVERYONE_WITHIN seconds: on a loaded machine a worker
        still booting (or starved of CPU) can leave its sibling to take 200 requests alone.
        """
        answers: list[Answer] = []
        deadline = time.monotonic() + EVERYONE_WITHIN
        for batch in itertools.count():
            answers += self.ask(path, host=host, token=token, n=n, headers=headers)
            if len({a.pid for a in answers}) >= WORKERS:
                return answers
            if batch >= 9 and time.monotonic() > deadline:
                pytest.fail(f"Not every worker answered: {summary(answers)}")
        raise AssertionError("unreachable")

    def until(
        self,
        check: Check,
        path: str,
        *,
        within: float,
        host: str = "127.0.0.1",
        token: TokenSource = None,
        headers: HeaderSource = None,
    ) -> float:
        """Seconds until a round where every worker passes ``check``; fails if it ends late."""
        started = time.monotonic()
        while True:
            answers = self.everyone(path, host=host, token=token, headers=headers)
            elapsed = time.monotonic() - started
            passed = all(check(a) for a in answers)
            if elapsed > within:
                # A late pass fails too: the round's end is all that shows when it passed.
                verdict = "Passed only" if passed else "Still failing"
                pytest.fail(
                    f"{verdict} after {elapsed:.1f} s > {within:g} s on {host}{path}: "
                    f"{summary(answers)}"
                )
            if passed:
                return elapsed
            time.sleep(0.05)

    def _send(
        self, path: str, host: str, token: TokenSource, probe: str, extra: HeaderSource = None
    ) -> tuple[int, str | None, str, float]:
        headers = {"Host": host, "Connection": "close", PROBE: probe}
        headers.update((extra() if callable(extra) else extra) or {})
        bearer = token() if callable(token) else token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        started = time.monotonic()
        response = requests.get(f"{self.url}{path}", headers=headers, timeout=30)
        seconds = time.monotonic() - started
        try:
            code = response.json().get("code")
        except ValueError:
            code = None
        return response.status_code, code, response.headers.get("WWW-Authenticate", ""), seconds

    def _pids(self, probes: list[str], timeout: float = 5) -> dict[str, int]:
        """The worker of each probe, from the access log (written just after the response)."""
        deadline = time.monotonic() + timeout
        while True:
            found: dict[str, int] = {}
            for line in self.access_log.read_text().splitlines():
                fields = line.split(" ")
                if len(fields) == 3 and fields[0].endswith(">"):  # else: still being written
                    found[fields[1]] = int(fields[0].strip("<>"))
            if all(probe in found for probe in probes):
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"{self.access_log} lacks requests that were answered")
            time.sleep(0.02)


@contextmanager
def gunicorn(
    env: dict[str, str], log_dir: Path, name: str = "web", options: Sequence[str] = ()
) -> Iterator[Web]:
    """``gunicorn config.wsgi -w 2`` from the project root (and ``options``), as
    docs/deployment.md says, logging the worker of every request; its metrics directory under
    ``log_dir`` by default."""
    port = free_port()
    access_log, log = log_dir / f"{name}-access.log", log_dir / f"{name}.log"
    access_log.touch()
    env = {"METRICS_DIR": str(log_dir / "metrics"), **env}
    command = [sys.executable, "-m", "gunicorn", "config.wsgi", "-w", str(WORKERS)]
    command += ["-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", "--no-control-socket"]
    command += ["--access-logfile", str(access_log), "--access-logformat", ACCESS_FORMAT]
    command += options  # last, so an option given twice takes the caller's value
    with running(command, env, log) as process:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", process, log)
        yield Web(f"http://127.0.0.1:{port}", access_log, log=log, master_pid=process.pid)


@dataclass
class Stack:
    """The development issuer and one gunicorn, with the environment they run in."""

    env: dict[str, str]
    issuer: str
    web: Web
    home: Path

    @property
    def key_dir(self) -> Path:
        """Where the development issuer keeps its private keys."""
        return Path(self.env["DEVISSUER_KEY_DIR"])

    def tenant(self, slug: str, issuer_name: str | None = None, **fields: Any) -> dict[str, Any]:
        """An import item for a tenant of the development issuer (issuer name: the slug)."""
        return {
            "slug": slug,
            "name": slug.title(),
            "issuer": self.issuer_url(issuer_name or slug),
            "audiences": [f"https://api.{slug}.test"],
            **fields,
        }

    def issuer_url(self, name: str) -> str:
        """The ``iss`` of one issuer name of the development issuer."""
        return f"{self.issuer}/{name}/"

    def import_tenants(self, *items: dict[str, Any], env: dict[str, str] | None = None) -> str:
        """``manage.py tenants import -`` in a process of its own."""
        document = json.dumps({"tenants": list(items)})
        return manage(env or self.env, "tenants", "import", "-", stdin=document)

    def shell(self, code: str) -> str:
        """``manage.py shell -c CODE`` in a process of its own."""
        return manage(self.env, "shell", "--no-imports", "-c", code)

    def token(
        self,
        issuer_name: str,
        audience: str,
        sub: str = "client@clients",
        dpop_key: Any = None,
        scope: str | None = None,
    ) -> str:
        """A token minted by the development issuer over HTTP (bound to ``dpop_key`` if given)."""
        url = f"{self.issuer}/{issuer_name}/oauth/token"
        headers = {"DPoP": dpop.make_proof(dpop_key, "POST", url)} if dpop_key else {}
        body = {"audience": audience, "sub": sub, **({"scope": scope} if scope else {})}
        response = requests.post(url, json=body, headers=headers, timeout=10)
        response.raise_for_status()
        return response.json()["access_token"]

    def rotate(self, issuer_name: str) -> dict[str, str]:
        """A new signing key at the issuer; the previous stays published, any older is dropped."""
        response = requests.post(f"{self.issuer}/{issuer_name}/rotate", timeout=30)
        response.raise_for_status()
        return response.json()

    def jwks_fetches(self, issuer_name: str) -> int:
        """How many times the issuer's key set was requested."""
        stats = requests.get(f"{self.issuer}/_stats", timeout=10).json()
        return stats.get(f"GET /{issuer_name}/.well-known/jwks.json", 0)


@contextmanager
def platform(env: dict[str, str], home: Path, options: Sequence[str] = ()) -> Iterator[Stack]:
    """The devissuer and gunicorn (with ``options``), started in ``env``, logs under ``home``."""
    port = free_port()
    with ExitStack() as stack:
        log = home / "devissuer.log"
        command = [sys.executable, "manage.py", "devissuer", "--port", str(port)]
        issuer = stack.enter_context(running(command, env, log))
        wait_until_up(f"http://127.0.0.1:{port}/_stats", issuer, log)
        web = stack.enter_context(gunicorn(env, home, options=options))
        yield Stack(env, f"http://127.0.0.1:{port}", web, home)
