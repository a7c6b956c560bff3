"""Settings: production safe by default and clean under ``check --deploy`` as in .env.example;
the embedded default's shared store; a local .env.

Settings are read once, at import, from the environment: each case runs a fresh process, which
reads no .env unless the case names one (ENV_FILE).
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.racing import assert_overlapped, gate, intervals, without_intervals
from tests.test_stack import filled_in_dotenv, service_environment

# clean_state (conftest) clears the shared store, a database table on the embedded default.
pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
SHOWN = (
    "DEBUG",
    "ALLOWED_HOSTS",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_PROXY_SSL_HEADER",
    "LOGGING",
    "SECRET_KEY",
    "DATABASES",
    "CACHES",
    "AUTHZ",
    "CELERY_BEAT_SCHEDULE",
    "AUTHENTICATION_BACKENDS",
    "AXES_HANDLER",
    "AXES_FAILURE_LIMIT",
    "AXES_COOLOFF_TIME",
    "TRUSTED_PROXY_COUNT",
)
# A process that writes the shared SQLite file: cache entries and a read-then-write transaction
# (the lock upgrade a deferred transaction cannot wait for), for three seconds from the gate.
WRITER = """
import os, time
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.db import transaction
from tests.racing import report, wait_at_gate

name = os.environ["WRITER"]
start = wait_at_gate()
n = 0
while time.time() < start + 3:
    n += 1
    cache.set(f"{name}:{n}", n)
    cache.add("shared-lock", name, 1)
    with transaction.atomic():
        Group.objects.filter(name=name).exists()
        Group.objects.update_or_create(name=name)
print(n)
report(start)
"""


def fresh_environment(environment: dict[str, str]) -> dict[str, str]:
    """Only this environment, PATH and HOME; a developer's .env is read only if named."""
    passed = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    return {**passed, "ENV_FILE": "", **environment}


