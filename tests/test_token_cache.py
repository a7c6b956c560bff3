"""The verified-token cache: repeated tokens skip verification, but never past what is safe."""

import time

import pytest

from authz import authentication
from authz.policy import IssuerPolicy, TrustedIssuers, shared_issuers, shared_policy
from authz.tasks import refresh_key_set
from authz.token_cache import (
    ENTRY_OVERHEAD,
    KEPT_CONTAINERS,
    KEPT_PAYLOAD_CHARS,
    refused_tokens,
    verified_tokens,
)
from tenants.config_io import import_tenants
from tenants.directory import directory
from tests.fixtures import bearer, jwks_url_of

PRIVATE = "/t/acme/api/private"


@pytest.fixture
def verifications(monkeypatch):
    """Count full verifications, each of which reads the token first (the real one runs)."""
    calls = []
    real = authentication.read_token

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(authentication, "read_token", counting)
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


def test_an_entry_counts_only_under_the_very_issuers_it_was_verified_under(
    client, acme, acme_tokens
):
    token = acme_tokens.token()
    assert client.get(PRIVATE, **bearer(token)).status_code == 200
    trust = directory.by_slug("acme").issuers
    policy = trust.primary
    copy = IssuerPolicy(**policy.values())

    assert shared_policy(**policy.values()) is policy  # identical values, one shared object
    assert shared_issuers((policy,)) is trust
    assert verified_tokens.get(token, trust) is not None
    assert verified_tokens.get(token, TrustedIssuers((copy,), {copy.issuer: copy})) is None


def test_the_cache_is_bounded_in_bytes_for_payloads_that_parse_into_many_objects(
    client, acme, acme_tokens, settings
):
    settings.AUTHZ = {**settings.AUTHZ, "VERIFIED_TOKEN_CACHE_BYTES": 64 * 1024}
    hostile = {"x": [[] for _ in range(1900)]}  # about 6 KiB of JSON, 1,900 objects parsed

    for index in range(40):
        token = acme_tokens.token(sub=f"user-{index}", **hostile)
        assert client.get(PRIVATE, **bearer(token)).status_code == 200

    entries, size = verified_tokens.held()
    assert size <= 64 * 1024
    assert 0 < entries < 40
    # What is held is text, not the parsed payload: the bound is the memory.
    largest = max(verified_tokens._entries.values(), key=lambda entry: entry.size)
    assert isinstance(largest.payload_segment, str) and largest.size < 10 * 1024


def test_a_hit_rebuilds_the_verified_claims(client, acme, acme_tokens):
    token = acme_tokens.token(scope="read:messages", org_id="org_1", nested={"a": [1, 2]})
    assert client.get(PRIVATE, **bearer(token)).status_code == 200
    claims = verified_tokens.get(token, directory.by_slug("acme").issuers)

    assert claims.scopes == {"read:messages"} and claims.subject == "auth0|user-1"
    assert claims.payload["nested"] == {"a": [1, 2]} and claims.payload["org_id"] == "org_1"


def test_a_small_flat_payload_keeps_its_claims_from_its_first_hit_charged_at_their_size(
    client, acme, acme_tokens
):
    token = acme_tokens.token(scope="read:messages", org_id="org_1", roles=["a", "b"])
    assert client.get(PRIVATE, **bearer(token)).status_code == 200
    (entry,) = verified_tokens._entries.values()
    assert entry.claims is None and verified_tokens.held()[1] == entry.size  # seen once: text

    assert client.get(PRIVATE, **bearer(token)).status_code == 200
    trust = directory.by_slug("acme").issuers
    assert verified_tokens.get(token, trust) is verified_tokens.get(token, trust) is entry.claims
    assert verified_tokens.held()[1] == entry.size
    assert entry.claims.scopes == {"read:messages"}
    assert entry.size > 2 * (ENTRY_OVERHEAD + len(entry.payload_segment))  # the objects count


@pytest.mark.parametrize(
    "claims",
    [
        {"nested": {"a": [1, 2]}},  # a container in a container
        {f"list{index}": [] for index in range(KEPT_CONTAINERS + 1)},  # too many containers
        {"padding": "x" * KEPT_PAYLOAD_CHARS},  # too long
    ],
)
def test_other_payloads_keep_only_their_text(client, acme, acme_tokens, claims):
    token = acme_tokens.token(**claims)
    for _ in range(2):  # verified, then a hit
        assert client.get(PRIVATE, **bearer(token)).status_code == 200
    (entry,) = verified_tokens._entries.values()

    assert entry.claims is None
    assert entry.size == ENTRY_OVERHEAD + len(entry.payload_segment)
    rebuilt = verified_tokens.get(token, directory.by_slug("acme").issuers)
    assert rebuilt.subject == "auth0|user-1" and dict(rebuilt.payload).items() >= claims.items()


