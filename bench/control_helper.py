"""Another process of the deployment, for the control-plane measurements: run by ``bench.py``.

It runs with the platform's environment (so against its database and shared store) and prints
one ``RESULT {json}`` line per command:

- ``seed FILE``: create the tenants of a tenants JSON file with ``bulk_create``, the fixture
  behind the figures measured at 100,000 tenants (the timed import goes through the command);
- ``refresh-all``: queue ``tenants.tasks.refresh_all_key_sets`` once;
- ``changes``: save tenant changes through the ORM on command, read from stdin, as an admin
  would: ``toggle SLUG`` (deactivate or reactivate; answers when committed),
  ``churn RATE SECONDS SLUG...`` (rename those tenants, RATE saves per second) and
  ``feed RATE SECONDS SLUG...`` (only the change-feed rows of such saves);
- ``apply-cost FILE``: the CPU time this process spends applying one tenant change.
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import django


def result(payload: dict[str, Any]) -> None:
    """The command's answer, on one line."""
    print("RESULT " + json.dumps(payload), flush=True)


def seed(path: Path) -> dict[str, Any]:
    """Create a file's tenants, each with its hosts and audiences, in one transaction."""
    from django.db import transaction

    from tenants.models import Tenant, TenantAudience, TenantHost, TenantIssuer

    documents = json.loads(path.read_text())["tenants"]
    started = time.monotonic()
    with transaction.atomic():
        tenants = Tenant.objects.bulk_create(
            [Tenant(slug=d["slug"], name=d["name"]) for d in documents], batch_size=2000
        )
        issuers = [
            TenantIssuer(tenant=t, issuer_override=d["issuer"])
            for t, d in zip(tenants, documents, strict=True)
        ]
        TenantIssuer.objects.bulk_create(issuers, batch_size=5000)
        hosts = [
            TenantHost(tenant=t, hostname=h)
            for t, d in zip(tenants, documents, strict=True)
            for h in d["hosts"]
        ]
        TenantHost.objects.bulk_create(hosts, batch_size=5000)
        audiences = [
            TenantAudience(tenant=t, audience=a)
            for t, d in zip(tenants, documents, strict=True)
            for a in d["audiences"]
        ]
        TenantAudience.objects.bulk_create(audiences, batch_size=5000)
    return {"created": len(tenants), "seconds": round(time.monotonic() - started, 1)}


def refresh_all() -> dict[str, Any]:
    """Queue the fan-out (run inline when tasks are eager, the embedded default)."""
    from celery.result import EagerResult

    from tenants.tasks import refresh_all_key_sets

    outcome = refresh_all_key_sets.delay()
    return {"key_sets": outcome.result if isinstance(outcome, EagerResult) else None}


def toggle(slug: str) -> dict[str, Any]:
    """Deactivate or reactivate one tenant, as admin saves it; when it committed."""
    from django.db import transaction

    from tenants.models import Tenant

    committed: list[float] = []
    with transaction.atomic():
        transaction.on_commit(lambda: committed.append(time.monotonic()))  # before the others
        tenant = Tenant.objects.get(slug=slug)
        tenant.active = not tenant.active
        tenant.save()
    return {"committed": committed[0], "active": tenant.active}


def paced(rate: float, seconds: float, action: Callable[[int], None]) -> dict[str, Any]:
    """Call ``action(n)`` ``rate`` times per second for ``seconds``."""
    started, done = time.monotonic(), 0
    while (now := time.monotonic()) < started + seconds:
        if now < started + done / rate:
            time.sleep(started + done / rate - now)
            continue
        action(done)
        done += 1
    return {"changes": done, "seconds": round(time.monotonic() - started, 2)}


def churn(rate: float, seconds: float, slugs: list[str]) -> dict[str, Any]:
    """Rename these tenants in turn through the ORM, as admin saves them."""
    from django.db import transaction

    from tenants.models import Tenant

    def rename(number: int) -> None:
        with transaction.atomic():
            tenant = Tenant.objects.get(slug=slugs[number % len(slugs)])
            tenant.name = f"Tenant {tenant.slug} renamed {number}"
            tenant.save()

    return paced(rate, seconds, rename)


def feed_only(rate: float, seconds: float, slugs: list[str]) -> dict[str, Any]:
    """Write only change-feed rows for these tenants: the web workers' part of a change alone."""
    from tenants.models import Tenant, TenantChange

    ids = list(Tenant.objects.filter(slug__in=slugs).values_list("id", flat=True))
    return paced(rate, seconds, lambda n: TenantChange.objects.create(tenant_id=ids[n % len(ids)]))


def changes() -> None:
    """Say which database backend is ours, then answer change commands until stdin closes."""
    from django.db import connection

    backend = None
    if connection.vendor == "postgresql":  # so the statement log can tell our statements apart
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
    result({"backend": backend})
    for line in sys.stdin:
        command, *words = line.split()
        if command == "toggle":
            result(toggle(words[0]))
        elif command in ("churn", "feed"):
            act = churn if command == "churn" else feed_only
            result(act(float(words[0]), float(words[1]), words[2:]))


def apply_cost(path: Path, changes_count: int) -> dict[str, Any]:
    """CPU per change applied: ``directory.sync()`` plus the next lookup of the changed tenant.

    The tenants of the file (slugs, one a line) are loaded first, as a web worker holds those it
    served. Each change is written as another process's save leaves it: the tenant's row
    updated and one change-feed row (neither evicts anything here); only applying it is timed.
    """
    from django.db import transaction

    from tenants.directory import directory
    from tenants.models import Tenant, TenantChange

    slugs = path.read_text().split()
    held = {slug: directory.by_slug(slug) for slug in slugs}
    directory.sync()
    idle = time.process_time()
    for _ in range(changes_count):
        directory.sync()
    idle = (time.process_time() - idle) / changes_count
    spent, stale = 0.0, 0
    for number in range(changes_count):
        slug = slugs[number * len(slugs) // changes_count]
        name = f"Tenant {slug} changed {number}"
        with transaction.atomic():
            Tenant.objects.filter(id=held[slug].id).update(name=name)
            TenantChange.objects.create(tenant_id=held[slug].id)
        started = time.process_time()
        directory.sync()
        tenant = directory.by_slug(slug)
        spent += time.process_time() - started
        stale += tenant.name != name
    return {
        "held": directory.held(),
        "changes": changes_count,
        "change_apply_cpu_us": round(spent / changes_count * 1e6, 1),
        "idle_sync_cpu_us": round(idle * 1e6, 1),
        "stale_after_apply": stale,
    }


def main() -> None:
    """Parse the command, set up Django with the platform's environment, run it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("seed").add_argument("file", type=Path)
    commands.add_parser("refresh-all")
    commands.add_parser("changes")
    cost = commands.add_parser("apply-cost")
    cost.add_argument("file", type=Path)
    cost.add_argument("--changes", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()
    if args.command == "seed":
        result(seed(args.file))
    elif args.command == "refresh-all":
        result(refresh_all())
    elif args.command == "changes":
        changes()
    else:
        result(apply_cost(args.file, args.changes))


if __name__ == "__main__":
    main()
