"""DPoP (RFC 9449): bound tokens with proofs, every way a proof or a scheme can be wrong."""

import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from django.core.cache import caches

from authz.dpop import current_nonce, normalized_url
from authz.jose import access_token_hash, thumbprint
from devissuer import dpop
from tests.fixtures import bearer

PRIVATE = "/t/acme/api/private"
URL = f"http://testserver{PRIVATE}"


@pytest.fixture
def key() -> Any:
    """The client's DPoP key."""
    return dpop.new_key()


@pytest.fixture
def bound(acme_tokens, key) -> str:
    """An access token bound to ``key``."""
    return acme_tokens.token(cnf={"jkt": dpop.key_thumbprint(key)})


def call(client, token: str, proof: str | None, path: str = PRIVATE, **extra: Any) -> Any:
    """GET with ``Authorization: DPoP`` and, when given, one DPoP header."""
    headers = {"HTTP_AUTHORIZATION": f"DPoP {token}", **extra}
    if proof is not None:
        headers["HTTP_DPOP"] = proof
    return client.get(path, **headers)


def refused(response: Any, code: str, error: str = "invalid_dpop_proof") -> str:
    """Assert a 401 with our body and a DPoP challenge carrying ``error``; the message."""
    body = response.json()
    assert (response.status_code, body["code"]) == (401, code), body
    assert f'DPoP error="{error}"' in response["WWW-Authenticate"]
    return body["message"]


def test_a_bound_token_with_a_fresh_proof_is_served(client, acme, bound, key):
    response = call(client, bound, dpop.make_proof(key, "GET", URL, access_token=bound))

    assert response.status_code == 200, response.content
    assert "DPoP-Nonce" not in response


def test_the_same_proof_twice_is_a_replay(client, acme, bound, key):
    proof = dpop.make_proof(key, "GET", URL, access_token=bound)
    assert call(client, bound, proof).status_code == 200

    message = refused(call(client, bound, proof), "invalid_dpop_proof")

    assert "already used" in message


def test_each_request_with_its_own_proof_is_served_and_the_token_is_verified_once(
    client, acme, bound, key, monkeypatch
):
    from authz import authentication

    verified = []
    real = authentication.read_token  # once per full verification
    monkeypatch.setattr(
        authentication, "read_token", lambda *a, **k: verified.append(1) or real(*a, **k)
    )

    statuses = [
        call(client, bound, dpop.make_proof(key, "GET", URL, access_token=bound)).status_code
        for _ in range(3)
    ]

    assert statuses == [200, 200, 200] and verified == [1]


def test_a_remembered_token_never_skips_the_proof(client, acme, bound, key):
    assert (
        call(client, bound, dpop.make_proof(key, "GET", URL, access_token=bound)).status_code == 200
    )

    other_key = dpop.new_key()
    refused(
        call(client, bound, dpop.make_proof(other_key, "GET", URL, access_token=bound)),
        "invalid_dpop_proof",
    )
    refused(call(client, bound, None), "invalid_dpop_proof")