def test_one_tenant_flooding_new_tokens_never_evicts_another_tenants_entries(
    client, make_tenant, tokens, settings
):
    settings.AUTHZ = {**settings.AUTHZ, "VERIFIED_TOKEN_CACHE_SIZE": 20}
    make_tenant("acme")
    make_tenant("beta")
    quiet = [tokens("beta").token(sub=f"beta-{index}") for index in range(5)]
    for token in quiet:
        assert client.get("/t/beta/api/private", **bearer(token)).status_code == 200

    for index in range(200):
        flood = tokens("acme").token(sub=f"acme-{index}")
        assert client.get(PRIVATE, **bearer(flood)).status_code == 200

    beta = directory.by_slug("beta").issuers
    assert all(verified_tokens.get(token, beta) is not None for token in quiet)
    assert verified_tokens.held()[0] == 20


def test_a_tenant_under_its_fair_share_makes_room_from_the_least_recent_of_others(
    client, make_tenant, tokens, settings
):
    settings.AUTHZ = {**settings.AUTHZ, "VERIFIED_TOKEN_CACHE_SIZE": 10}
    make_tenant("acme")
    make_tenant("beta")
    for index in range(10):
        client.get(PRIVATE, **bearer(tokens("acme").token(sub=f"acme-{index}")))

    for index in range(5):
        client.get("/t/beta/api/private", **bearer(tokens("beta").token(sub=f"beta-{index}")))

    held = sorted(len(group.digests) for group in verified_tokens._groups.values())
    assert held == [5, 5]


def bad_signature(factory) -> str:
    """A token naming the issuer's current key, its signature damaged."""
    return factory.token()[:-8] + "A" * 8


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"exp": 1}, "token_expired"),
        ({"aud": "https://other.test"}, "invalid_audience"),
        ({"iss": "https://other.test/"}, "invalid_issuer"),
        ({"sub": None}, "invalid_claims"),
    ],
)
def test_a_repeated_lasting_refusal_is_answered_without_verifying_again(
    client, acme, acme_tokens, verifications, overrides, code
):
    token = acme_tokens.token(**overrides)

    answers = [client.get(PRIVATE, **bearer(token)) for _ in range(3)]

    assert [(a.status_code, a.json()["code"]) for a in answers] == [(401, code)] * 3
    assert answers[0].json() == answers[2].json()
    assert answers[0]["WWW-Authenticate"] == answers[2]["WWW-Authenticate"]
    assert verifications == [token]


def test_a_repeated_bad_signature_is_checked_once_while_its_key_is_held(
    client, acme, acme_tokens, verifications
):
    token = bad_signature(acme_tokens)

    codes = [client.get(PRIVATE, **bearer(token)).json()["code"] for _ in range(3)]

    assert codes == ["invalid_signature"] * 3
    assert verifications == [token]


def test_a_bad_signature_is_checked_again_once_its_key_leaves_the_set(
    client, acme, acme_tokens, issuer, settings, verifications
):
    settings.AUTHZ = {**settings.AUTHZ, "CONFIG_RECHECK_INTERVAL": 0}
    token = bad_signature(acme_tokens)
    assert client.get(PRIVATE, **bearer(token)).json()["code"] == "invalid_signature"

    issuer.store.rotate("acme")
    issuer.store.rotate("acme")
    refresh_key_set.delay(jwks_url_of("acme"))
    response = client.get(PRIVATE, **bearer(token))

    assert response.json()["code"] == "unknown_key"
    assert verifications == [token, token]


def test_a_token_not_valid_yet_is_never_remembered_as_refused(client, make_tenant, tokens):
    make_tenant("acme", leeway=0)
    token = tokens("acme").token(nbf=int(time.time()) + 2)
    assert client.get(PRIVATE, **bearer(token)).json()["code"] == "token_not_yet_valid"

    time.sleep(2.1)

    assert client.get(PRIVATE, **bearer(token)).status_code == 200


def test_an_unknown_key_is_never_remembered_as_refused(client, acme, acme_tokens, issuer):
    future_kid = issuer.store.rotate("acme")  # published, but not yet fetched here
    token = acme_tokens.token(headers={"kid": future_kid})
    issuer.store.rotate("acme")
    issuer.store.rotate("acme")  # gone again
    key_set = jwks_url_of("acme")
    refresh_key_set.delay(key_set)
    assert client.get(PRIVATE, **bearer(token)).json()["code"] == "unknown_key"

    assert verified_tokens.held()[0] == 0
    assert refused_tokens.held()[0] == 0


def test_a_refusal_under_one_policy_is_not_served_under_another(client, make_tenant, tokens):
    make_tenant("acme")
    make_tenant("beta", issuer_name="acme", audiences=["https://api.acme.test"], leeway=600)
    token = tokens("acme").token(exp=int(time.time()) - 120)  # expired for acme's 60 s leeway
    assert client.get(PRIVATE, **bearer(token)).json()["code"] == "token_expired"

    assert client.get("/t/beta/api/private", **bearer(token)).status_code == 200


def test_the_refused_cache_is_bounded(client, acme, acme_tokens, settings):
    settings.AUTHZ = {**settings.AUTHZ, "REFUSED_TOKEN_CACHE_SIZE": 3}

    for index in range(6):
        client.get(PRIVATE, **bearer(acme_tokens.token(sub=f"user-{index}", exp=1)))

    assert refused_tokens.held()[0] == 3
