"""Key set refresh tasks, run by a real Celery worker over the Redis broker."""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from django.core.cache import cache
from django.db import connection

from authz import jwks
from authz.jwks import read_record
from authz.tasks import refresh_all_key_sets, refresh_key_set
from config.celery import app as celery_app
from tenants.directory import directory

ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], object], timeout: float = 15) -> object:
    """Poll until the condition is truthy; fail the test after the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"condition not met within {timeout} s")


def worker_environment() -> dict[str, str]:
    """The test process's environment, pointed at the test database."""
    settings = connection.settings_dict
    database = (
        f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"
    )
    return {**os.environ, "DATABASE_URL": database, "AUTHZ_CONFIG_RECHECK_INTERVAL": "0"}


@pytest.fixture
def worker(transactional_db: None) -> Iterator[subprocess.Popen]:
    """A real Celery worker process consuming the Redis broker."""
    celery_app.conf.task_always_eager = False
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo"]
    command += ["--without-gossip", "--without-mingle", "--loglevel=INFO"]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=worker_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: celery_app.control.ping(timeout=0.5), timeout=30)
        yield process
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0].decode(errors="replace")
        print(output[-4000:])  # shown by pytest only when the test fails


def kids_of(slug: str) -> set[str]:
    """The kids stored in the shared record of a tenant."""
    record = read_record(slug)
    return {key["kid"] for key in record.keys} if record else set()


@pytest.mark.worker
def test_saving_a_tenant_refreshes_its_keys_after_commit(worker, make_tenant, issuer):
    make_tenant("saved")

    kids = wait_for(lambda: kids_of("saved"))

    assert issuer.store.current("saved")[0] in kids


@pytest.mark.worker
def test_periodic_fan_out_picks_up_a_rotated_key(worker, make_tenant, issuer):
    make_tenant("one")
    make_tenant("two")
    wait_for(lambda: kids_of("one") and kids_of("two"))
    new_kid = requests.post(f"{issuer.url_for('two')}rotate", timeout=5).json()["kid"]

    queued = refresh_all_key_sets.delay()

    wait_for(lambda: new_kid in kids_of("two"))
    assert queued.id and issuer.store.current("one")[0] in kids_of("one")


@pytest.mark.worker
def test_unreachable_issuer_is_retried_then_recovers(worker, make_tenant, issuer_keys):
    from authz.devissuer import start_in_thread

    server = start_in_thread(issuer_keys)
    port = server.server_address[1]
    make_tenant("flaky", issuer=server.url_for("flaky"))
    wait_for(lambda: kids_of("flaky"))
    server.stop()
    refresh_key_set.delay("flaky")
    wait_for(lambda: (read_record("flaky").last_error or "").startswith("The issuer could not"))

    server = start_in_thread(issuer_keys, port=port)  # back up on the same address
    try:
        wait_for(lambda: read_record("flaky").last_error is None, timeout=30)
    finally:
        server.stop()
    assert kids_of("flaky")


def test_refresh_is_single_flight_per_tenant(acme):
    cache.add("jwks-lock:acme", "someone-else", timeout=30)

    with pytest.raises(jwks.RefreshInProgress):
        jwks.refresh_key_set(directory.by_slug("acme"))

    assert refresh_key_set.delay("acme").get() == "busy"


def test_refresh_of_a_missing_tenant_is_a_no_op(db):
    assert refresh_key_set.delay("nobody").get() == "no-such-tenant"


@pytest.mark.worker
def test_beat_schedule_refreshes_every_tenant_on_its_own(worker, make_tenant, issuer, tmp_path):
    make_tenant("scheduled")
    wait_for(lambda: kids_of("scheduled"))
    new_kid = issuer.store.rotate("scheduled")
    env = {**worker_environment(), "AUTHZ_JWKS_REFRESH_INTERVAL": "1"}
    command = [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel=INFO"]
    beat = subprocess.Popen(
        [*command, "--schedule", str(tmp_path / "beat-schedule")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: new_kid in kids_of("scheduled"), timeout=30)
    finally:
        beat.terminate()
        beat.wait(timeout=20)


def test_refresh_finds_a_tenant_newer_than_the_workers_snapshot(db, issuer):
    from tenants.models import Tenant

    assert directory.active_slugs() == []  # this process's snapshot, taken before the save
    # bulk_create sends no signal, as a save in another process reaches this one only later
    Tenant.objects.bulk_create(
        [Tenant(slug="fresh", name="Fresh", issuer_override=issuer.url_for("fresh"))]
    )

    assert refresh_key_set.delay("fresh").get() == "ok: 1 keys"
