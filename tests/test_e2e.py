"""End to end over real HTTP: gunicorn, the devissuer command, tenants import and mint_token."""

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db(transaction=True)


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    """Poll a URL until it answers; fail with the process output if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args} exited: {process.communicate()[0].decode()}")
        try:
            requests.get(url, timeout=5)
            return
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.1)
    pytest.fail(f"{url} did not come up")


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    """Environment of the platform's processes: the test database, Redis, loopback hosts."""
    db = connection.settings_dict
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "ALLOWED_HOSTS": "127.0.0.1,.localhost",
        "DEVISSUER_KEY_DIR": str(tmp_path / "keys"),
        "CELERY_TASK_ALWAYS_EAGER": "true",
    }


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Start one platform process from the repository root."""
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def manage(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    """Run a manage.py command to completion and return its stdout."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def stack(stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The development issuer and gunicorn (2 sync workers), as separate processes."""
    issuer_port, web_port = free_port(), free_port()
    gunicorn = [sys.executable, "-m", "gunicorn", "config.wsgi", "-w", "2"]
    processes = [
        start([sys.executable, "manage.py", "devissuer", "--port", str(issuer_port)], stack_env),
        start([*gunicorn, "-b", f"127.0.0.1:{web_port}"], stack_env),
    ]
    try:
        wait_until_up(f"http://127.0.0.1:{issuer_port}/_stats", processes[0])
        wait_until_up(f"http://127.0.0.1:{web_port}/api/public", processes[1])
        yield {
            "issuer": f"http://127.0.0.1:{issuer_port}",
            "web": f"http://127.0.0.1:{web_port}",
        }
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)


def tenants_document(issuer: str) -> str:
    """Two tenants on the development issuer."""
    return json.dumps(
        {
            "tenants": [
                {
                    "slug": slug,
                    "name": slug.title(),
                    "issuer": f"{issuer}/{slug}/",
                    "audiences": [f"https://api.{slug}.test"],
                    "hosts": [f"{slug}.localhost"],
                }
                for slug in ("acme", "globex")
            ]
        }
    )


def test_two_tenants_end_to_end(stack, stack_env):
    assert "Imported 2 tenant(s)" in manage(
        stack_env, "tenants", "import", "-", stdin=tenants_document(stack["issuer"])
    )
    scoped = manage(stack_env, "mint_token", "--tenant", "acme", "--scope", "read:messages")
    plain = manage(stack_env, "mint_token", "--tenant", "acme")
    globex = manage(stack_env, "mint_token", "--tenant", "globex", "--scope", "read:messages")
    web = stack["web"]

    def get(path: str, token: str | None = None, host: str = "acme.localhost") -> requests.Response:
        headers = {"Host": host, **({"Authorization": f"Bearer {token}"} if token else {})}
        return requests.get(f"{web}{path}", headers=headers, timeout=10)

    assert get("/api/public").status_code == 200
    assert get("/api/private", plain).status_code == 200
    assert get("/api/private-scoped", scoped).status_code == 200
    assert get("/t/acme/api/private-scoped", scoped, host="127.0.0.1").status_code == 200
    assert get("/api/private").status_code == 401
    assert get("/api/private-scoped", plain).json()["code"] == "insufficient_scope"
    refused = get("/api/private", globex)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    assert get("/api/private-scoped", globex, host="globex.localhost").status_code == 200
    assert get("/api/public", host="nobody.localhost").json()["code"] == "tenant_not_found"


def test_export_reproduces_the_import(stack_env, issuer):
    document = tenants_document("http://127.0.0.1:9")
    manage(stack_env, "tenants", "import", "-", stdin=document)

    exported = json.loads(manage(stack_env, "tenants", "export"))

    assert [t["slug"] for t in exported["tenants"]] == ["acme", "globex"]
    assert exported["tenants"][0]["issuer"] == "http://127.0.0.1:9/acme/"
