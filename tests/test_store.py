"""Keys in the shared store (authz/store.py): derived from admin input, they never collide."""

import os
import re
import subprocess
import sys
import time

import pytest
from django.db import connection
from hypothesis import given
from hypothesis import strategies as st

from authz import jwks
from authz.store import derived_key, internal_key
from tests.fixtures import bearer
from tests.racing import assert_overlapped, gate, intervals, without_intervals

NAMESPACES = ("jwks-record", "jwks-lock", "jwks-cooldown", "jwks-due", "check-issuer")
INTERNAL_NAMES = ("jwks-stamp", "feed-prune")
HOSTILE = ["generation", "internal", "jwks-stamp", "internal:jwks-stamp", "jwks:generation", ""]


@given(st.text(), st.text())
def test_derived_keys_of_different_values_or_namespaces_differ(first, second):
    keys = {(ns, value): derived_key(ns, value) for ns in NAMESPACES for value in (first, second)}

    expected = len(NAMESPACES) * len({first, second})
    assert len(set(keys.values())) == expected


@given(st.text())
def test_no_derived_key_is_an_internal_key(value):
    internal = {internal_key(name) for name in INTERNAL_NAMES}

    assert not {derived_key(ns, value) for ns in NAMESPACES} & internal


def test_hostile_values_stay_inside_their_namespace():
    for value in HOSTILE:
        key = derived_key("jwks-record", value)
        namespace, digest = key.split(":")
        assert namespace == "jwks-record"
        assert len(digest) == 40
        assert all(c in "0123456789abcdef" for c in digest)


def test_a_tenant_named_like_an_internal_key_works_and_leaves_the_others_alone(
    client, admin_client, make_tenant, tokens
):
    for slug in ("generation", "internal", "jwks-stamp", "acme"):
        make_tenant(slug)
    for slug in ("generation", "internal", "jwks-stamp", "acme"):
        response = client.get(f"/t/{slug}/api/private", **bearer(tokens(slug).token()))
        assert response.status_code == 200, slug

    # The platform's own stamp (a fresh hex id per key set change), not a tenant's record.
    assert re.fullmatch(r"[0-9a-f]{32}", jwks.read_stamp())
    listing = admin_client.get("/admin/tenants/tenant/")
    assert listing.status_code == 200
    # Another test may have rotated an issuer's key (the development issuer is shared): 1 or 2.
    assert len(re.findall(rb"OK \xc2\xb7 [12] key\(s\)", listing.content)) == 4


CLAIM = """
from authz.store import claim
from tests.racing import report, wait_at_gate
started = wait_at_gate()
print(claim("internal:race", 30))
report(started)
"""


@pytest.mark.django_db(transaction=True)
def test_one_process_wins_an_expired_claim_on_the_database_cache(tmp_path):
    db = connection.settings_dict
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL")},
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "ENV_FILE": "",
    }
    shell = [sys.executable, "manage.py", "shell", "--no-imports", "-c"]
    subprocess.run([sys.executable, "manage.py", "createcachetable"], env=env, check=True)
    first = 'from authz.store import claim; assert claim("internal:race", 1)'
    subprocess.run([*shell, first], env=env, check=True)
    time.sleep(2.1)  # the first claim has expired; its row is still there

    with gate(4) as opened:
        racers = [
            subprocess.Popen([*shell, CLAIM], env={**env, **opened}, stdout=subprocess.PIPE)
            for _ in range(4)
        ]
        outputs = [racer.communicate(timeout=60)[0].decode() for racer in racers]

    # Two cores: the four start at once, but two may wait for a core until the first two are done.
    assert_overlapped([intervals(output) for output in outputs], together=2)
    answers = [without_intervals(output).strip() for output in outputs]
    assert sorted(answers) == ["False", "False", "False", "True"]


def test_the_redis_store_keeps_one_client_per_pool_and_still_works():
    store = _redis_store()

    first, again = store._cache.get_client(write=True), store._cache.get_client(write=True)
    assert first is again
    assert store.add("k", {"v": 1}, 5) and not store.add("k", {"v": 2}, 5)
    assert store.get("k") == {"v": 1}
    store.delete("k")


@pytest.mark.django_db
def test_the_database_cache_add_takes_over_an_expired_row_once_and_incr_counts_live_rows():
    from django.core.management import call_command

    from authz.store import SharedDatabaseCache

    call_command("createcachetable", "authz_cache_under_test")  # with Redis, none exists
    store = SharedDatabaseCache("authz_cache_under_test", {})
    store.set("counter", 7, timeout=-1)  # an expired row
    won = [store.add("counter", 1, timeout=60), store.add("counter", 1, timeout=60)]
    counted = [store.incr("counter"), store.incr("counter", 5)]

    assert won == [True, False]
    assert counted == [2, 7] and store.get("counter") == 7
    with pytest.raises(ValueError):
        store.incr("never-set")


COUNTER = """
from django.core.cache import cache
from tests.racing import report, wait_at_gate
started = wait_at_gate()
for _ in range(100):
    if not cache.add("counted", 1, 600):
        cache.incr("counted")
report(started)
"""


@pytest.mark.django_db
def test_processes_counting_at_once_on_the_database_cache_lose_no_increment(tmp_path):
    # With Django's own incr() (a read, then a write) most are lost: 110 of 300 were counted.
    from tests.test_settings import ROOT, cache_shell, embedded, fresh_environment

    environment = embedded(tmp_path)
    with gate(3) as opened:
        counters = [
            subprocess.Popen(
                [sys.executable, "manage.py", "shell", "--no-imports", "-c", COUNTER],
                cwd=ROOT,
                env=fresh_environment({**environment, **opened}),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        results = [counter.communicate(timeout=60) for counter in counters]

    assert [counter.returncode for counter in counters] == [0, 0, 0], results
    assert_overlapped([intervals(output) for output, _ in results])
    assert cache_shell(environment, "print(cache.get('counted'))") == "300"


def _redis_store(**options: object):
    from authz.store import SharedRedisCache

    if not os.environ.get("REDIS_URL"):
        pytest.fail("REDIS_URL is not set: run the suite through platform/run-tests.")
    prefix = f"store-{time.time_ns()}"
    return SharedRedisCache(os.environ["REDIS_URL"], {"KEY_PREFIX": prefix, "OPTIONS": options})