PROOF_DEFECTS = {
    "other-method": ({"htm": "POST"}, "another method"),
    "other-url": ({"htu": "http://testserver/t/acme/api/public"}, "another URL"),
    "other-host": ({"htu": "http://evil.test/t/acme/api/private"}, "another URL"),
    "https-for-http": ({"htu": "https://testserver/t/acme/api/private"}, "another URL"),
    # Times are taken when the test runs (a callable), not when the module is collected.
    "old": ({"iat": lambda: int(time.time()) - 120}, "too old"),
    "future": ({"iat": lambda: int(time.time()) + 60}, "in the future"),
    "iat-string": ({"iat": "now"}, "iat must be a number"),
    "iat-400-digits": ({"iat": 10**400}, "iat must be a number"),
    "iat-bool": ({"iat": True}, "iat must be a number"),
    "iat-huge-float": ({"iat": 1e308}, "iat must be a number"),
    "iat-infinity": ({"iat": float("inf")}, "iat must be a number"),
    "iat-nan": ({"iat": float("nan")}, "iat must be a number"),
    "exp-past": ({"exp": lambda: int(time.time()) - 30}, "expired"),
    "nbf-future": ({"nbf": lambda: int(time.time()) + 60}, "not valid yet"),
    "exp-400-digits": ({"exp": 10**400}, "exp must be a number"),
    "exp-string": ({"exp": "later"}, "exp must be a number"),
    "nbf-400-digits": ({"nbf": -(10**400)}, "nbf must be a number"),
    "nbf-bool": ({"nbf": False}, "nbf must be a number"),
    "other-token": ({"ath": access_token_hash("another.token.value")}, "another access token"),
    "no-jti": ({"jti": None}, 'no "jti"'),
    "no-htm": ({"htm": None}, 'no "htm"'),
    "no-htu": ({"htu": None}, 'no "htu"'),
    "no-iat": ({"iat": None}, 'no "iat"'),
    "no-ath": ({"ath": None}, 'no "ath"'),
    "ath-surrogate": ({"ath": "\ud800"}, "another access token"),  # JSON can spell these
    "htu-surrogate": ({"htu": "http://testserver/t/\ud800"}, "another URL"),
    "jti-number": ({"jti": 7}, "jti must be a string"),
    "jti-huge": ({"jti": "j" * 300}, "jti must be a string"),
    "typ-jwt": ({"headers": {"typ": "JWT"}}, 'typed "dpop+jwt"'),
    "typ-absent": ({"headers": {"typ": None}}, 'typed "dpop+jwt"'),
    "typ-at-jwt": ({"headers": {"typ": "at+jwt"}}, 'typed "dpop+jwt"'),
    "no-jwk": ({"headers": {"jwk": None}}, "public key (jwk)"),
    "crit": ({"headers": {"crit": ["exp"]}}, "header extensions"),
}


@pytest.mark.parametrize("defect", PROOF_DEFECTS, ids=list(PROOF_DEFECTS))
def test_a_proof_that_does_not_describe_the_request_is_refused(client, acme, bound, key, defect):
    overrides, says = PROOF_DEFECTS[defect]
    overrides = {name: value() if callable(value) else value for name, value in overrides.items()}

    message = refused(
        call(client, bound, dpop.make_proof(key, "GET", URL, access_token=bound, **overrides)),
        "invalid_dpop_proof",
    )

    assert says in message


def test_a_forged_proof_is_refused_and_leaves_the_victims_proof_id_unused(
    client, either_store, acme, bound, key
):
    attacker = dpop.new_key()
    forged = dpop.make_proof(
        attacker,
        "GET",
        URL,
        access_token=bound,
        jti="chosen",
        headers={"jwk": dpop.public_jwk(key)},
    )
    genuine = dpop.make_proof(key, "GET", URL, access_token=bound, jti="chosen")

    assert "signature" in refused(call(client, bound, forged), "invalid_dpop_proof")
    assert call(client, bound, genuine).status_code == 200  # its first use: not a replay
    assert "already used" in refused(call(client, bound, genuine), "invalid_dpop_proof")


@pytest.mark.parametrize(
    "defect",
    [
        {"htu": "http://testserver/elsewhere"},
        {"htm": "POST"},
        {"iat": 10**400},
        {"ath": access_token_hash("another.token.value")},
    ],
    ids=["htu", "htm", "iat", "ath"],
)
def test_a_refused_proof_leaves_its_proof_id_unused(client, either_store, acme, bound, key, defect):
    wrong = dpop.make_proof(key, "GET", URL, access_token=bound, jti="once", **defect)
    right = dpop.make_proof(key, "GET", URL, access_token=bound, jti="once")

    refused(call(client, bound, wrong), "invalid_dpop_proof")
    assert call(client, bound, right).status_code == 200


def test_a_proof_of_another_key_than_the_tokens_is_refused(client, acme, bound):
    thief = dpop.new_key()

    message = refused(
        call(client, bound, dpop.make_proof(thief, "GET", URL, access_token=bound)),
        "invalid_dpop_proof",
    )

    assert "not the key the token is bound to" in message


def test_a_proof_carrying_a_private_key_is_refused(client, acme, bound, key):
    private = {**dpop.public_jwk(key), "d": "c2VjcmV0"}

    message = refused(
        call(
            client,
            bound,
            dpop.make_proof(key, "GET", URL, access_token=bound, headers={"jwk": private}),
        ),
        "invalid_dpop_proof",
    )

    assert "not a private one" in message


