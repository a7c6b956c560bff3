"""Admin login lockouts over real processes: ``gunicorn -w 2`` in both modes.

"embedded": SQLite and the database cache. "redis": the test PostgreSQL database and Redis.
Failures sent to both workers add up to one count; the lockout holds on every worker; it is
lifted by ``manage.py axes_reset_ip_username`` and by the admin's unlock page; weak passwords
are refused by the admin's password form and by ``createsuperuser --no-input``.
"""

import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.processes import PROBE, WORKERS, Web, gunicorn, inherited_env, mode_env
from tests.test_control_plane import SETTINGS
from tests.test_e2e import ROOT, manage

LIMIT = 10
PASSWORD = "Kx7-operator-passphrase"
ADDRESS = "127.0.0.1"
REDIS_DATABASE = 12  # apart from the one clean_state flushes and from test_control_plane's

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def web_env(
    mode: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The environment of the mode's processes, its database migrated."""
    home = tmp_path_factory.mktemp(f"login-{mode}")
    env = {**inherited_env(), **SETTINGS, "AXES_FAILURE_LIMIT": str(LIMIT), "HOME_DIR": str(home)}
    return {**env, **mode_env(mode, request, home, REDIS_DATABASE, eager=False)}


@pytest.fixture(scope="module")
def web(web_env: dict[str, str]) -> Iterator[Web]:
    """``gunicorn -w 2`` of the mode."""
    with gunicorn(web_env, Path(web_env["HOME_DIR"]), name="login") as running:
        yield running


def new_user(env: dict[str, str], superuser: bool = False) -> str:
    """A staff user (or superuser) with PASSWORD and a fresh name, made by another process."""
    username = f"user-{uuid.uuid4().hex[:8]}"
    env = {**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD}
    manage(env, "createsuperuser", "--no-input", "--username", username, "--email", "u@x.test")
    if not superuser:
        users = "from django.contrib.auth.models import User; users = User.objects"
        code = f"{users}.filter(username={username!r}).update(is_superuser=False)"
        manage(env, "shell", "--no-imports", "-c", code)
    return username


def attempt(web: Web, username: str, password: str) -> tuple[int, int]:
    """One admin login on fresh connections: (worker pid, status); 302 is a good login."""
    session = requests.Session()
    probe = uuid.uuid4().hex
    login = f"{web.url}/admin/login/"
    session.get(login, headers={"Connection": "close"}, timeout=10).raise_for_status()
    form = {"username": username, "password": password, "next": "/admin/"}
    form["csrfmiddlewaretoken"] = session.cookies["csrftoken"]
    headers = {"Connection": "close", PROBE: probe}
    response = session.post(login, data=form, headers=headers, allow_redirects=False, timeout=10)
    return web._pids([probe])[probe], response.status_code


def attempts(web: Web, username: str, password: str, n: int) -> list[tuple[int, int]]:
    """``n`` logins, four at a time, so that both workers get some."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda _: attempt(web, username, password), range(n)))


def failures(env: dict[str, str], username: str) -> int:
    """The failures counted against the pair, read by another process."""
    code = f"from ops.login import failures_of; print(failures_of({username!r}, {ADDRESS!r}))"
    return int(manage(env, "shell", "--no-imports", "-c", code))


def lock_out(web: Web, username: str) -> None:
    assert {status for _, status in attempts(web, username, "wrong", LIMIT)} <= {200, 429}
    assert attempt(web, username, PASSWORD)[1] == 429


def test_failures_on_both_workers_add_up_and_every_worker_enforces_the_lockout(web, web_env):
    username = new_user(web_env)

    below = attempts(web, username, "wrong", LIMIT - 1)
    counted = failures(web_env, username)
    last = attempt(web, username, "wrong")
    locked = attempts(web, username, PASSWORD, 12)

    assert {status for _, status in below} == {200}
    assert len({pid for pid, _ in below}) == WORKERS, below
    assert counted == LIMIT - 1  # no failure lost when workers count at once
    assert last[1] == 429
    assert {status for _, status in locked} == {429}
    assert len({pid for pid, _ in locked}) == WORKERS, locked


def test_the_axes_command_unlocks_a_pair_for_every_worker(web, web_env):
    username = new_user(web_env)
    lock_out(web, username)

    output = manage(web_env, "axes_reset_ip_username", ADDRESS, username)

    assert output == "1 attempts removed."
    assert attempt(web, username, PASSWORD)[1] == 302


def test_a_superuser_unlocks_a_pair_on_the_admin_page(web, web_env):
    username, boss = new_user(web_env), new_user(web_env, superuser=True)
    lock_out(web, username)
    session = requests.Session()
    login = f"{web.url}/admin/login/"
    session.get(login, timeout=10)
    credentials = {"username": boss, "password": PASSWORD, "next": "/admin/"}
    session.post(login, data={**credentials, "csrfmiddlewaretoken": session.cookies["csrftoken"]})
    page = session.get(f"{web.url}/admin/login-lockouts/", timeout=10)

    form = {
        "username": username,
        "address": ADDRESS,
        "csrfmiddlewaretoken": session.cookies["csrftoken"],
    }
    unlocked = session.post(f"{web.url}/admin/login-lockouts/", data=form, timeout=10)

    assert page.status_code == 200 and "After 10 failed logins" in page.text
    assert (
        f"Unlocked {username} at {ADDRESS} ({LIMIT + 1} failed login(s) forgotten)" in unlocked.text
    )
    assert attempt(web, username, PASSWORD)[1] == 302


def test_weak_passwords_are_refused_by_the_admin_and_by_createsuperuser(web, web_env):
    username = new_user(web_env)
    session = requests.Session()
    login = f"{web.url}/admin/login/"
    session.get(login, timeout=10)
    credentials = {"username": username, "password": PASSWORD, "next": "/admin/"}
    session.post(login, data={**credentials, "csrfmiddlewaretoken": session.cookies["csrftoken"]})
    change = f"{web.url}/admin/password_change/"
    session.get(change, timeout=10)
    weak = {"old_password": PASSWORD, "new_password1": "password1", "new_password2": "password1"}

    refused = session.post(
        change, data={**weak, "csrfmiddlewaretoken": session.cookies["csrftoken"]}
    )
    env = {**web_env, "DJANGO_SUPERUSER_PASSWORD": "12345678"}
    command = [sys.executable, "manage.py", "createsuperuser", "--no-input", "--username", "weak"]
    created = subprocess.run(
        [*command, "--email", "w@x.test"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert refused.status_code == 200 and "This password is too common." in refused.text
    assert attempt(web, username, PASSWORD)[1] == 302  # the old password still works
    assert created.returncode != 0 and "This password is entirely numeric." in created.stderr
