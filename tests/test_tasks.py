"""Key set refresh tasks (one per distinct JWKS URL), some run by a real Celery worker."""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from celery.signals import before_task_publish
from django.core.cache import cache
from django.db import connection

from authz import jwks
from authz.jwks import read_record
from authz.store import derived_key
from authz.tasks import refresh_key_set
from config.celery import app as celery_app
from tenants.config_io import import_tenants
from tenants.directory import directory
from tenants.models import Tenant, TenantIssuer
from tenants.tasks import refresh_all_key_sets
from tests.fixtures import jwks_url_of, kids_of

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


@pytest.mark.worker
def test_saving_a_tenant_refreshes_its_keys_after_commit(worker, issuer):
    tenant = Tenant.objects.create(slug="saved", name="Saved")
    tenant.issuers.create(issuer_override=issuer.url_for("saved"))

    kids = wait_for(lambda: kids_of(jwks_url_of("saved")))

    assert issuer.store.current("saved")[0] in kids


@contextmanager
def published_tasks() -> Iterator[list[tuple[str, tuple]]]:
    """The tasks this process sends to the broker inside the block: (name, args)."""
    sent: list[tuple[str, tuple]] = []

    def record(sender: str, body: tuple, **kwargs: object) -> None:
        sent.append((sender, tuple(body[0])))

    before_task_publish.connect(record, weak=False)
    try:
        yield sent
    finally:
        before_task_publish.disconnect(record)


@pytest.mark.worker
def test_an_import_queues_one_refresh_per_url_after_commit(worker, issuer):
    items = [
        {
            "slug": slug,
            "name": slug,
            "issuer": issuer.url_for("imported"),
            "audiences": [f"https://api.{slug}.test"],
        }
        for slug in ("imported-a", "imported-b")
    ]
    before = issuer.hits("/imported/.well-known/jwks.json")

    with published_tasks() as sent:
        summary = import_tenants({"tenants": items})

    url = jwks_url_of("imported-a")
    assert sent == [("authz.tasks.refresh_key_set", (url,))]  # whatever the worker's speed
    kids = wait_for(lambda: kids_of(url))
    assert issuer.store.current("imported")[0] in kids
    assert (summary.key_sets, issuer.hits("/imported/.well-known/jwks.json") - before) == (1, 1)


@pytest.mark.worker
def test_periodic_fan_out_picks_up_a_rotated_key(worker, make_tenant, issuer):
    make_tenant("one")
    make_tenant("two")
    one, two = jwks_url_of("one"), jwks_url_of("two")
    wait_for(lambda: kids_of(one) and kids_of(two))
    new_kid = requests.post(f"{issuer.url_for('two')}rotate", timeout=5).json()["kid"]

    queued = refresh_all_key_sets.delay()

    wait_for(lambda: new_kid in kids_of(two))
    assert queued.id and issuer.store.current("one")[0] in kids_of(one)


@pytest.mark.worker
def test_unreachable_issuer_is_retried_then_recovers(worker, make_tenant, issuer_keys):
    from devissuer.issuer import start_in_thread

    server = start_in_thread(issuer_keys)
    port = server.server_address[1]
    make_tenant("flaky", issuer=server.url_for("flaky"))
    url = jwks_url_of("flaky")
    wait_for(lambda: kids_of(url))
    server.stop()
    refresh_key_set.delay(url)
    wait_for(lambda: "could not be reached" in (read_record(url).last_error or ""))

    server = start_in_thread(issuer_keys, port=port)  # back up on the same address
    try:
        wait_for(lambda: read_record(url).last_error is None, timeout=30)
    finally:
        server.stop()
    assert kids_of(url)


def test_refresh_is_single_flight_per_url(acme):
    url = jwks_url_of("acme")
    cache.add(derived_key("jwks-lock", url), "someone-else", timeout=30)

    with pytest.raises(jwks.RefreshInProgress):
        jwks.refresh_key_set(url)

    assert refresh_key_set.delay(url).get() == "busy"


def test_fan_out_skips_inactive_tenants(make_tenant, issuer):
    make_tenant("dormant", active=False)
    before = issuer.hits("/dormant/.well-known/jwks.json")

    assert refresh_all_key_sets.delay().get() == 0
    assert issuer.hits("/dormant/.well-known/jwks.json") == before


def test_fan_out_fetches_a_shared_jwks_url_once(make_tenant, issuer):
    make_tenant("left", issuer_name="fan-shared")
    make_tenant("right", issuer_name="fan-shared")
    before = issuer.hits("/fan-shared/.well-known/jwks.json")

    assert refresh_all_key_sets.delay().get() == 1
    assert issuer.hits("/fan-shared/.well-known/jwks.json") - before == 1
    assert issuer.store.current("fan-shared")[0] in kids_of(jwks_url_of("left"))


def test_deleting_the_last_tenant_of_a_url_drops_its_record(
    make_tenant, django_capture_on_commit_callbacks
):
    make_tenant("first", issuer_name="deleted-keys")
    make_tenant("second", issuer_name="deleted-keys")
    url = jwks_url_of("first")
    refresh_key_set.delay(url)

    with django_capture_on_commit_callbacks(execute=True):
        Tenant.objects.get(slug="first").delete()
    kept = read_record(url)
    with django_capture_on_commit_callbacks(execute=True):
        Tenant.objects.get(slug="second").delete()

    assert kept is not None and kept.keys
    assert read_record(url) is None


def test_repointing_the_last_tenant_of_a_url_drops_its_record(
    make_tenant, issuer, django_capture_on_commit_callbacks
):
    make_tenant("mover", issuer_name="old-keys")
    make_tenant("stayer", issuer_name="old-keys")
    old = jwks_url_of("mover")
    refresh_key_set.delay(old)

    def repoint(slug: str) -> None:
        listed = Tenant.objects.get(slug=slug).issuers.get()
        listed.issuer_override = issuer.url_for("new-keys")
        with django_capture_on_commit_callbacks(execute=True):
            listed.save()

    repoint("mover")
    kept = read_record(old)
    repoint("stayer")

    assert kept is not None and kept.keys
    assert read_record(old) is None
    assert issuer.store.current("new-keys")[0] in kids_of(jwks_url_of("mover"))


@pytest.mark.worker
def test_beat_schedule_refreshes_every_key_set_on_its_own(worker, make_tenant, issuer, tmp_path):
    make_tenant("scheduled")
    url = jwks_url_of("scheduled")
    wait_for(lambda: kids_of(url))
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
        wait_for(lambda: new_kid in kids_of(url), timeout=30)
    finally:
        beat.terminate()
        beat.wait(timeout=20)


def test_fan_out_finds_a_tenant_this_process_has_not_seen(db, issuer):
    assert directory.by_slug("fresh") is None  # this process's directory, before the save
    # bulk_create sends no signal, as a save in another process reaches this one only later
    (fresh,) = Tenant.objects.bulk_create([Tenant(slug="fresh", name="Fresh")])
    TenantIssuer.objects.bulk_create(
        [TenantIssuer(tenant=fresh, issuer_override=issuer.url_for("fresh"))]
    )

    assert refresh_all_key_sets.delay().get() == 1
    assert issuer.store.current("fresh")[0] in kids_of(jwks_url_of("fresh"))