@pytest.mark.parametrize("algorithm", ["HS256", "none"])
def test_symmetric_and_unsigned_proofs_are_refused(client, acme, bound, key, algorithm):
    import jwt

    claims = {
        "jti": "x",
        "htm": "GET",
        "htu": URL,
        "iat": int(time.time()),
        "ath": access_token_hash(bound),
    }
    headers = {"typ": "dpop+jwt", "jwk": dpop.public_jwk(key)}
    secret = None if algorithm == "none" else "k" * 32
    proof = jwt.encode(claims, secret, algorithm=algorithm, headers=headers)

    assert "signed with one of: ES256" in refused(call(client, bound, proof), "invalid_dpop_proof")


def test_an_algorithm_the_tenant_does_not_list_is_refused(client, acme, acme_tokens):
    rsa_key = rsa.generate_private_key(65537, 2048)
    token = acme_tokens.token(cnf={"jkt": dpop.key_thumbprint(rsa_key)})

    message = refused(
        call(client, token, dpop.make_proof(rsa_key, "GET", URL, access_token=token)),
        "invalid_dpop_proof",
    )

    assert "ES256" in message


@pytest.mark.parametrize(
    ("algorithm", "make_key"),
    [
        ("ES384", lambda: ec.generate_private_key(ec.SECP384R1())),
        ("PS256", lambda: rsa.generate_private_key(65537, 2048)),
        ("RS256", lambda: rsa.generate_private_key(65537, 2048)),
        ("EdDSA", ed25519.Ed25519PrivateKey.generate),
    ],
)
def test_every_asymmetric_algorithm_a_tenant_lists_is_taken(
    client, make_tenant, tokens, algorithm, make_key
):
    make_tenant("acme", dpop_algorithms=[algorithm])
    proof_key = make_key()
    token = tokens("acme").token(cnf={"jkt": dpop.key_thumbprint(proof_key)})

    proof = dpop.make_proof(proof_key, "GET", URL, access_token=token, alg=algorithm)

    assert call(client, token, proof).status_code == 200


def test_a_weak_rsa_proof_key_is_refused(client, make_tenant, tokens):
    make_tenant("acme", dpop_algorithms=["RS256"])
    weak = rsa.generate_private_key(65537, 1024)  # noqa: S505 - the weak key under test
    token = tokens("acme").token(cnf={"jkt": dpop.key_thumbprint(weak)})

    message = refused(
        call(client, token, dpop.make_proof(weak, "GET", URL, access_token=token)),
        "invalid_dpop_proof",
    )

    assert "too weak" in message


def test_two_proofs_are_refused(client, acme, bound, key):
    first = dpop.make_proof(key, "GET", URL, access_token=bound)
    second = dpop.make_proof(key, "GET", URL, access_token=bound)

    message = refused(call(client, bound, f"{first}, {second}"), "invalid_dpop_proof")

    assert "exactly one DPoP proof" in message


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "e30.e30.", "x" * 9000])
def test_garbage_proofs_are_refused_cleanly(client, acme, bound, garbage):
    response = call(client, bound, garbage)

    assert (response.status_code, response.json()["code"]) == (401, "invalid_dpop_proof")


