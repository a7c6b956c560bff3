"""GET /metrics: the Prometheus exposition, summed over every process of this web role.

Off unless METRICS_TOKEN is set, and then only for ``Authorization: Bearer <METRICS_TOKEN>``.
Never served on a tenant's hostname (tenant paths never route here). With PROMETHEUS_MULTIPROC_DIR
set (both gunicorn config files set it, ``ops/metrics_dir.py``), the figures are those of every
worker of this gunicorn, otherwise of this process alone; the Celery worker's refreshes and the key
set ages come from the shared store.
"""

import hmac
import logging
import os
import time
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.request import split_domain_port
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from authz.jwks import read_records
from authz.metrics import (
    KEYSET_FETCH_HELP,
    KEYSET_FETCH_LABELS,
    KEYSET_FETCH_NAME,
    REQUESTS,
    SCHEDULED,
    key_set_labels,
    stored_fetch_counts,
    tenant_labels,
)
from tenants.directory import directory

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"


class KeySetAgeCollector(Collector):
    """``authz_keyset_age_seconds`` at scrape time, from the shared records of labelled URLs."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One gauge per JWKS URL holding a label slot: seconds since its last good fetch."""
        family = GaugeMetricFamily(
            "authz_keyset_age_seconds",
            "Seconds since the key set was last fetched successfully, per JWKS URL.",
            labels=["jwks_url"],
        )
        try:
            records = read_records(key_set_labels.holders())
        except Exception:
            logger.warning("Cannot read key set records for /metrics from the shared store.")
            records = {}
        now = time.time()
        for url, record in sorted(records.items()):
            if record is not None and record.fetched_at is not None:
                family.add_metric([url], max(0.0, now - record.fetched_at))
        yield family


def scrape_registry() -> CollectorRegistry:
    """Every figure this web role exposes: its processes', and the shared store's."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        source: Collector = MultiProcessCollector(CollectorRegistry())
    else:
        source = REGISTRY  # one process (runserver, tests): its own figures
    registry.register(WithStoredCounts(source))
    registry.register(KeySetAgeCollector())
    return registry


class WithStoredCounts(Collector):
    """The processes' families, with the worker's refreshes (kept in the shared store) added to
    ``authz_keyset_fetch``, so the family is whole and exposed once."""

    def __init__(self, source: Collector) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        """Every family of the source; the key set fetches completed from the store."""
        found = False
        for family in self.source.collect():
            if family.name == KEYSET_FETCH_NAME:
                found = True
                _add_stored_fetches(family)
            yield family
        if not found:
            family = CounterMetricFamily(
                KEYSET_FETCH_NAME, KEYSET_FETCH_HELP, labels=KEYSET_FETCH_LABELS
            )
            _add_stored_fetches(family)
            yield family


def _add_stored_fetches(family: Metric) -> None:
    try:
        counts = stored_fetch_counts()
    except Exception:
        logger.warning("Cannot read the key set refresh counts for /metrics from the shared store.")
        return
    for (label, outcome), value in sorted(counts.items()):
        labels = dict(zip(KEYSET_FETCH_LABELS, (label, outcome, SCHEDULED), strict=True))
        family.samples.append(Sample(f"{family.name}_total", labels, value))


def metrics_response(request: HttpRequest) -> HttpResponse | None:
    """The /metrics answer, or None where /metrics is not served (off, or a tenant's host)."""
    token = settings.METRICS_TOKEN
    if not token or _is_tenant_host(request):
        return None
    sent = request.META.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
    if not hmac.compare_digest(sent, f"Bearer {token}".encode()):
        response = HttpResponse("Metrics need the metrics token.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_LATEST)


def _is_tenant_host(request: HttpRequest) -> bool:
    hostname, _port = split_domain_port(request.META.get("HTTP_HOST", ""))
    return bool(hostname) and directory.by_host(hostname) is not None


def count_request(tenant: str | None, endpoint: str, status: int, code: str | None) -> None:
    """One API request's outcome."""
    label = tenant_labels.label(tenant) if tenant else "none"
    outcome = "ok" if status < 400 else (code or "error")
    REQUESTS.labels(label, endpoint, str(status), outcome).inc()
