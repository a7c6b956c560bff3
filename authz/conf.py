"""The platform's own settings, read from ``settings.AUTHZ`` at access time with defaults."""

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    # http and loopback/private issuers: for development and tests only.
    "ALLOW_INSECURE_ISSUERS": False,
    "INSECURE_ISSUERS_ACKNOWLEDGED": False,
    # Slug of the tenant serving requests that match no host and no /t/<slug>/ prefix.
    "DEFAULT_TENANT": None,
    # Seconds between on-demand key set fetches of one JWKS URL (unknown kid, missing keys).
    "UNKNOWN_KID_COOLDOWN": 30.0,
    # Seconds a key set may be served after its last successful fetch.
    "KEYSET_MAX_STALE": 24 * 3600.0,
    # Seconds between a process's checks of the change feed and the shared key set stamp.
    "CONFIG_RECHECK_INTERVAL": 2.0,
    # Seconds between refreshes of each key set in use (beat, or the web processes' refresher).
    "JWKS_REFRESH_INTERVAL": 300.0,
    # Total seconds for one fetch (connect, TLS, redirects, body): on the request path ...
    "JWKS_FETCH_DEADLINE": 5.0,
    # ... and off it (Celery worker, background refresher).
    "JWKS_BACKGROUND_FETCH_DEADLINE": 15.0,
    "JWKS_MAX_BYTES": 256 * 1024,
    "JWKS_MAX_KEYS": 32,
    # Each web process applies changes and refreshes key sets in a background thread.
    "BACKGROUND_SYNC": True,
    # Tenants held in memory per process (least recently used go first; a miss costs one query).
    "DIRECTORY_SIZE": 20000,
    # Seconds between two "Check issuer" runs of one tenant.
    "CHECK_ISSUER_COOLDOWN": 10.0,
    "MAX_TOKEN_BYTES": 8 * 1024,
    # DPoP proofs: accepted up to this many seconds after their iat, and this many before it
    # (client clocks run fast); their jti is remembered for the sum of the two.
    "DPOP_PROOF_MAX_AGE": 60.0,
    "DPOP_PROOF_MAX_FUTURE": 5.0,
    "DPOP_MAX_PROOF_BYTES": 8 * 1024,
    # Seconds each DPoP nonce is issued for; it is still accepted for one more such period.
    "DPOP_NONCE_PERIOD": 300.0,
    # Verified tokens remembered per process, so a repeated token skips RSA: at most this many,
    # and at most this many bytes (an entry costs its payload's length and about 400 bytes).
    "VERIFIED_TOKEN_CACHE_SIZE": 4096,
    "VERIFIED_TOKEN_CACHE_BYTES": 8 * 1024 * 1024,
    # Refused tokens remembered per process, for failures that last (authz/token_cache.py).
    "REFUSED_TOKEN_CACHE_SIZE": 4096,
    "REFUSED_TOKEN_CACHE_BYTES": 2 * 1024 * 1024,
    # Tenants and JWKS URLs with their own series in /metrics; the rest share "other".
    "METRICS_TENANT_LABELS": 100,
    "METRICS_KEY_SET_LABELS": 100,
    # Route templates (forward-auth decisions) with their own endpoint label; the rest "other".
    "METRICS_ROUTE_LABELS": 100,
    # Seconds between a process's writes of its tenants' traffic counts (the admin's panel).
    "TRAFFIC_FLUSH_INTERVAL": 10.0,
    # Rates (60/min, 1000/hour, 20/s) for tenants that set none; blank: no limit. The anonymous
    # one counts, per tenant and client address, requests refused before authentication.
    "RATE_LIMIT_PER_SUBJECT": "",
    "RATE_LIMIT_PER_TENANT": "",
    "RATE_LIMIT_ANONYMOUS_PER_ADDRESS": "",
    # IPv6 clients are counted by the network of this many leading bits (IPv4 per address).
    "RATE_LIMIT_IPV6_PREFIX": 64,
}


class AuthzSettings:
    """Attribute access to ``settings.AUTHZ`` with defaults, following ``override_settings``.

    A value is kept as an instance attribute once read (the request path reads several per
    request) and dropped when Django announces that AUTHZ changed.
    """

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown AUTHZ setting: {name}")
        value = getattr(settings, "AUTHZ", {}).get(name, DEFAULTS[name])
        setattr(self, name, value)
        return value

    def reload(self) -> None:
        """Forget the values read so far."""
        self.__dict__.clear()


authz_settings = AuthzSettings()


@receiver(setting_changed)
def _reload_authz_settings(setting: str, **kwargs: Any) -> None:
    if setting == "AUTHZ":
        authz_settings.reload()