def test_a_bound_token_sent_as_bearer_is_refused_with_both_challenges(client, acme, bound):
    response = client.get(PRIVATE, **bearer(bound))

    body = response.json()
    assert (response.status_code, body["code"]) == (401, "dpop_bound_token")
    challenge = response["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="acme", error="invalid_token"')
    assert challenge.endswith('DPoP algs="ES256"')


def test_an_unbound_token_sent_as_dpop_is_refused(client, acme, acme_tokens, key):
    token = acme_tokens.token()

    response = call(client, token, dpop.make_proof(key, "GET", URL, access_token=token))

    assert refused(response, "token_not_bound", error="invalid_token")


@pytest.mark.parametrize("cnf", [{"jkt": ""}, {"jkt": 7}, {"x5t#S256": "abc"}, "jkt", []])
def test_a_malformed_confirmation_is_refused(client, acme, acme_tokens, cnf):
    response = client.get(PRIVATE, **bearer(acme_tokens.token(cnf=cnf)))

    assert (response.status_code, response.json()["code"]) == (401, "invalid_claims")


def test_a_required_tenant_refuses_bearer_before_any_token_work(client, make_tenant, acme_tokens):
    make_tenant("acme", dpop="required")

    response = client.get(PRIVATE, **bearer("not-even-a-token"))

    body = response.json()
    assert (response.status_code, body["code"]) == (401, "dpop_required")
    assert response["WWW-Authenticate"].startswith('DPoP error="invalid_token"')
    assert "Bearer" not in response["WWW-Authenticate"]


def test_a_required_tenant_serves_dpop(client, make_tenant, acme_tokens, key):
    make_tenant("acme", dpop="required")
    token = acme_tokens.token(cnf={"jkt": dpop.key_thumbprint(key)})

    assert (
        call(client, token, dpop.make_proof(key, "GET", URL, access_token=token)).status_code == 200
    )


def test_a_required_tenant_challenges_a_tokenless_request_with_dpop_only(client, make_tenant):
    make_tenant("acme", dpop="required")

    response = client.get(PRIVATE)

    assert (response.status_code, response["WWW-Authenticate"]) == (401, 'DPoP algs="ES256"')


def test_a_disabled_tenant_refuses_the_dpop_scheme(client, make_tenant, acme_tokens, key):
    make_tenant("acme", dpop="disabled")
    token = acme_tokens.token(cnf={"jkt": dpop.key_thumbprint(key)})

    response = call(client, token, dpop.make_proof(key, "GET", URL, access_token=token))

    body = response.json()
    assert (response.status_code, body["code"]) == (401, "dpop_not_accepted")
    assert response["WWW-Authenticate"].startswith('Bearer realm="acme", error="invalid_token"')
    assert "DPoP" not in response["WWW-Authenticate"].split(",")[0]


def test_a_disabled_tenant_still_refuses_a_bound_token_as_bearer(
    client, make_tenant, acme_tokens, key
):
    make_tenant("acme", dpop="disabled")
    token = acme_tokens.token(cnf={"jkt": dpop.key_thumbprint(key)})

    response = client.get(PRIVATE, **bearer(token))

    assert (response.status_code, response.json()["code"]) == (401, "dpop_bound_token")


def test_a_tokenless_request_is_challenged_with_both_schemes(client, acme):
    response = client.get(PRIVATE)

    assert response["WWW-Authenticate"] == 'Bearer realm="acme", DPoP algs="ES256"'


def test_an_expired_bound_token_is_refused_on_the_dpop_challenge(client, acme, acme_tokens, key):
    token = acme_tokens.token(cnf={"jkt": dpop.key_thumbprint(key)}, exp=1)

    response = call(client, token, dpop.make_proof(key, "GET", URL, access_token=token))

    assert refused(response, "token_expired", error="invalid_token")
    assert response["WWW-Authenticate"].startswith(
        'Bearer realm="acme", DPoP error="invalid_token"'
    )


def test_insufficient_scope_is_answered_on_the_dpop_challenge(client, acme, acme_tokens, key):
    token = acme_tokens.token(cnf={"jkt": dpop.key_thumbprint(key)})
    url = "http://testserver/t/acme/api/private-scoped"

    response = call(
        client,
        token,
        dpop.make_proof(key, "GET", url, access_token=token),
        path="/t/acme/api/private-scoped",
    )

    assert response.status_code == 403
    assert (
        'DPoP error="insufficient_scope", scope="read:messages", algs="ES256"'
        in response["WWW-Authenticate"]
    )


# Nonces


@pytest.fixture
def nonce_tenant(make_tenant):
    """Acme issuing DPoP nonces."""
    return make_tenant("acme", dpop_nonce=True)


def test_a_proof_without_the_nonce_gets_use_dpop_nonce_and_a_fresh_one(
    client, nonce_tenant, bound, key
):
    response = call(client, bound, dpop.make_proof(key, "GET", URL, access_token=bound))

    refused(response, "use_dpop_nonce", error="use_dpop_nonce")
    assert response["DPoP-Nonce"] == current_nonce("acme")


def test_a_proof_with_the_issued_nonce_is_served_and_told_the_current_nonce(
    client, nonce_tenant, bound, key
):
    nonce = call(client, bound, dpop.make_proof(key, "GET", URL, access_token=bound))["DPoP-Nonce"]

    response = call(
        client, bound, dpop.make_proof(key, "GET", URL, access_token=bound, nonce=nonce)
    )

    assert response.status_code == 200
    assert response["DPoP-Nonce"] == nonce


def test_the_previous_nonce_is_accepted_and_an_older_one_is_not(
    client, nonce_tenant, bound, key, settings
):
    period = settings.AUTHZ.get("DPOP_NONCE_PERIOD", 300.0)
    previous = current_nonce("acme", time.time() - period)
    older = current_nonce("acme", time.time() - 2 * period)

    fresh = call(
        client, bound, dpop.make_proof(key, "GET", URL, access_token=bound, nonce=previous)
    )
    stale = call(client, bound, dpop.make_proof(key, "GET", URL, access_token=bound, nonce=older))

    assert fresh.status_code == 200
    refused(stale, "use_dpop_nonce", error="use_dpop_nonce")


@pytest.mark.parametrize("nonce", ["\ud800", 7, ["x"], ""])
def test_a_nonce_that_is_not_one_we_issued_is_answered_with_ours(
    client, nonce_tenant, bound, key, nonce
):
    proof = dpop.make_proof(key, "GET", URL, access_token=bound, nonce=nonce)

    response = call(client, bound, proof)

    refused(response, "use_dpop_nonce", error="use_dpop_nonce")
    assert response["DPoP-Nonce"] == current_nonce("acme")


def test_nonces_are_per_tenant(client, nonce_tenant, bound, key):
    response = call(
        client,
        bound,
        dpop.make_proof(key, "GET", URL, access_token=bound, nonce=current_nonce("beta")),
    )

    refused(response, "use_dpop_nonce", error="use_dpop_nonce")


# The URL as the client addressed it


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("HTTP://TestServer/t/acme/api/private", "http://testserver/t/acme/api/private"),
        ("http://testserver:80/t/acme/api/private", "http://testserver/t/acme/api/private"),
        ("https://testserver:443/a", "https://testserver/a"),
        ("https://testserver:8443/a", "https://testserver:8443/a"),
        ("http://testserver/t/acme/api/%70rivate", "http://testserver/t/acme/api/private"),
        ("http://testserver/a%2fb", "http://testserver/a%2Fb"),
        ("http://testserver/a/./b/../c", "http://testserver/a/c"),
        ("http://testserver/a?x=1#frag", "http://testserver/a"),
        ("http://testserver", "http://testserver/"),
        ("http://[::1]:8000/a", "http://[::1]:8000/a"),
        ("ftp://testserver/a", None),
        ("http://user@testserver/a", None),
        ("http://testserver:99999/a", None),
        ("/t/acme/api/private", None),
    ],
)
def test_urls_are_normalized_as_rfc_3986_says(url, normal):
    assert normalized_url(url) == normal


