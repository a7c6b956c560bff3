"""Routes follow tenant changes in every gunicorn worker, through the change feed, in both modes.

The admin's "try a request" box answers from the routes the worker that serves it has compiled,
so asking it on every worker shows what each one holds.
"""

import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.processes import PROBE, WORKERS, Stack
from tests.test_control_plane import RECHECK, stack  # noqa: F401 - the module's processes

CODE = re.compile(r'id="try-route-code">([a-z_]+)<')


@pytest.fixture(scope="module")
def session(stack: Stack) -> Iterator[tuple[str, int]]:  # noqa: F811
    """A superuser's admin session cookie and the id of tenant shop (with one route)."""
    stack.import_tenants(stack.tenant("shop", routes=[{"methods": ["GET"], "path": "/a"}]))
    output = stack.shell(
        "from django.contrib.auth.models import User; from django.test import Client; "
        "from tenants.models import Tenant; "
        "user = User.objects.create_superuser(f'root-{__import__(\"uuid\").uuid4().hex}', "
        "password='pw-root-123456'); client = Client(); client.force_login(user); "
        "print(client.cookies['sessionid'].value, Tenant.objects.get(slug='shop').pk)"
    )
    cookie, tenant_id = output.split()[-2:]
    yield cookie, int(tenant_id)


def try_box(stack: Stack, cookie: str, tenant_id: int, path: str, probe: str) -> str:  # noqa: F811
    """The try box's outcome code for GET ``path``, on a connection of its own."""
    response = requests.get(
        f"{stack.web.url}/admin/tenants/tenant/{tenant_id}/change/",
        params={"try_method": "GET", "try_path": path},
        headers={"Host": "127.0.0.1", "Connection": "close", PROBE: probe},
        cookies={"sessionid": cookie},
        timeout=30,
    )
    found = CODE.search(response.text)
    return found[1] if found else f"status {response.status_code}"


def codes_by_worker(stack: Stack, cookie: str, tenant_id: int, path: str) -> dict[int, set]:  # noqa: F811
    """The try box's outcomes for GET ``path`` by worker, asked until every worker answered."""
    answers: dict[str, str] = {}
    for _ in range(10):
        probes = [uuid.uuid4().hex for _ in range(8)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            codes = pool.map(lambda p: try_box(stack, cookie, tenant_id, path, p), probes)
            answers.update(zip(probes, codes, strict=True))
        by_worker: dict[int, set] = {}
        for probe, pid in stack.web._pids(list(answers)).items():
            if probe in answers:
                by_worker.setdefault(pid, set()).add(answers[probe])
        if len(by_worker) >= WORKERS:
            return by_worker
    pytest.fail(f"Not every worker answered: {answers}")


def test_a_route_added_in_another_process_is_matched_by_every_worker_within_the_interval(
    stack: Stack,  # noqa: F811
    session: tuple[str, int],
) -> None:
    cookie, tenant_id = session
    before = codes_by_worker(stack, cookie, tenant_id, "/b/1")
    assert all(codes == {"no_route"} for codes in before.values()), before

    stack.shell(
        "from tenants.models import Route, Tenant; "
        "Route.objects.create(tenant=Tenant.objects.get(slug='shop'), position=1, "
        "methods=['GET'], path='/b/{id}')"
    )
    started = time.monotonic()
    while True:
        after = codes_by_worker(stack, cookie, tenant_id, "/b/1")
        if all(codes == {"matched"} for codes in after.values()):
            break
        assert time.monotonic() - started < RECHECK + 5, after
        time.sleep(0.05)
