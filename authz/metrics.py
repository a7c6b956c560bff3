"""Prometheus families the platform records, and the bound on their label values.

A web process counts into its own files (prometheus-client's multiprocess mode, see
``ops/metrics_dir.py``) and ``/metrics`` adds up those of its gunicorn. A Celery worker shares no
files with the web role (replicas share only the database and the store), so the refreshes it
runs are counted in the shared store, which ``/metrics`` reads. Tenants and JWKS URLs are label
values that admin input creates, so they are bounded: ``LabelSlots`` gives at most N of each
their own series in the whole deployment, and every other value shares ``other``.
"""

import hashlib
import logging
import time

from prometheus_client import Counter, Histogram

from authz.conf import authz_settings
from authz.store import claim, derived_key, internal_key, shared_store

logger = logging.getLogger(__name__)

OTHER = "other"
SCHEDULED = "scheduled"  # the Celery task's refreshes: counted in the shared store
STORED_FETCH_OUTCOMES = ("ok", "empty", "error", "busy")
# A slot, once claimed, is held this long: long enough that the named set does not churn.
SLOT_SECONDS = 30 * 24 * 3600
# After the store fails, slots are not asked again for this long: an unreachable store must not
# add its timeout to every request.
STORE_RETRY_SECONDS = 5.0
# How many slots a value tries, from the one it hashes to, before it is named ``other``.
PROBES = 4
# Per request: from a cache hit (tens of µs) to a fresh fetch on the request path (seconds).
VERIFICATION_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.5, 5)
PROPAGATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300)

REQUESTS = Counter(
    "authz_requests",
    "API requests by tenant, endpoint, status and error code (ok when served).",
    ["tenant", "endpoint", "status", "code"],
)
VERIFICATION = Histogram(
    "authz_verification_seconds",
    "Time to turn an access token into claims: cached (remembered) or fresh (verified now).",
    ["path"],
    buckets=VERIFICATION_BUCKETS,
)
TOKEN_CACHE = Counter(
    "authz_verified_token_cache",
    "Verified-token cache lookups: hit, refused_hit (a remembered refusal) or miss.",
    ["result"],
)
KEYSET_FETCH_NAME = "authz_keyset_fetch"
KEYSET_FETCH_HELP = (
    "Key set fetches by JWKS URL, outcome (ok, empty, error, busy, cooldown_refused) and "
    "trigger (scheduled, background, on_demand)."
)
KEYSET_FETCH_LABELS = ("jwks_url", "outcome", "trigger")
KEYSET_FETCHES = Counter(KEYSET_FETCH_NAME, KEYSET_FETCH_HELP, KEYSET_FETCH_LABELS)
CONFIG_CHANGES = Counter(
    "authz_config_changes_applied",
    "Tenant changes this process applied from the change feed.",
)
CONFIG_PROPAGATION = Histogram(
    "authz_config_propagation_seconds",
    "From a tenant change's commit to a process applying it.",
    buckets=PROPAGATION_BUCKETS,
)
RATE_LIMITED = Counter(
    "authz_rate_limited",
    "Requests refused with 429 because a rate limit of the tenant was reached.",
    ["tenant"],
)
DPOP_REPLAYS = Counter(
    "authz_dpop_replays",
    "DPoP proofs refused because their jti was seen before.",
    ["tenant"],
)


class LabelSlots:
    """Which values of a label get their own series: at most ``size`` in the whole deployment.

    A value hashes to one of ``size`` slots and, when another value holds it, tries the next
    PROBES - 1 (so two URLs of one tenant rarely share ``other``). The first value to claim a slot
    in the shared store holds it for SLOT_SECONDS, and every process asks the store about a slot
    once. So the series count is bounded whatever the number of tenants or URLs, every process
    names the same values, and a request costs a store round trip only while its slot is unknown
    here. After a store failure, unknown slots name ``other`` for STORE_RETRY_SECONDS without
    asking.
    """

    def __init__(self, namespace: str, setting: str) -> None:
        self.namespace = namespace
        self.setting = setting
        self._holders: dict[int, str] = {}
        self._retry_at = 0.0

    @property
    def size(self) -> int:
        """How many values get their own series (a setting)."""
        return getattr(authz_settings, self.setting)

    def label(self, value: str) -> str:
        """``value`` when it holds a slot of its probe sequence, else ``other``."""
        size = self.size
        if size <= 0:
            return OTHER
        digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        first = int.from_bytes(digest, "big") % size
        for probe in range(min(PROBES, size)):
            slot = (first + probe) % size
            holder = self._holders.get(slot)
            if holder is None:
                holder = self._holder_of(slot, value)
                if holder is None:
                    return OTHER  # the store did not answer: ask again next time
                self._holders[slot] = holder
            if holder == value:
                return value
        return OTHER

    def holders(self) -> list[str]:
        """Every value that holds a slot now, as the shared store says (one round trip)."""
        keys = [self._key(slot) for slot in range(self.size)]
        return sorted({value for value in shared_store().get_many(keys).values() if value})

    def forget(self) -> None:
        """Forget the slots learnt in this process (tests, a flushed store)."""
        self._holders.clear()
        self._retry_at = 0.0

    def _holder_of(self, slot: int, value: str) -> str | None:
        if time.monotonic() < self._retry_at:
            return None
        key = self._key(slot)
        try:
            if claim(key, SLOT_SECONDS, value):
                return value
            return shared_store().get(key)
        except Exception:
            self._retry_at = time.monotonic() + STORE_RETRY_SECONDS
            logger.warning("Cannot read the metrics label slots from the shared store.")
            return None

    def _key(self, slot: int) -> str:
        return internal_key(f"metrics-{self.namespace}-{slot}")


tenant_labels = LabelSlots("tenant", "METRICS_TENANT_LABELS")
key_set_labels = LabelSlots("jwks-url", "METRICS_KEY_SET_LABELS")
route_labels = LabelSlots("route", "METRICS_ROUTE_LABELS")


def count_key_set_fetch(jwks_url: str, outcome: str, trigger: str) -> None:
    """One fetch (or refused fetch) of a key set."""
    label = key_set_labels.label(jwks_url)
    if trigger != SCHEDULED:
        KEYSET_FETCHES.labels(label, outcome, trigger).inc()
        return
    key = _stored_fetch_key(label, outcome)
    try:
        store = shared_store()
        store.add(key, 0, timeout=None)
        store.incr(key)
    except Exception:
        logger.warning("Cannot count a key set refresh in the shared store.")


def stored_fetch_counts() -> dict[tuple[str, str], int]:
    """The scheduled refreshes counted in the shared store, by (URL label, outcome)."""
    labels = [*key_set_labels.holders(), OTHER]
    keys = {
        _stored_fetch_key(label, o): (label, o) for label in labels for o in STORED_FETCH_OUTCOMES
    }
    return {keys[key]: int(value) for key, value in shared_store().get_many(list(keys)).items()}


def _stored_fetch_key(label: str, outcome: str) -> str:
    return derived_key("metrics-scheduled-fetch", f"{label}\n{outcome}")


def count_dpop_replay(tenant: str) -> None:
    """One replayed DPoP proof refused."""
    DPOP_REPLAYS.labels(tenant_labels.label(tenant)).inc()


def count_rate_limited(tenant: str) -> None:
    """One request refused for its rate."""
    RATE_LIMITED.labels(tenant_labels.label(tenant)).inc()
