"""The authz.E001 system check: no insecure issuers in production unless acknowledged."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core import checks

from authz.checks import insecure_issuers_check

PROJECT_DIR = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("insecure", "debug", "acknowledged", "expected"),
    [
        (True, False, False, ["authz.E001"]),
        (True, False, True, []),
        (True, True, False, []),
        (False, False, False, []),
        (False, True, False, []),
    ],
    ids=["insecure-in-production", "acknowledged", "debug", "secure", "secure-debug"],
)
def test_insecure_issuers_fail_only_in_unacknowledged_production(
    settings, insecure, debug, acknowledged, expected
):
    settings.DEBUG = debug
    settings.AUTHZ = {
        **settings.AUTHZ,
        "ALLOW_INSECURE_ISSUERS": insecure,
        "INSECURE_ISSUERS_ACKNOWLEDGED": acknowledged,
    }

    assert [error.id for error in insecure_issuers_check(None)] == expected


def test_the_check_is_registered_and_says_the_fix(settings):
    settings.DEBUG = False
    settings.AUTHZ = {
        **settings.AUTHZ,
        "ALLOW_INSECURE_ISSUERS": True,
        "INSECURE_ISSUERS_ACKNOWLEDGED": False,
    }

    errors = [error for error in checks.run_checks() if error.id == "authz.E001"]

    assert len(errors) == 1
    assert errors[0].level == checks.ERROR
    assert "AUTHZ_INSECURE_ISSUERS_ACKNOWLEDGED=true" in errors[0].hint


def manage_check(**environment: str) -> subprocess.CompletedProcess[str]:
    """Run ``python manage.py check`` in a fresh process with only the given environment."""
    passed = {
        name: os.environ[name]
        for name in ("PATH", "DATABASE_URL", "REDIS_URL", "SECRET_KEY")
        if name in os.environ
    }
    env: dict[str, Any] = {
        "SECRET_KEY": "check-test-secret-key",
        "ENV_FILE": "",  # a developer's .env must not decide the outcome
        **passed,
        **environment,
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_manage_check_fails_with_unacknowledged_insecure_issuers_in_production():
    result = manage_check(
        AUTHZ_ALLOW_INSECURE_ISSUERS="true",
        DEBUG="false",
        AUTHZ_INSECURE_ISSUERS_ACKNOWLEDGED="false",
    )

    assert result.returncode != 0
    assert "authz.E001" in result.stdout + result.stderr


def test_manage_check_passes_when_acknowledged():
    result = manage_check(
        AUTHZ_ALLOW_INSECURE_ISSUERS="true",
        DEBUG="false",
        AUTHZ_INSECURE_ISSUERS_ACKNOWLEDGED="true",
    )

    assert result.returncode == 0, result.stderr
    assert "authz.E001" not in result.stdout + result.stderr