@pytest.mark.parametrize("htu", ["not a url", "http://acme.localhost:99999/api/private", ""])
def test_an_unparsable_request_url_matches_no_htu(client, acme, bound, key, htu):
    proof = dpop.make_proof(key, "GET", htu, access_token=bound)

    response = call(client, bound, proof, path="/api/private", HTTP_HOST="acme.localhost:99999")

    assert "another URL" in refused(response, "invalid_dpop_proof")


def test_a_proof_with_an_equivalent_url_spelling_is_served(client, acme, bound, key):
    url = "HTTP://TESTSERVER:80/t/acme/api/%70rivate?ignored=1"

    assert (
        call(client, bound, dpop.make_proof(key, "GET", url, access_token=bound)).status_code == 200
    )


def test_behind_the_tls_proxy_the_proof_names_the_https_url(client, acme, bound, key, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    https = dpop.make_proof(key, "GET", f"https://testserver{PRIVATE}", access_token=bound)
    http = dpop.make_proof(key, "GET", URL, access_token=bound)

    proxied = {"HTTP_X_FORWARDED_PROTO": "https", "HTTP_HOST": "testserver"}

    assert call(client, bound, https, **proxied).status_code == 200
    refused(call(client, bound, http, **proxied), "invalid_dpop_proof")


def test_a_tenant_host_is_part_of_the_url(client, acme, bound, key):
    url = "http://acme.localhost/api/private"

    response = call(
        client,
        bound,
        dpop.make_proof(key, "GET", url, access_token=bound),
        path="/api/private",
        HTTP_HOST="acme.localhost",
    )

    assert response.status_code == 200


# The replay check lives in the shared store


def test_a_proof_is_remembered_in_the_shared_store(client, acme, bound, key):
    from authz.store import derived_key

    proof = dpop.make_proof(key, "GET", URL, access_token=bound, jti="proof-1")
    assert call(client, bound, proof).status_code == 200

    remembered = derived_key("dpop-jti", f"acme\n{dpop.key_thumbprint(key)}\nproof-1")
    assert caches["default"].get(remembered) is not None


def test_when_the_store_cannot_answer_the_proof_is_refused_not_risked(
    client, acme, bound, key, settings
):
    warm = call(client, bound, dpop.make_proof(key, "GET", URL, access_token=bound))
    assert warm.status_code == 200  # keys and token held in memory: only the store is missing
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",  # the discard port: nothing listens
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }

    response = call(client, bound, dpop.make_proof(key, "GET", URL, access_token=bound))

    body = response.json()
    assert (response.status_code, body["code"]) == (503, "dpop_replay_check_unavailable")
    assert response["Retry-After"] == "5"


