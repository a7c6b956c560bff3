"""Fetching a JSON Web Key Set by its URL and storing it in the shared store, keyed by that URL.

Tenants that share a JWKS URL share one record, one cooldown and one refresh lock. A record holds
the usable public signing keys, a content version, the fetch time and the last error.
"""

import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from authz import fetch
from authz.conf import authz_settings
from authz.jose import public_key_of
from authz.metrics import count_key_set_fetch
from authz.store import claim, derived_key, internal_key, shared_store

logger = logging.getLogger(__name__)

SUPPORTED_KEY_TYPES = ("RSA", "EC", "OKP")
STAMP_KEY = internal_key("jwks-stamp")
NO_USABLE_KEY = "The key set has no usable public signing key with a kid."


class JWKSError(Exception):
    """A key set could not be fetched or used."""


class IssuerUnreachable(JWKSError):
    """The issuer did not answer in time, or failed on its side: worth retrying."""


class InvalidKeySet(JWKSError):
    """The issuer answered with something that is not a usable key set."""


class RefreshInProgress(JWKSError):
    """Another process is refreshing this key set right now."""


@dataclass(frozen=True)
class KeySetRecord:
    """A key set as stored in the shared store, with its provenance and health."""

    keys: tuple[dict[str, Any], ...]
    version: str
    jwks_url: str
    fetched_at: float | None
    last_error: str | None = None
    error_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The cacheable form."""
        return {**self.__dict__, "keys": list(self.keys)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "KeySetRecord":
        """Rebuild from the cached form."""
        return cls(**{**data, "keys": tuple(data["keys"])})

    @property
    def attempted_at(self) -> float:
        """When a fetch was last tried, whatever its outcome."""
        return max(self.fetched_at or 0.0, self.error_at or 0.0)


@dataclass(frozen=True)
class KeySetHealth:
    """How a key set looks to an operator."""

    status: str  # ok, degraded (last fetch failed, keys kept), empty, stale, missing
    record: KeySetRecord | None

    @property
    def label(self) -> str:
        """A word for lists and filters."""
        return HEALTH_LABELS[self.status]


HEALTH_LABELS = {
    "ok": "OK",
    "degraded": "Last fetch failed; keys kept",
    "empty": "Issuer publishes no usable key: every token is refused",
    "stale": "Stale: keys older than the max-stale limit",
    "missing": "No keys",
}


def key_set_health(record: KeySetRecord | None) -> KeySetHealth:
    """Classify a stored record."""
    if record is None or record.fetched_at is None:
        return KeySetHealth("missing", record)
    if time.time() - record.fetched_at > authz_settings.KEYSET_MAX_STALE:
        return KeySetHealth("stale", record)
    if not record.keys:
        return KeySetHealth("empty", record)
    return KeySetHealth("degraded" if record.last_error else "ok", record)


def record_key(jwks_url: str) -> str:
    """Shared-store key of the record of one JWKS URL."""
    return derived_key("jwks-record", jwks_url)


def read_record(jwks_url: str) -> KeySetRecord | None:
    """The stored record of a JWKS URL, if any."""
    data = shared_store().get(record_key(jwks_url))
    return KeySetRecord.from_dict(data) if data else None


def read_records(jwks_urls: list[str]) -> dict[str, KeySetRecord]:
    """The stored records of many URLs in one round trip, by URL."""
    keys = {record_key(url): url for url in jwks_urls}
    found = shared_store().get_many(list(keys))
    return {keys[key]: KeySetRecord.from_dict(data) for key, data in found.items()}


def lock_key(jwks_url: str) -> str:
    """Shared-store key held while one process fetches a JWKS URL."""
    return derived_key("jwks-lock", jwks_url)


def read_fetch_state(jwks_url: str) -> tuple[KeySetRecord | None, bool]:
    """The stored record of a URL and whether a fetch of it is in flight, in one round trip."""
    record, lock = record_key(jwks_url), lock_key(jwks_url)
    found = shared_store().get_many([record, lock])
    data = found.get(record)
    return (KeySetRecord.from_dict(data) if data else None), lock in found


def drop_record(jwks_url: str) -> None:
    """Forget the record of a URL no tenant uses any more."""
    store = shared_store()
    store.delete(record_key(jwks_url))
    store.set(STAMP_KEY, uuid.uuid4().hex, timeout=None)


def read_stamp() -> str | None:
    """The stamp that changes whenever any stored key set changes."""
    return shared_store().get(STAMP_KEY)


@dataclass(frozen=True)
class KeySet:
    """The usable keys of a fetched key set, and one sentence per entry left out."""

    keys: tuple[dict[str, Any], ...]
    skipped: tuple[str, ...] = ()


class UnusableKey(ValueError):
    """A key set entry this platform cannot verify with; its message says why, in a sentence."""


def fetch_document(url: str, deadline: float | None = None) -> bytes:
    """GET an issuer document within one total deadline, from the address that was checked."""
    try:
        return fetch.fetch(
            url,
            deadline_seconds=deadline or authz_settings.JWKS_FETCH_DEADLINE,
            max_bytes=authz_settings.JWKS_MAX_BYTES,
            allow_insecure=authz_settings.ALLOW_INSECURE_ISSUERS,
        )
    except fetch.Unreachable as exc:
        raise IssuerUnreachable(str(exc)) from exc
    except fetch.Refused as exc:
        raise InvalidKeySet(str(exc)) from exc


def fetch_jwks(url: str, deadline: float | None = None) -> KeySet:
    """Fetch and validate a key set: its usable public signing keys (maybe none), and why the
    other entries were skipped."""
    return parse_jwks(fetch_document(url, deadline))


def load_document(body: bytes, what: str = "key set") -> Any:
    """Parse an issuer's JSON in linear time; InvalidKeySet when it is not JSON or too complex."""
    try:
        return fetch.load_json(body, what=what)
    except fetch.TooComplex as exc:
        raise InvalidKeySet(str(exc)) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidKeySet(f"The {what} is not JSON.") from exc


