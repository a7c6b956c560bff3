"""Admin login protection (ops/login.py): lockouts per username and address, unlocking, the
client address behind trusted proxies, and the password validators, in this process against the
real shared store (Redis, or the database cache without REDIS_URL)."""

import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client

from ops.login import canonical_address, failures_of
from tests.fixtures import bearer

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/"
LOCKOUTS = "/admin/login-lockouts/"
PASSWORD = "Kx7-operator-passphrase"
LIMIT = 5


@pytest.fixture
def op() -> User:
    return User.objects.create_user("op", "op@example.test", PASSWORD, is_staff=True)


@pytest.fixture
def root() -> User:
    return User.objects.create_superuser("root", "root@example.test", PASSWORD)


def log_in(username: str, password: str, address: str = "198.51.100.7", **meta: str):
    """One admin login from ``address`` on a client of its own; the response."""
    client = Client(REMOTE_ADDR=address, **meta)
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"})


def fail(times: int, username: str = "op", address: str = "198.51.100.7") -> None:
    for _ in range(times):
        assert log_in(username, "wrong-password", address).status_code in (200, 429)


def logged_in(response) -> bool:
    return response.status_code == 302 and response.url == "/admin/"


def test_the_limit_th_failure_locks_the_pair_out_with_a_429_page_that_says_what_to_do(op):
    fail(LIMIT - 1)
    last = log_in("op", "wrong-password")
    right_password = log_in("op", PASSWORD)

    assert last.status_code == right_password.status_code == 429
    page = right_password.content.decode()
    assert "Too many failed logins: <strong>op</strong>" in page
    assert "is locked out from 198.51.100.7 after\n    5 failures" in page
    assert "Wait 0:15:00" in page and 'href="/admin/login/"' in page


def test_a_lockout_ends_by_itself_after_the_cool_off(settings, op):
    settings.AXES_COOLOFF_TIME = timedelta(seconds=2)
    fail(LIMIT)
    locked = log_in("op", PASSWORD).status_code
    time.sleep(3.1)  # the database cache keeps whole seconds, and the refusal restarted the wait

    assert locked == 429
    assert logged_in(log_in("op", PASSWORD))


def test_failures_below_the_limit_leave_the_password_working_and_a_good_login_forgets_them(op):
    fail(LIMIT - 1)
    assert logged_in(log_in("op", PASSWORD))
    fail(LIMIT - 1)

    assert logged_in(log_in("op", PASSWORD))


def test_a_locked_pair_leaves_other_users_and_other_addresses_free(op, root):
    fail(LIMIT)

    assert log_in("op", PASSWORD).status_code == 429
    assert logged_in(log_in("root", PASSWORD))  # same address, another user
    assert logged_in(log_in("op", PASSWORD, address="203.0.113.9"))  # same user elsewhere


def test_the_api_never_meets_the_lockout(op, acme, acme_tokens):
    fail(LIMIT)
    api = Client(REMOTE_ADDR="198.51.100.7")

    response = api.get("/t/acme/api/private", **bearer(acme_tokens.token()))

    assert response.status_code == 200
    assert log_in("op", PASSWORD).status_code == 429


@pytest.mark.parametrize(
    ("proxies", "forwarded", "counted_as"),
    [
        (0, "203.0.113.5", "10.0.0.2"),  # no trusted proxy: the header is the client's own
        (1, "203.0.113.5", "203.0.113.5"),
        (1, "6.6.6.6, 203.0.113.5", "203.0.113.5"),  # the left one was invented by the client
        (2, "6.6.6.6, 203.0.113.5, 10.0.0.9", "203.0.113.5"),
        (2, "203.0.113.5", "10.0.0.2"),  # fewer entries than proxies: not through them all
        (1, "not-an-address", "10.0.0.2"),
        (1, "::ffff:203.0.113.5", "203.0.113.5"),
    ],
)
def test_behind_trusted_proxies_the_address_is_the_one_the_outermost_saw(
    settings, op, proxies, forwarded, counted_as
):
    settings.TRUSTED_PROXY_COUNT = proxies

    log_in("op", "wrong-password", address="10.0.0.2", HTTP_X_FORWARDED_FOR=forwarded)

    assert failures_of("op", counted_as) == 1
    others = {"10.0.0.2", *(entry.strip() for entry in forwarded.split(","))} - {counted_as}
    others |= {canonical_address(other) or other for other in others} - {counted_as}
    assert {other: failures_of("op", other) for other in others} == dict.fromkeys(others, 0)


def test_a_client_inventing_a_new_forwarded_address_each_time_is_still_locked_out(settings, op):
    settings.TRUSTED_PROXY_COUNT = 1
    for n in range(LIMIT):
        spoofed = f"6.6.6.{n}, 203.0.113.5"  # the proxy appended what it saw: 203.0.113.5
        log_in("op", "wrong-password", address="10.0.0.2", HTTP_X_FORWARDED_FOR=spoofed)

    next_try = log_in(
        "op", PASSWORD, address="10.0.0.2", HTTP_X_FORWARDED_FOR="7.7.7.7, 203.0.113.5"
    )

    assert next_try.status_code == 429
    assert failures_of("op", "203.0.113.5") >= LIMIT  # a refused try counts too
    assert [failures_of("op", f"6.6.6.{n}") for n in range(LIMIT)] == [0] * LIMIT


def test_behind_a_tls_proxy_one_proxy_is_trusted_by_default():
    from tests.test_settings import settings_under

    shown = settings_under(SECRET_KEY="s" * 50, BEHIND_TLS_PROXY="true")
    direct = settings_under(SECRET_KEY="s" * 50)

    assert (shown["TRUSTED_PROXY_COUNT"], direct["TRUSTED_PROXY_COUNT"]) == (1, 0)