def manage(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``manage.py`` in a fresh process with only this environment (and PATH, HOME)."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=fresh_environment(environment),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def settings_under(**environment: str) -> dict[str, Any]:
    """The settings that matter here, as a process with this environment sees them."""
    code = (
        "import json; from django.conf import settings; "
        f"print(json.dumps({{name: getattr(settings, name, None) for name in {SHOWN!r}}}, "
        "default=str))"
    )
    result = manage(environment, "shell", "--no-imports", "-c", code)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_debug_off_without_secret_key_refuses_to_start_and_says_the_fix():
    result = manage({}, "check")

    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is not set and DEBUG is off." in result.stderr
    assert "secrets.token_urlsafe(50)" in result.stderr


def test_the_embedded_default_runs_without_secret_key_in_debug():
    result = manage({"DEBUG": "true"}, "check")

    assert result.returncode == 0, result.stderr


def test_production_is_secure_by_default():
    shown = settings_under(SECRET_KEY="s" * 50, ALLOWED_HOSTS="api.example.com,.example.org")

    assert shown["DEBUG"] is False
    assert shown["ALLOWED_HOSTS"] == ["api.example.com", ".example.org"]
    assert shown["SESSION_COOKIE_SECURE"] is shown["CSRF_COOKIE_SECURE"] is True
    # Without a TLS proxy nothing claims HTTPS: no redirect loop, no HSTS over plain HTTP.
    assert (shown["SECURE_SSL_REDIRECT"], shown["SECURE_HSTS_SECONDS"]) == (False, 0)
    assert shown["SECURE_PROXY_SSL_HEADER"] is None


def test_behind_a_tls_proxy_plain_http_is_redirected_and_hsts_sent():
    shown = settings_under(SECRET_KEY="s" * 50, BEHIND_TLS_PROXY="true", LOG_LEVEL="warning")

    assert shown["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert shown["SECURE_SSL_REDIRECT"] is True
    assert shown["SECURE_HSTS_SECONDS"] == 365 * 86400
    assert shown["LOGGING"]["root"]["level"] == "WARNING"


def test_the_example_production_environment_passes_check_deploy():
    environment = service_environment("web", filled_in_dotenv({}))

    result = manage(environment, "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def embedded(tmp_path: Path) -> dict[str, str]:
    """The embedded default (no REDIS_URL) on a migrated SQLite file of its own."""
    environment = {"DEBUG": "true", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    migrated = manage(environment, "migrate", "--no-input", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr
    return environment


def cache_shell(environment: dict[str, str], code: str) -> str:
    """What ``code`` prints in a fresh process, with ``cache`` the shared store."""
    code = f"from django.core.cache import cache; {code}"
    result = manage(environment, "shell", "--no-imports", "-c", code)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_embedded_default_stores_in_the_database_on_wal_sqlite():
    shown = settings_under(DEBUG="true")

    assert shown["CACHES"]["default"]["BACKEND"] == "authz.store.SharedDatabaseCache"
    assert shown["CACHES"]["default"]["LOCATION"] == "authz_cache"
    assert shown["DATABASES"]["default"]["OPTIONS"] == {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }


def test_with_redis_and_postgresql_neither_database_cache_nor_sqlite_options():
    shown = settings_under(
        DEBUG="true", REDIS_URL="redis://127.0.0.1:6379/0", DATABASE_URL="postgres://u@h/db"
    )

    assert shown["CACHES"]["default"]["BACKEND"] == "authz.store.SharedRedisCache"
    assert shown["DATABASES"]["default"]["OPTIONS"] == {"connect_timeout": 5}


def test_a_plain_migrate_creates_the_cache_that_every_process_shares(tmp_path):
    environment = embedded(tmp_path)

    first = cache_shell(environment, "print(cache.add('lock', 'first', 60))")
    second = cache_shell(environment, "print(cache.add('lock', 'second', 60), cache.get('lock'))")
    again = manage(environment, "migrate", "--no-input", "-v", "0")

    assert (first, second) == ("True", "False first")
    assert again.returncode == 0, again.stderr


def test_concurrent_writers_on_sqlite_wait_instead_of_failing(tmp_path):
    environment = embedded(tmp_path)
    with gate(3) as opened:
        writers = [
            subprocess.Popen(
                [sys.executable, "manage.py", "shell", "--no-imports", "-c", WRITER],
                cwd=ROOT,
                env=fresh_environment({**environment, **opened, "WRITER": name}),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in ("one", "two", "three")
        ]
        results = [(*writer.communicate(timeout=60), writer.returncode) for writer in writers]

    assert [code for _, _, code in results] == [0, 0, 0], [error for _, error, _ in results]
    assert_overlapped([intervals(output) for output, _, _ in results])
    # SQLite's busy wait is not fair: a writer may get few turns, but it waits and then writes.
    written = [int(without_intervals(output)) for output, _, _ in results]
    assert all(n >= 1 for n in written), results


def test_a_dotenv_file_is_read_and_real_environment_variables_win(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("# a comment\nSECRET_KEY=from-the-file\nALLOWED_HOSTS=file.example\n")

    shown = settings_under(ENV_FILE=str(env_file), ALLOWED_HOSTS="real.example")

    assert (shown["SECRET_KEY"], shown["ALLOWED_HOSTS"]) == ("from-the-file", ["real.example"])


def test_key_set_refresh_and_background_sync_settings_come_from_the_environment():
    shown = settings_under(
        DEBUG="true", AUTHZ_JWKS_REFRESH_INTERVAL="42.5", AUTHZ_BACKGROUND_SYNC="false"
    )

    assert shown["AUTHZ"]["JWKS_REFRESH_INTERVAL"] == 42.5
    assert shown["AUTHZ"]["BACKGROUND_SYNC"] is False
    assert shown["CELERY_BEAT_SCHEDULE"]["refresh-all-key-sets"]["schedule"] == "0:00:42.500000"
    assert settings_under(DEBUG="true")["AUTHZ"]["BACKGROUND_SYNC"] is True


def test_authz_settings_follow_a_change_after_a_value_was_read(settings):
    from authz.conf import DEFAULTS, authz_settings

    settings.AUTHZ = {}
    default = authz_settings.UNKNOWN_KID_COOLDOWN  # read, and kept
    settings.AUTHZ = {"UNKNOWN_KID_COOLDOWN": 7.5}
    changed = authz_settings.UNKNOWN_KID_COOLDOWN

    assert (default, changed) == (DEFAULTS["UNKNOWN_KID_COOLDOWN"], 7.5)
