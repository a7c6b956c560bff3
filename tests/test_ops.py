"""Operations: health probes, the request log, JSON log lines, the start scripts' commands."""

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ
import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections

from ops.logging import GunicornAccessFields, JsonLineFormatter
from ops.management.commands.locked_migrate import LOCK_ID
from tests.racing import gate, intervals, most_at_once
from tests.test_stack import PLATFORM, require_root, start_store

ROOT = Path(__file__).resolve().parent.parent


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- probes -----------------------------------------------------------------------------------


def test_healthz_answers_any_host_over_plain_http_without_io(client, settings):
    settings.SECURE_SSL_REDIRECT = True

    response = client.get("/healthz", HTTP_HOST="10.0.0.7:8000")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


@pytest.mark.django_db
def test_readyz_is_ready_when_database_and_redis_answer(client, settings):
    settings.SECURE_SSL_REDIRECT = True

    response = client.get("/readyz", HTTP_HOST="10.0.0.7:8000")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}


@pytest.mark.django_db
def test_readyz_names_redis_when_it_is_unreachable(client, settings, caplog):
    port = closed_port()
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "redis": "unreachable"},
        "failed": ["redis"],
    }
    assert "readiness: redis unreachable" in caplog.text
    assert "Service Unavailable" not in caplog.text, "an expected 503 is not logged as an error"


@pytest.mark.django_db
def test_readyz_without_redis_configured_checks_the_database_only(client, settings):
    settings.REDIS_URL = ""

    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "not configured"}


# --- the per-request log ----------------------------------------------------------------------