def parse_jwks(body: bytes) -> KeySet:
    """The public signing keys with a kid that PyJWT can load, and why the others were skipped.

    A well-formed set with none is the issuer's own answer: every key is withdrawn. Anything that
    is not a key set is refused, and the last good keys stay.
    """
    document = load_document(body)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise InvalidKeySet('The key set has no "keys" list.')
    entries, limit = document["keys"], authz_settings.JWKS_MAX_KEYS
    keys: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for number, candidate in enumerate(entries[:limit], start=1):
        try:
            public = usable_public_key(candidate, number)
        except UnusableKey as exc:
            skipped.append(str(exc))
            continue
        if public["kid"] in keys:
            skipped.append(f"Key {quoted(public['kid'])} appears twice; the first one is kept.")
        keys.setdefault(public["kid"], public)
    if len(entries) > limit:
        skipped.append(f"{len(entries) - limit} entries after the first {limit} were ignored.")
    return KeySet(tuple(keys.values()), tuple(skipped))


PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k", "oth")


def usable_public_key(candidate: object, number: int) -> dict[str, Any]:
    """The public members of one key set entry; UnusableKey saying why it cannot be used."""
    if not isinstance(candidate, dict):
        raise UnusableKey(f"Entry {number} is not a JSON object.")
    kid = candidate.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UnusableKey(f"Entry {number} has no kid.")
    if candidate.get("kty") not in SUPPORTED_KEY_TYPES:
        kty = quoted(candidate.get("kty"))
        raise UnusableKey(f"Key {quoted(kid)} has key type {kty}, not RSA, EC or OKP.")
    if candidate.get("use", "sig") != "sig":
        raise UnusableKey(f"Key {quoted(kid)} is not for signing.")
    public = {name: value for name, value in candidate.items() if name not in PRIVATE_MEMBERS}
    alg = quoted(public.get("alg"))
    try:
        sound = is_sound_key(public_key_of(public), public)
    except Exception as exc:  # PyJWT raises many types on hostile JWKs (alg none: NotImplemented)
        raise UnusableKey(
            f"Key {quoted(kid)} is not a public key PyJWT loads for alg {alg}."
        ) from exc
    if not sound:
        raise UnusableKey(f"Key {quoted(kid)} has a size, exponent or curve refused here.")
    return public