def test_a_bad_proof_is_refused_for_itself_even_when_the_store_cannot_answer(
    client, acme, bound, key, settings
):
    warm = call(client, bound, dpop.make_proof(key, "GET", URL, access_token=bound))
    assert warm.status_code == 200
    settings.CACHES = {
        "default": {
            "BACKEND": "authz.store.SharedRedisCache",  # never asked about a refused proof
            "LOCATION": "redis://127.0.0.1:9/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    stranger = dpop.new_key()
    forged = dpop.make_proof(stranger, "GET", URL, access_token=bound)
    header, payload, _ = forged.split(".")
    _, _, signature = dpop.make_proof(key, "GET", URL, access_token=bound).split(".")

    refused = call(client, bound, f"{header}.{payload}.{signature}")
    unanswered = call(client, bound, dpop.make_proof(key, "GET", URL, access_token=bound))

    assert (refused.status_code, refused.json()["code"]) == (401, "invalid_dpop_proof")
    assert "signature" in refused["WWW-Authenticate"]
    assert (unanswered.status_code, unanswered.json()["code"]) == (
        503,
        "dpop_replay_check_unavailable",
    )


def test_the_thumbprint_is_rfc_7638s():
    # RFC 7638 section 3.1's example key and its thumbprint.
    jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1"
            "L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4"
            "QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbO"
            "pbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csF"
            "Cur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }

    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_the_development_issuer_binds_a_token_to_the_proof_key(issuer, key):
    import requests

    url = f"{issuer.url_for('acme')}oauth/token"
    response = requests.post(
        url,
        json={"audience": "https://api.acme.test"},
        headers={"DPoP": dpop.make_proof(key, "POST", url)},
        timeout=5,
    )

    body = response.json()
    assert (response.status_code, body["token_type"]) == (200, "DPoP")
    import jwt

    assert jwt.decode(body["access_token"], options={"verify_signature": False})["cnf"] == {
        "jkt": dpop.key_thumbprint(key)
    }


@pytest.mark.parametrize("proof_for", ["GET", "other-url", "garbage"])
def test_the_development_issuer_refuses_a_bad_token_request_proof(issuer, key, proof_for):
    import requests

    url = f"{issuer.url_for('acme')}oauth/token"
    proof = {
        "GET": dpop.make_proof(key, "GET", url),
        "other-url": dpop.make_proof(key, "POST", "http://elsewhere.test/oauth/token"),
        "garbage": "a.b.c",
    }[proof_for]

    response = requests.post(
        url, json={"audience": "https://api.acme.test"}, headers={"DPoP": proof}, timeout=5
    )

    assert (response.status_code, response.json()["error"]) == (400, "invalid_dpop_proof")


def test_a_clients_proof_key_is_parsed_once_for_all_its_proofs(
    client, acme, bound, key, monkeypatch
):
    from authz import dpop as verifier

    verifier._known_key.cache_clear()
    parsed = []
    real = verifier._prepared
    monkeypatch.setattr(verifier, "_prepared", lambda *a: parsed.append(a[1]) or real(*a))

    for _ in range(3):
        assert (
            call(client, bound, dpop.make_proof(key, "GET", URL, access_token=bound)).status_code
            == 200
        )

    assert parsed == ["ES256"]