def api_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The request log records captured so far."""
    return [record for record in caplog.records if getattr(record, "event", "") == "api_request"]


def test_one_line_per_api_request_with_tenant_subject_status_and_latency(
    client, acme, acme_tokens, caplog
):
    token = acme_tokens.token(sub="auth0|alice", scope="read:messages")
    caplog.set_level(logging.INFO, logger="ops.middleware")

    client.get(
        "/t/acme/api/private-scoped?access_token=in-the-query",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )

    [record] = api_records(caplog)
    assert (record.tenant, record.subject, record.method) == ("acme", "auth0|alice", "GET")
    assert (record.path, record.status, record.error_code) == (
        "/t/acme/api/private-scoped",
        200,
        None,
    )
    assert record.latency_ms >= 0
    line = JsonLineFormatter().format(record)
    assert token not in line and "in-the-query" not in line and "Bearer" not in line


def test_refusals_carry_their_error_code(client, acme, acme_tokens, caplog):
    caplog.set_level(logging.INFO, logger="ops.middleware")

    client.get(
        "/api/private-scoped",
        HTTP_HOST="acme.localhost",
        HTTP_AUTHORIZATION=f"Bearer {acme_tokens.token()}",
    )
    client.get("/api/private", HTTP_HOST="acme.localhost")
    client.get("/api/public", HTTP_HOST="nobody.localhost")

    logged = [(r.tenant, r.status, r.error_code, r.subject) for r in api_records(caplog)]
    assert logged == [
        ("acme", 403, "insufficient_scope", "auth0|user-1"),
        ("acme", 401, "not_authenticated", None),
        (None, 404, "tenant_not_found", None),
    ]


def test_requests_outside_the_api_are_not_request_logged(client, caplog, db):
    caplog.set_level(logging.INFO, logger="ops.middleware")

    client.get("/admin/login/")
    client.get("/healthz")

    assert api_records(caplog) == []


# --- JSON lines -------------------------------------------------------------------------------


def test_a_record_becomes_one_json_line_with_its_extra_fields():
    record = logging.LogRecord(
        "authz.jwks", logging.INFO, __file__, 1, "refreshed %s", ("acme",), None
    )
    record.__dict__.update(event="jwks_refresh", tenant="acme", keys=2, request=object())

    line = JsonLineFormatter().format(record)

    fields = json.loads(line)
    assert "\n" not in line
    assert fields["message"] == "refreshed acme"
    assert (fields["level"], fields["logger"]) == ("INFO", "authz.jwks")
    assert (fields["event"], fields["tenant"], fields["keys"]) == ("jwks_refresh", "acme", 2)
    assert fields["time"].endswith("+00:00")
    assert "request" not in fields, "Django's request repr carries the query string"


def test_gunicorn_access_lines_keep_neither_query_nor_headers():
    atoms = {
        "m": "GET", "U": "/t/acme/api/private", "q": "access_token=secret-in-query",
        "s": "200", "D": 1500, "h": "127.0.0.1", "B": 42,
        "{authorization}i": "Bearer secret-in-header",
    }  # fmt: skip
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, "%(r)s", (), None)
    record.args = atoms

    assert GunicornAccessFields().filter(record)
    fields = json.loads(JsonLineFormatter().format(record))

    assert fields["event"] == "http_access"
    assert (fields["method"], fields["path"], fields["status"]) == (
        "GET",
        "/t/acme/api/private",
        200,
    )
    assert fields["latency_ms"] == 1.5
    assert "secret" not in json.dumps(fields)


# --- the web role's commands ------------------------------------------------------------------


@contextmanager
def database_alias(url: str, django_db_blocker: Any, **options: Any) -> Iterator[str]:
    """A connection alias, in this process, to the PostgreSQL database at ``url``."""
    alias = f"waited-{uuid.uuid4().hex[:8]}"
    parts = environ.Env.db_url_config(url)
    fields = {name: parts[name] for name in ("NAME", "USER", "HOST", "PORT")}
    connections.settings[alias] = {**connections.settings["default"], **fields, "OPTIONS": options}
    try:
        with django_db_blocker.unblock():
            yield alias
    finally:
        connections[alias].close()
        delattr(connections._connections, alias)
        del connections.settings[alias]


def timed_wait(alias: str, timeout: float) -> tuple[float, CommandError | None]:
    """Seconds that ``wait_for_database`` took on ``alias``, and its error if it gave up."""
    started = time.monotonic()
    try:
        call_command("wait_for_database", "--database", alias, "--timeout", str(timeout))
    except CommandError as error:
        return time.monotonic() - started, error
    return time.monotonic() - started, None


def stop_postgres(directory: Path) -> None:
    """platform/stop-postgres."""
    subprocess.run([str(PLATFORM / "stop-postgres"), str(directory)], check=True, timeout=60)


@pytest.fixture
def stopped_postgres() -> Iterator[tuple[Path, str]]:
    """A PostgreSQL cluster of its own, stopped: its directory and URL."""
    require_root()
    directory = Path(tempfile.mkdtemp(prefix="waited-postgres-"))  # the postgres user enters it
    try:
        url = start_store("start-postgres", directory)
        stop_postgres(directory)
        yield directory, url
    finally:
        stop_postgres(directory)
        shutil.rmtree(directory, ignore_errors=True)


def test_wait_for_database_returns_once_a_database_started_later_accepts(
    stopped_postgres, django_db_blocker
):
    directory, url = stopped_postgres
    started_at: list[float] = []

    def start_later() -> None:
        time.sleep(2)
        started_at.append(time.monotonic())
        start_store("start-postgres", directory, str(urlsplit(url).port))
        started_at.append(time.monotonic())

    starter = threading.Thread(target=start_later)
    with database_alias(url, django_db_blocker, connect_timeout=5) as alias:
        starter.start()
        seconds, error = timed_wait(alias, timeout=60)
        returned_at = time.monotonic()
        starter.join(timeout=60)

    assert error is None
    began, up = started_at
    assert began < returned_at < up + 1 + 1, (began, up, returned_at)  # its retry interval, margin
    assert seconds >= 2


def test_wait_for_database_gives_up_at_its_deadline_where_nothing_listens(django_db_blocker):
    url = f"postgres://postgres@127.0.0.1:{closed_port()}/nothing"
    with database_alias(url, django_db_blocker, connect_timeout=5) as alias:
        seconds, error = timed_wait(alias, timeout=1.5)

    assert "did not accept connections within 1.5 s" in str(error)
    assert 1.5 <= seconds < 1.5 + 0.3  # it slept a whole second past it before


def test_wait_for_database_gives_up_at_its_deadline_where_the_server_never_answers(
    django_db_blocker,
):
    # Connections are taken (the kernel's backlog) and never answered, as with a hung server.
    with socket.create_server(("127.0.0.1", 0), backlog=8) as silent:
        url = f"postgres://postgres@127.0.0.1:{silent.getsockname()[1]}/nothing"
        with database_alias(url, django_db_blocker, connect_timeout=5) as alias:
            seconds, error = timed_wait(alias, timeout=3)

    assert "did not accept connections within 3 s" in str(error)
    assert seconds < 3 + 0.5  # not connect_timeout (5 s) for a try begun before the deadline


def test_wait_for_database_gives_up_after_its_timeout_and_says_why():
    environment = {
        "PATH": os.environ["PATH"],
        "SECRET_KEY": "test-only",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{closed_port()}/nothing",
        "ENV_FILE": "",
    }
    started = time.monotonic()

    result = subprocess.run(
        [sys.executable, "manage.py", "wait_for_database", "--timeout", "1"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "did not accept connections within 1 s" in result.stderr
    assert time.monotonic() - started < 30


def other_session() -> psycopg.Connection:
    """A second PostgreSQL session on the test database, as another replica would hold."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**params, autocommit=True)


