"""The verified-token cache: repeated tokens skip verification, but never past what is safe."""

import time

import pytest

from authz import authentication
from authz.policy import IssuerPolicy, shared_policy
from authz.tasks import refresh_key_set
from authz.token_cache import verified_tokens
from tenants.config_io import import_tenants
from tenants.directory import directory
from tests.fixtures import bearer, jwks_url_of

PRIVATE = "/t/acme/api/private"


@pytest.fixture
def verifications(monkeypatch):
    """Count full verifications (the real function still runs)."""
    calls = []
    real = authentication.verify_token

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(authentication, "verify_token", counting)
    return calls


def test_a_repeated_token_is_verified_once(client, acme, acme_tokens, verifications):
    token = acme_tokens.token()

    statuses = [client.get(PRIVATE, **bearer(token)).status_code for _ in range(5)]

    assert statuses == [200] * 5
    assert verifications == [token]


def test_a_cached_token_is_refused_once_it_expires(client, make_tenant, tokens):
    make_tenant("acme", leeway=0)
    expires_at = int(time.time()) + 2
    token = tokens("acme").token(exp=expires_at)
    assert client.get(PRIVATE, **bearer(token)).status_code == 200

    time.sleep(expires_at + 0.1 - time.time())
    response = client.get(PRIVATE, **bearer(token))

    assert (response.status_code, response.json()["code"]) == (401, "token_expired")


def test_a_cached_token_is_refused_once_its_key_leaves_the_set(
    client, acme, acme_tokens, issuer, settings
):
    settings.AUTHZ = {**settings.AUTHZ, "CONFIG_RECHECK_INTERVAL": 0}
    token = acme_tokens.token()
    assert client.get(PRIVATE, **bearer(token)).status_code == 200

    issuer.store.rotate("acme")
    issuer.store.rotate("acme")
    refresh_key_set.delay(jwks_url_of("acme"))
    response = client.get(PRIVATE, **bearer(token))

    assert (response.status_code, response.json()["code"]) == (401, "unknown_key")


def test_a_cached_token_is_refused_once_the_tenant_drops_its_audience(client, acme, acme_tokens):
    token = acme_tokens.token()
    assert client.get(PRIVATE, **bearer(token)).status_code == 200

    import_tenants(
        {
            "tenants": [
                {
                    "slug": "acme",
                    "name": "Acme",
                    "issuer": acme_tokens.issuer,
                    "audiences": ["https://other.acme.test"],
                }
            ]
        }
    )
    response = client.get(PRIVATE, **bearer(token))

    assert (response.status_code, response.json()["code"]) == (401, "invalid_audience")


def test_a_token_cached_for_one_tenant_is_verified_afresh_for_another(client, make_tenant, tokens):
    make_tenant("acme")
    make_tenant("beta", issuer_name="acme")
    token = tokens("acme").token()
    assert client.get(PRIVATE, **bearer(token)).status_code == 200

    response = client.get("/t/beta/api/private", **bearer(token))

    assert (response.status_code, response.json()["code"]) == (401, "invalid_audience")


def test_the_cache_is_bounded(client, acme, acme_tokens, settings):
    settings.AUTHZ = {**settings.AUTHZ, "VERIFIED_TOKEN_CACHE_SIZE": 3}

    for index in range(5):
        client.get(PRIVATE, **bearer(acme_tokens.token(sub=f"user-{index}")))

    assert len(verified_tokens._entries) == 3


def test_an_entry_counts_only_under_the_very_policy_it_was_verified_against(
    client, acme, acme_tokens
):
    token = acme_tokens.token()
    assert client.get(PRIVATE, **bearer(token)).status_code == 200
    policy = directory.by_slug("acme").policy

    assert shared_policy(*policy.identity()) is policy  # identical values, one shared object
    assert verified_tokens.get(token, policy) is not None
    assert verified_tokens.get(token, IssuerPolicy(*policy.identity())) is None
