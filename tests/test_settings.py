"""Production settings: safe by default, and clean under ``check --deploy`` as in .env.example.

Settings are read once, at import, from the environment: each case runs a fresh process.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.test_stack import filled_in_dotenv, service_environment

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
)


def manage(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``manage.py`` in a fresh process with only this environment (and PATH, HOME)."""
    passed = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**passed, **environment},
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


def test_authz_settings_follow_a_change_after_a_value_was_read(settings):
    from authz.conf import DEFAULTS, authz_settings

    settings.AUTHZ = {}
    default = authz_settings.UNKNOWN_KID_COOLDOWN  # read, and kept
    settings.AUTHZ = {"UNKNOWN_KID_COOLDOWN": 7.5}
    changed = authz_settings.UNKNOWN_KID_COOLDOWN

    assert (default, changed) == (DEFAULTS["UNKNOWN_KID_COOLDOWN"], 7.5)