@pytest.mark.django_db(transaction=True)
def test_locked_migrate_migrates_then_releases_the_lock():
    call_command("locked_migrate", "--no-input", verbosity=0)

    with other_session() as session:
        taken = session.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_ID]).fetchone()[0]
    assert taken, "the lock was released"


@pytest.mark.django_db(transaction=True)
def test_locked_migrate_waits_for_another_replica_at_most_its_timeout():
    with other_session() as session:
        session.execute("SELECT pg_advisory_lock(%s)", [LOCK_ID])

        with pytest.raises(CommandError, match="held the migration lock for over 1 s"):
            call_command("locked_migrate", "--no-input", "--lock-timeout", "1", verbosity=0)


# A replica that reports when it held the migration lock (tests/racing.py reads the span).
MIGRATING_REPLICA = """
import time
from django.core.management import call_command
from ops.management.commands import locked_migrate
from tests.racing import report, wait_at_gate


class Reported(locked_migrate.Command):
    def _acquire(self, connection, timeout):
        super()._acquire(connection, timeout)
        self.locked_at = time.time()

    def _release(self, connection):
        super()._release(connection)
        report(self.locked_at)


arrived = wait_at_gate()
call_command(Reported(), "--no-input")
print(f"arrived at {arrived!r}")
"""


@pytest.fixture
def empty_database(django_db_blocker: Any) -> Iterator[str]:
    """A new, empty database on the test PostgreSQL server: its URL."""
    name = f"migrated_{uuid.uuid4().hex[:8]}"
    with django_db_blocker.unblock(), other_session() as session:
        session.execute(f'CREATE DATABASE "{name}"')
        params = session.info.get_parameters()
        yield f"postgres://{params['user']}@{session.info.host}:{session.info.port}/{name}"
        session.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_two_replicas_migrating_at_once_take_turns_and_both_succeed(empty_database):
    environment = {**os.environ, "DATABASE_URL": empty_database, "ENV_FILE": ""}
    environment.pop("REDIS_URL", None)
    shell = [sys.executable, "manage.py", "shell", "--no-imports", "-c", MIGRATING_REPLICA]
    with gate(2) as opened:
        replicas = [
            subprocess.Popen(
                shell, cwd=ROOT, env={**environment, **opened}, stdout=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        outputs = [replica.communicate(timeout=120)[0] for replica in replicas]

    assert [replica.returncode for replica in replicas] == [0, 0], outputs
    (first, first_output), (second, second_output) = sorted(
        (intervals(output), output) for output in outputs
    )
    assert most_at_once([first, second]) == 1, (first, second)  # never both held the lock
    arrivals = [float(output.rsplit("arrived at ", 1)[1]) for output in outputs]
    assert max(arrivals) < first[1], "the second replica came while the first held the lock"
    assert "Applying tenants.0001_initial... OK" in first_output
    assert "No migrations to apply." in second_output