def test_the_lockout_policy_comes_from_the_environment():
    from tests.test_settings import settings_under

    shown = settings_under(DEBUG="true", AXES_FAILURE_LIMIT="3", AXES_COOLOFF_SECONDS="60")
    default = settings_under(DEBUG="true")

    assert (shown["AXES_FAILURE_LIMIT"], shown["AXES_COOLOFF_TIME"]) == (3, "0:01:00")
    assert (default["AXES_FAILURE_LIMIT"], default["AXES_COOLOFF_TIME"]) == (5, "0:15:00")
    assert default["AUTHENTICATION_BACKENDS"][0] == "axes.backends.AxesStandaloneBackend"
    assert default["AXES_HANDLER"] == "axes.handlers.cache.AxesCacheHandler"


def test_a_lockout_policy_that_cannot_lock_refuses_to_start():
    from tests.test_settings import manage

    result = manage({"DEBUG": "true", "AXES_COOLOFF_SECONDS": "0"}, "check")

    assert result.returncode != 0
    assert "AXES_FAILURE_LIMIT and AXES_COOLOFF_SECONDS must be positive" in result.stderr


def test_a_superuser_unlocks_a_pair_on_the_admin_page(op, root, client):
    fail(LIMIT)
    client.force_login(root)
    page = client.get(LOCKOUTS).content.decode()

    response = client.post(LOCKOUTS, {"username": "op", "address": "198.51.100.7"}, follow=True)

    assert "After 5 failed logins a username is locked out" in page
    assert "Unlocked op at 198.51.100.7 (5 failed login(s) forgotten)." in response.content.decode()
    assert logged_in(log_in("op", PASSWORD))


def test_unlocking_a_pair_that_is_not_locked_says_so(root, client):
    client.force_login(root)

    response = client.post(LOCKOUTS, {"username": "nobody", "address": "::1"}, follow=True)

    assert "No failed logins were counted for nobody at ::1; nothing" in response.content.decode()


def test_the_admin_index_links_superusers_to_the_lockouts_page(op, root):
    superuser, operator = Client(), Client()
    superuser.force_login(root)
    operator.force_login(op)

    assert f'href="{LOCKOUTS}"' in superuser.get("/admin/").content.decode()
    assert f'href="{LOCKOUTS}"' not in operator.get("/admin/").content.decode()


def test_only_a_superuser_may_see_or_use_the_lockouts_page(op, client):
    fail(LIMIT)
    anonymous = Client().post(LOCKOUTS, {"username": "op", "address": "198.51.100.7"})
    client.force_login(op)

    assert anonymous.status_code == 302 and anonymous.url.startswith(LOGIN)
    assert client.get(LOCKOUTS).status_code == 403
    assert client.post(LOCKOUTS, {"username": "op", "address": "198.51.100.7"}).status_code == 403
    assert log_in("op", PASSWORD).status_code == 429


def test_the_unlock_form_takes_the_csrf_token_like_every_admin_form(root):
    client = Client(enforce_csrf_checks=True)
    client.force_login(root)

    response = client.post(LOCKOUTS, {"username": "op", "address": "198.51.100.7"})

    assert response.status_code == 403


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"username": "op"},
        {"username": "op", "address": "not an address"},
        {"username": "x" * 10_000, "address": "198.51.100.7"},
        {"username": "op\x00", "address": "198.51.100.7"},
        {"username": "op", "address": "1.2.3.4\x00"},
        {"username": "op", "address": "9" * 5000},
    ],
)
def test_garbage_on_the_unlock_form_re_renders_it_with_errors(root, client, data):
    client.force_login(root)

    response = client.post(LOCKOUTS, data)

    assert response.status_code == 200
    assert 'class="errorlist' in response.content.decode()


def createsuperuser(password: str) -> subprocess.CompletedProcess[str]:
    """``createsuperuser --no-input`` in a process of its own, on the test database."""
    from tests.processes import database_url

    env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SUPERUSER_PASSWORD": password}
    command = [sys.executable, "manage.py", "createsuperuser", "--no-input"]
    command += ["--username", "boss", "--email", "boss@example.test"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("12345678", "This password is entirely numeric."),
        ("passw0rd", "This password is too common."),
        ("Zq8-x", "This password is too short."),
        ("boss@example", "The password is too similar to the"),
    ],
)
def test_createsuperuser_without_a_terminal_refuses_a_weak_password(password, reason):
    result = createsuperuser(password)

    assert result.returncode != 0
    assert reason in result.stderr
    assert not User.objects.filter(username="boss").exists()


@pytest.mark.django_db(transaction=True)
def test_createsuperuser_without_a_terminal_takes_a_strong_password():
    result = createsuperuser("Kx7-boss-passphrase")

    assert result.returncode == 0, result.stderr
    assert User.objects.get(username="boss").check_password("Kx7-boss-passphrase")


def test_the_admin_password_forms_refuse_a_weak_password(op, root, client):
    client.force_login(root)
    weak = {"password1": "password", "password2": "password"}

    added = client.post(
        "/admin/auth/user/add/", {"username": "new", "usable_password": "true", **weak}
    )
    changed = client.post(f"/admin/auth/user/{op.pk}/password/", weak)
    own = client.post(
        "/admin/password_change/",
        {"old_password": PASSWORD, "new_password1": "password", "new_password2": "password"},
    )

    for response in (added, changed, own):
        assert response.status_code == 200
        assert "This password is too common." in response.content.decode()
    assert not User.objects.filter(username="new").exists()
    op.refresh_from_db()
    assert op.check_password(PASSWORD)