def quoted(value: object, limit: int = 40) -> str:
    """A value from the key set, quoted and cut short for a message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}…"


# RSA: 2048 to 8192 bits and a small odd public exponent, or a garbage token naming the key
# costs milliseconds of CPU. EC: the named curves of ES256/384/512. OKP: the signing curves only.
RSA_BITS = (2048, 8192)
RSA_EXPONENTS = (3, 65537)
EC_CURVES = {"P-256": "secp256r1", "P-384": "secp384r1", "P-521": "secp521r1"}
CURVE_OF_ALGORITHM = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
OKP_CURVES = ("Ed25519", "Ed448")


def is_sound_key(key: Any, jwk: dict[str, Any]) -> bool:
    """Whether a parsed public key is one this platform will ever verify with."""
    if isinstance(key, rsa.RSAPublicKey):
        exponent = key.public_numbers().e
        return (
            RSA_BITS[0] <= key.key_size <= RSA_BITS[1]
            and exponent % 2 == 1
            and RSA_EXPONENTS[0] <= exponent <= RSA_EXPONENTS[1]
        )
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = jwk.get("crv")
        declared = CURVE_OF_ALGORITHM.get(jwk.get("alg"), curve)
        return EC_CURVES.get(curve) == key.curve.name and declared == curve
    return jwk.get("crv") in OKP_CURVES and isinstance(
        key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
    )


def _version_of(keys: tuple[dict[str, Any], ...]) -> str:
    """A stable version: unchanged keys keep their version, so processes skip re-parsing."""
    canonical = json.dumps(keys, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _store(record: KeySetRecord, previous: KeySetRecord | None) -> KeySetRecord:
    store = shared_store()
    store.set(record_key(record.jwks_url), record.as_dict(), timeout=None)
    # After the record: a process that sees the new stamp must also read the new record.
    if previous is None or previous.version != record.version or not previous.fetched_at:
        store.set(STAMP_KEY, uuid.uuid4().hex, timeout=None)
    return record


def refresh_key_set(
    jwks_url: str, deadline: float | None = None, trigger: str = "on_demand"
) -> KeySetRecord:
    """Fetch and store one URL's key set; single-flight per URL across all processes.

    ``trigger`` names who asked (scheduled, background, on_demand) in the fetch metrics.
    """
    store = shared_store()
    lock, token = lock_key(jwks_url), uuid.uuid4().hex
    lock_seconds = (deadline or authz_settings.JWKS_FETCH_DEADLINE) + 5
    if not claim(lock, lock_seconds, token):
        count_key_set_fetch(jwks_url, "busy", trigger)
        raise RefreshInProgress(f"The key set at {jwks_url} is being refreshed elsewhere.")
    started = time.monotonic()
    outcome, key_count, error = "error", 0, ""
    try:
        record = _fetch_and_store(jwks_url, deadline)
        outcome, key_count = ("ok" if record.keys else "empty"), len(record.keys)
        return record
    except JWKSError as exc:
        error = f": {exc}"
        raise
    finally:
        if store.get(lock) == token:
            store.delete(lock)
        count_key_set_fetch(jwks_url, outcome, trigger)
        _log_refresh(jwks_url, outcome + error, key_count, time.monotonic() - started)


def _log_refresh(jwks_url: str, outcome: str, key_count: int, seconds: float) -> None:
    """One structured line per refresh; the fields travel in ``extra`` for JSON formatters."""
    fields = {"jwks_url": jwks_url, "outcome": outcome, "keys": key_count}
    fields["duration_ms"] = round(seconds * 1000, 1)
    level = logging.INFO if outcome == "ok" else logging.WARNING
    logger.log(level, "key set refresh %s", fields, extra={"event": "jwks_refresh", **fields})


def _fetch_and_store(jwks_url: str, deadline: float | None) -> KeySetRecord:
    previous = read_record(jwks_url)
    try:
        key_set = fetch_jwks(jwks_url, deadline)
    except JWKSError as exc:
        _store(_failed(previous, jwks_url, str(exc)), previous)
        raise
    keys = key_set.keys
    if key_set.skipped:
        logger.warning("key set %s: %s", jwks_url, " ".join(key_set.skipped))
    error = None if keys else " ".join((NO_USABLE_KEY, *key_set.skipped))
    now = time.time()
    record = KeySetRecord(keys, _version_of(keys), jwks_url, now, error, now if error else None)
    return _store(record, previous)


def _failed(previous: KeySetRecord | None, jwks_url: str, error: str) -> KeySetRecord:
    """Keep the last good keys and note the error beside them."""
    if previous is None:
        return KeySetRecord((), "", jwks_url, None, error, time.time())
    return KeySetRecord(
        previous.keys, previous.version, jwks_url, previous.fetched_at, error, time.time()
    )
