"""Token verification: every claim, header and signature failure, and where scopes come from."""

import base64
import datetime
import hashlib
import hmac
import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from authz.policy import IssuerPolicy
from authz.tokens import (
    DisallowedAlgorithm,
    InvalidAudience,
    InvalidClaims,
    SigningKey,
    TokenError,
    TokenExpired,
    UnknownKey,
    granted_scopes,
    verify_token,
)
from devissuer.issuer import public_jwk
from tenants.directory import directory
from tests.fixtures import bearer

PRIVATE = "/t/acme/api/private"
SCOPED = "/t/acme/api/private-scoped"


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWS uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def compact(header: Any, payload: Any, sign: Any = lambda signing_input: b"") -> str:
    """A compact JWS built by hand, so nothing refuses to make a hostile token."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


def assert_invalid_token(response: Any, code: str) -> None:
    """401, an RFC 6750 invalid_token challenge, and the quickstart body with a stable code."""
    body = response.json()
    assert (response.status_code, body["code"]) == (401, code)
    assert set(body) == {"message", "code"} and body["message"]
    description = re.sub(r'["\\]', "", body["message"])
    assert response["WWW-Authenticate"] == (
        f'Bearer realm="acme", error="invalid_token", error_description="{description}", '
        'DPoP algs="ES256"'
    )


@pytest.fixture(scope="module")
def attacker_key() -> rsa.RSAPrivateKey:
    """An RSA key that no tenant publishes."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def acme_kid(issuer: Any) -> str:
    """The kid acme's issuer signs with now."""
    return issuer.store.current("acme")[0]


# --- claims, through the API -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"iat": -600, "exp": -61}, "token_expired"),
        ({"iat": -900, "exp": -600}, "token_expired"),
        ({"nbf": 300}, "token_not_yet_valid"),
        ({"nbf": 90}, "token_not_yet_valid"),
        ({"iat": 300}, "token_not_yet_valid"),
    ],
)
def test_time_claims_outside_the_leeway_are_refused(client, acme, acme_tokens, overrides, code):
    now = int(time.time())
    token = acme_tokens.token(**{claim: now + delta for claim, delta in overrides.items()})

    assert_invalid_token(client.get(PRIVATE, **bearer(token)), code)


@pytest.mark.parametrize(
    "overrides", [{"iat": -600, "exp": -30}, {"nbf": 30}, {"iat": 30}], ids=["exp", "nbf", "iat"]
)
def test_time_claims_within_the_leeway_pass(client, acme, acme_tokens, overrides):
    now = int(time.time())
    token = acme_tokens.token(**{claim: now + delta for claim, delta in overrides.items()})

    assert client.get(PRIVATE, **bearer(token)).status_code == 200


@pytest.mark.parametrize(
    "issuer_of",
    [
        lambda url: "https://evil.test/",
        lambda url: url.rstrip("/"),
        lambda url: url + "/",
        lambda url: url.upper(),
        lambda url: url.replace("/acme/", "/beta/"),
    ],
    ids=["other", "no-trailing-slash", "double-slash", "upper-case", "sibling-issuer"],
)
def test_an_issuer_other_than_exactly_the_tenants_is_refused(client, acme, acme_tokens, issuer_of):
    token = acme_tokens.token(iss=issuer_of(acme_tokens.issuer))

    assert_invalid_token(client.get(PRIVATE, **bearer(token)), "invalid_issuer")


@pytest.mark.parametrize(
    "audience",
    ["https://api.beta.test", "https://api.acme.test/", ["https://api.beta.test", "x"]],
)
def test_an_audience_not_of_the_tenant_is_refused(client, acme, acme_tokens, audience):
    token = acme_tokens.token(aud=audience)

    assert_invalid_token(client.get(PRIVATE, **bearer(token)), "invalid_audience")


def test_an_audience_list_holding_the_tenants_audience_passes(client, acme, acme_tokens):
    token = acme_tokens.token(aud=["https://api.other.test", "https://api.acme.test"])

    assert client.get(PRIVATE, **bearer(token)).status_code == 200


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "aud", "sub"])
def test_a_missing_required_claim_is_refused_naming_it(client, acme, acme_tokens, claim):
    response = client.get(PRIVATE, **bearer(acme_tokens.token(**{claim: None})))

    assert_invalid_token(response, "invalid_claims")
    assert f'"{claim}"' in response.json()["message"]


@pytest.mark.parametrize("subject", [123, True, "", ["auth0|user-1"], {"id": "x"}])
def test_a_subject_that_is_not_a_non_empty_string_is_refused(client, acme, acme_tokens, subject):
    token = acme_tokens.token(sub=subject)

    assert_invalid_token(client.get(PRIVATE, **bearer(token)), "invalid_claims")


@pytest.mark.parametrize(
    ("claim", "value", "code"),
    [
        ("exp", "tomorrow", "invalid_claims"),
        ("iat", "now", "invalid_claims"),
        ("nbf", "soon", "invalid_claims"),
        pytest.param("exp", 10**400, "invalid_claims", id="exp-400-digits"),  # no float()
        ("nbf", float("nan"), "invalid_claims"),
        ("iat", True, "invalid_claims"),
        ("iss", 42, "invalid_issuer"),
    ],
)
def test_a_signed_claim_of_the_wrong_type_is_refused_as_such(
    client, acme, acme_tokens, issuer, acme_kid, claim, value, code
):
    payload = json.dumps(acme_tokens.claims(**{claim: value})).encode()
    token = jwt.api_jws.encode(payload, issuer.store.current("acme")[1], "RS256", {"kid": acme_kid})

    assert_invalid_token(client.get(PRIVATE, **bearer(token)), code)


# --- algorithms and keys -----------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_an_unsigned_token_is_refused(client, acme, acme_tokens, acme_kid, alg):
    token = compact({"alg": alg, "typ": "JWT", "kid": acme_kid}, acme_tokens.claims())

    assert_invalid_token(client.get(PRIVATE, **bearer(token)), "disallowed_algorithm")


@pytest.mark.parametrize("key_format", ["spki", "pkcs1"])
def test_hs256_signed_with_the_tenants_public_key_is_refused(
    client, acme, acme_tokens, issuer, acme_kid, key_format
):
    public_key = issuer.store.current("acme")[1].public_key()
    formats = {
        "spki": serialization.PublicFormat.SubjectPublicKeyInfo,
        "pkcs1": serialization.PublicFormat.PKCS1,
    }
    secret = public_key.public_bytes(serialization.Encoding.PEM, formats[key_format])
    token = compact(
        {"alg": "HS256", "typ": "JWT", "kid": acme_kid},
        acme_tokens.claims(),
        lambda signing_input: hmac.new(secret, signing_input, hashlib.sha256).digest(),
    )

    assert_invalid_token(client.get(PRIVATE, **bearer(token)), "disallowed_algorithm")


@pytest.mark.parametrize("algorithm", ["RS384", "RS512", "PS256"])
def test_an_asymmetric_algorithm_the_tenant_does_not_allow_is_refused(
    client, acme, acme_tokens, issuer, algorithm
):
    kid, key = issuer.store.current("acme")
    token = jwt.encode(acme_tokens.claims(), key, algorithm=algorithm, headers={"kid": kid})

    assert_invalid_token(client.get(PRIVATE, **bearer(token)), "disallowed_algorithm")


def test_an_allowed_algorithm_is_refused_when_the_key_declares_another(
    client, make_tenant, acme_tokens, issuer
):
    make_tenant("acme", algorithms=["RS256", "RS384"])
    kid, key = issuer.store.current("acme")
    token = jwt.encode(acme_tokens.claims(), key, algorithm="RS384", headers={"kid": kid})

    assert_invalid_token(client.get(PRIVATE, **bearer(token)), "disallowed_algorithm")


@pytest.mark.parametrize("kid", ["no-such-kid", "", None], ids=["unknown", "empty", "absent"])
def test_a_token_whose_kid_names_no_tenant_key_is_refused(client, acme, acme_tokens, issuer, kid):
    headers = {} if kid is None else {"kid": kid}
    token = jwt.encode(acme_tokens.claims(), issuer.store.current("acme")[1], "RS256", headers)

    assert_invalid_token(client.get(PRIVATE, **bearer(token)), "unknown_key")


@pytest.mark.parametrize("kid", [None, 7, ["kid"]])
def test_a_kid_that_is_not_a_string_is_refused(client, acme, acme_tokens, kid):
    token = compact({"alg": "RS256", "kid": kid}, acme_tokens.claims())

    assert_invalid_token(client.get(PRIVATE, **bearer(token)), "malformed_token")


def test_a_token_signed_by_another_key_under_the_tenants_kid_is_refused(
    client, acme, acme_tokens, acme_kid, attacker_key
):
    token = jwt.encode(acme_tokens.claims(), attacker_key, "RS256", headers={"kid": acme_kid})

    assert_invalid_token(client.get(PRIVATE, **bearer(token)), "invalid_signature")


def test_a_tampered_payload_is_refused(client, acme, acme_tokens):
    header, _payload, signature = acme_tokens.token(scope="read:messages").split(".")
    forged = b64url(json.dumps(acme_tokens.claims(scope="admin", sub="auth0|boss")).encode())

    assert_invalid_token(
        client.get(PRIVATE, **bearer(f"{header}.{forged}.{signature}")), "invalid_signature"
    )


@pytest.mark.parametrize(
    ("damage", "code"),
    [
        (lambda sig: sig[:100] + "AB"[sig[100] == "A"] + sig[101:], "invalid_signature"),
        (lambda sig: "", "invalid_signature"),
        # 342 base64 characters minus one can never be valid base64.
        (lambda sig: sig[:-1], "malformed_token"),
    ],
    ids=["one-char", "empty", "truncated"],
)
def test_a_damaged_signature_is_refused(client, acme, acme_tokens, damage, code):
    header, payload, signature = acme_tokens.token().split(".")
    token = f"{header}.{payload}.{damage(signature)}"

    assert_invalid_token(client.get(PRIVATE, **bearer(token)), code)


@pytest.mark.parametrize("crit", [["exp"], ["b64"], ["https://example.com/unknown"], []], ids=str)
def test_a_crit_header_is_refused(client, acme, acme_tokens, crit):
    token = acme_tokens.token(headers={"crit": crit})

    assert_invalid_token(client.get(PRIVATE, **bearer(token)), "malformed_token")


def test_a_token_over_8_kib_is_refused_as_too_large(client, acme, acme_tokens):
    token = acme_tokens.token(padding="x" * 8192)
    assert len(token) > 8 * 1024

    response = client.get(PRIVATE, **bearer(token))

    assert_invalid_token(response, "malformed_token")
    assert response.json()["message"] == "The access token is too large."


def test_a_token_just_under_8_kib_passes(client, acme, acme_tokens):
    room = 8 * 1024 - len(acme_tokens.token(padding=""))
    token = acme_tokens.token(padding="x" * (room * 3 // 4 - 2))
    assert 8 * 1024 - 8 < len(token) <= 8 * 1024

    assert client.get(PRIVATE, **bearer(token)).status_code == 200


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2, 3]", b'"a string"'])
def test_a_signed_payload_that_is_not_a_json_object_is_refused(
    client, acme, issuer, acme_kid, payload
):
    key = issuer.store.current("acme")[1]
    token = jwt.api_jws.encode(payload, key, algorithm="RS256", headers={"kid": acme_kid})

    assert_invalid_token(client.get(PRIVATE, **bearer(token)), "malformed_token")


# --- key-carrying headers are never followed ---------------------------------------------------


class Bait:
    """A loopback HTTP server offering the attacker's key set, counting every request."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.hits: list[str] = []
        bait = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                bait.hits.append(self.path)
                body = json.dumps(jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def bait(attacker_key: rsa.RSAPrivateKey) -> Iterator[Bait]:
    """The attacker's key server, on loopback."""
    server = Bait({"keys": [public_jwk("attacker", attacker_key)]})
    yield server
    server.stop()


@pytest.fixture
def attacker_cert(attacker_key: rsa.RSAPrivateKey) -> str:
    """A self-signed certificate of the attacker's key, base64 DER as ``x5c`` carries it."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(attacker_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(attacker_key, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def test_the_bait_server_answers_when_asked(bait):
    with urllib.request.urlopen(f"{bait.url}/jwks.json", timeout=2) as response:  # noqa: S310
        assert json.load(response)["keys"][0]["kid"] == "attacker"
    assert bait.hits == ["/jwks.json"]


@pytest.mark.parametrize(
    ("header_names", "kid", "code"),
    [
        (["jku"], "attacker", "unknown_key"),
        (["x5u"], "attacker", "unknown_key"),
        (["jwk"], "attacker", "unknown_key"),
        (["x5c"], "attacker", "unknown_key"),
        (["jwk"], None, "unknown_key"),
        (["jku", "x5u", "jwk", "x5c"], None, "unknown_key"),
        (["jku"], "acme", "invalid_signature"),
        (["x5u"], "acme", "invalid_signature"),
        (["jwk"], "acme", "invalid_signature"),
        (["x5c"], "acme", "invalid_signature"),
    ],
)
def test_a_token_signed_by_a_key_the_headers_point_to_is_refused_without_fetching(
    client, acme, acme_tokens, acme_kid, attacker_key, attacker_cert, bait, header_names, kid, code
):
    offered = {
        "jku": f"{bait.url}/jwks.json",
        "x5u": f"{bait.url}/cert.pem",
        "jwk": public_jwk("attacker", attacker_key),
        "x5c": [attacker_cert],
    }
    headers = {name: offered[name] for name in header_names}
    if kid is not None:
        headers["kid"] = acme_kid if kid == "acme" else kid
    token = jwt.encode(acme_tokens.claims(), attacker_key, "RS256", headers=headers)

    assert_invalid_token(client.get(PRIVATE, **bearer(token)), code)
    assert bait.hits == []


def test_a_valid_token_with_a_jku_header_passes_without_fetching_it(
    client, acme, acme_tokens, bait
):
    token = acme_tokens.token(headers={"jku": f"{bait.url}/jwks.json", "x5u": f"{bait.url}/c"})

    assert client.get(PRIVATE, **bearer(token)).status_code == 200
    assert bait.hits == []


# --- scopes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope_claims", "claims", "status"),
    [
        ("scope", {"scope": "read:messages"}, 200),
        ("scope", {"scope": "openid read:messages profile"}, 200),
        ("scope", {"permissions": ["read:messages"]}, 403),
        ("permissions", {"permissions": ["read:messages"]}, 200),
        ("permissions", {"scope": "read:messages"}, 403),
        ("both", {"scope": "read:messages"}, 200),
        ("both", {"permissions": ["read:messages"]}, 200),
        ("both", {"scope": "openid", "permissions": ["write:messages"]}, 403),
        ("both", {}, 403),
    ],
)
def test_scopes_come_from_the_claims_the_tenant_chose(
    client, make_tenant, acme_tokens, scope_claims, claims, status
):
    make_tenant("acme", scope_claims=scope_claims)

    assert client.get(SCOPED, **bearer(acme_tokens.token(**claims))).status_code == status


@pytest.mark.parametrize(
    ("scope_claims", "claims"),
    [
        ("scope", {"scope": ["read:messages"]}),
        ("scope", {"scope": 1}),
        ("permissions", {"permissions": "read:messages"}),
        ("permissions", {"permissions": ["read:messages", 7]}),
        ("both", {"scope": "read:messages", "permissions": "read:messages"}),
        ("both", {"scope": {"read:messages": True}, "permissions": ["read:messages"]}),
    ],
)
def test_a_chosen_scope_claim_of_the_wrong_type_is_invalid_token(
    client, make_tenant, acme_tokens, scope_claims, claims
):
    make_tenant("acme", scope_claims=scope_claims)

    assert_invalid_token(
        client.get(SCOPED, **bearer(acme_tokens.token(**claims))), "invalid_claims"
    )


def test_an_unchosen_scope_claim_of_the_wrong_type_is_ignored(client, acme, acme_tokens):
    token = acme_tokens.token(scope="read:messages", permissions="not a list")

    assert client.get(SCOPED, **bearer(token)).status_code == 200


@pytest.fixture
def special(make_tenant: Any) -> Any:
    """Acme, demanding read:special instead of read:messages on the scoped endpoint."""
    return make_tenant(
        "acme", scope_rules=[{"endpoint": "messages:private-scoped", "scopes": ["read:special"]}]
    )


def test_a_tenant_scope_rule_replaces_the_default_scope(client, special, acme_tokens):
    response = client.get(SCOPED, **bearer(acme_tokens.token(scope="read:messages")))

    assert (response.status_code, response.json()["code"]) == (403, "insufficient_scope")
    assert response["WWW-Authenticate"] == (
        'Bearer realm="acme", error="insufficient_scope", scope="read:special", DPoP algs="ES256"'
    )


def test_a_tenant_scope_rule_is_met_by_its_scope_and_named_in_the_message(
    client, special, acme_tokens
):
    response = client.get(SCOPED, **bearer(acme_tokens.token(scope="read:special")))

    assert response.status_code == 200
    assert response.json() == {
        "message": "Hello from a private endpoint! You need to be authenticated and have a scope "
        "of read:special to see this."
    }


def test_a_tenant_scope_rule_leaves_other_endpoints_alone(client, special, acme_tokens):
    response = client.get(PRIVATE, **bearer(acme_tokens.token(scope="read:messages")))

    assert response.status_code == 200


# --- verify_token and granted_scopes, directly -------------------------------------------------


def config(issuer: Any, **changes: Any) -> IssuerPolicy:
    """Acme's configuration, built without the database."""
    fields = {
        "issuer": issuer.url_for("acme"),
        "jwks_url": f"{issuer.url_for('acme')}.well-known/jwks.json",
        "audiences": ("https://api.acme.test",),
        "algorithms": ("RS256",),
        "leeway": 60,
        "scope_claims": "scope",
        **changes,
    }
    return IssuerPolicy(**fields)


class KeyLookup:
    """``key_for_kid`` over a published key set, remembering which kids were asked for."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.keys = {jwk["kid"]: SigningKey.from_jwk(jwk) for jwk in jwks["keys"]}
        self.asked: list[str] = []

    def __call__(self, kid: str) -> SigningKey:
        self.asked.append(kid)
        if kid not in self.keys:
            raise UnknownKey()
        return self.keys[kid]


@pytest.fixture
def acme_keys(issuer: Any) -> KeyLookup:
    """Acme's published keys."""
    return KeyLookup(issuer.store.jwks("acme"))


def test_verify_token_returns_the_verified_claims(issuer, acme_tokens, acme_keys, acme_kid):
    exp = int(time.time()) + 300
    token = acme_tokens.token(exp=exp, scope="read:messages write:messages", sub="auth0|u")

    claims = verify_token(token, config(issuer), acme_keys)

    assert (claims.subject, claims.issuer, claims.expires_at) == (
        "auth0|u",
        acme_tokens.issuer,
        exp,
    )
    assert claims.scopes == frozenset({"read:messages", "write:messages"})
    assert claims.payload["aud"] == "https://api.acme.test"
    assert acme_keys.asked == [acme_kid]


def test_verified_claims_are_read_only(issuer, acme_tokens, acme_keys):
    claims = verify_token(acme_tokens.token(), config(issuer), acme_keys)

    with pytest.raises(TypeError):
        claims.payload["sub"] = "someone else"


def test_the_algorithm_is_checked_before_any_key_is_looked_up(
    issuer, acme_tokens, acme_keys, acme_kid
):
    token = compact({"alg": "none", "kid": acme_kid}, acme_tokens.claims())

    with pytest.raises(DisallowedAlgorithm):
        verify_token(token, config(issuer), acme_keys)
    assert acme_keys.asked == []


@pytest.mark.parametrize(("leeway", "passes"), [(0, False), (29, False), (31, True), (60, True)])
def test_the_tenants_leeway_decides_a_recently_expired_token(
    issuer, acme_tokens, acme_keys, leeway, passes
):
    now = int(time.time())
    token = acme_tokens.token(iat=now - 600, exp=now - 30)
    tenant = config(issuer, leeway=leeway)

    if passes:
        assert verify_token(token, tenant, acme_keys).expires_at == now - 30
    else:
        with pytest.raises(TokenExpired):
            verify_token(token, tenant, acme_keys)


def test_any_of_several_tenant_audiences_is_accepted(issuer, tokens, acme_keys):
    tenant = config(issuer, audiences=("https://api.acme.test", "https://admin.acme.test"))
    token = tokens("acme", "https://admin.acme.test").token()

    assert verify_token(token, tenant, acme_keys).payload["aud"] == "https://admin.acme.test"


def test_a_token_for_another_audience_raises_invalid_audience(issuer, tokens, acme_keys):
    token = tokens("acme", "https://api.beta.test").token()

    with pytest.raises(InvalidAudience):
        verify_token(token, config(issuer), acme_keys)


def test_a_key_of_another_type_is_never_used_for_rs256(issuer, acme_tokens, acme_kid):
    rsa_key = KeyLookup(issuer.store.jwks("acme")).keys[acme_kid]
    as_ec = SigningKey(acme_kid, "EC", None, rsa_key.public_key)

    with pytest.raises(DisallowedAlgorithm):
        verify_token(acme_tokens.token(), config(issuer), lambda kid: as_ec)


def test_no_pyjwt_error_escapes_for_garbage(issuer, acme_keys):
    with pytest.raises(TokenError):
        verify_token("garbage", config(issuer), acme_keys)


@pytest.mark.parametrize(
    ("scope_claims", "payload", "scopes"),
    [
        ("scope", {"scope": "a b  c"}, {"a", "b", "c"}),
        ("scope", {"scope": ""}, set()),
        ("scope", {}, set()),
        ("scope", {"permissions": ["p"]}, set()),
        ("permissions", {"permissions": ["p", "q"]}, {"p", "q"}),
        ("permissions", {"scope": "a"}, set()),
        ("permissions", {}, set()),
        ("both", {"scope": "a b", "permissions": ["b", "p"]}, {"a", "b", "p"}),
    ],
)
def test_granted_scopes_reads_the_chosen_claims(scope_claims, payload, scopes):
    assert granted_scopes(payload, scope_claims) == frozenset(scopes)


@pytest.mark.parametrize(
    ("scope_claims", "payload"),
    [
        ("scope", {"scope": ["a"]}),
        ("scope", {"scope": None}),
        ("permissions", {"permissions": "a b"}),
        ("permissions", {"permissions": [["a"]]}),
        ("permissions", {"permissions": {"a": 1}}),
        ("both", {"scope": "a", "permissions": [1]}),
    ],
)
def test_granted_scopes_refuses_a_chosen_claim_of_the_wrong_type(scope_claims, payload):
    with pytest.raises(InvalidClaims):
        granted_scopes(payload, scope_claims)


@pytest.mark.parametrize(
    ("scope", "scopes"),
    [
        ("read:messages\u00a0delete:messages", set()),  # one scope-token, and not a valid one
        ("read:messages\tdelete:messages", set()),
        ("read:messages\ndelete:messages", set()),
        ("read:messages  delete:messages", {"read:messages", "delete:messages"}),
        ('read:messages "quoted"', {"read:messages"}),
        ("read:messages caf\u00e9", {"read:messages"}),
    ],
)
def test_scopes_split_on_the_ascii_space_only_and_must_be_scope_tokens(scope, scopes):
    assert granted_scopes({"scope": scope}, "scope") == frozenset(scopes)


def test_a_non_breaking_space_never_grants_the_scopes_on_either_side(client, acme, acme_tokens):
    token = acme_tokens.token(scope="read:messages\u00a0delete:messages")

    response = client.get(SCOPED, **bearer(token))

    assert (response.status_code, response.json()["code"]) == (403, "insufficient_scope")


def test_a_permission_that_is_not_a_scope_token_grants_nothing():
    assert granted_scopes({"permissions": ["a b", "ok", ""]}, "permissions") == {"ok"}


@pytest.mark.parametrize("subject", ["auth0|a\x00b", "line\nbreak", "bell\x07"])
def test_a_subject_with_control_characters_is_refused(client, acme, acme_tokens, subject):
    response = client.get(PRIVATE, **bearer(acme_tokens.token(sub=subject)))

    assert_invalid_token(response, "invalid_claims")
    assert "control characters" in response.json()["message"]


@pytest.mark.parametrize("provision_users", [True, False])
def test_a_subject_with_a_lone_surrogate_is_refused_not_a_server_error(
    client, make_tenant, acme_tokens, provision_users
):
    make_tenant("acme", provision_users=provision_users)

    response = client.get(PRIVATE, **bearer(acme_tokens.token(sub="auth0|\ud800")))

    assert_invalid_token(response, "invalid_claims")
    assert "not valid Unicode" in response.json()["message"]


@pytest.mark.parametrize("typ", ["dpop+jwt", "DPoP+JWT", "id_token+jwt", "JWS", 7, ["at+jwt"]])
def test_a_token_typed_as_something_else_is_refused_in_the_auth0_profile(
    client, acme, acme_tokens, typ
):
    response = client.get(PRIVATE, **bearer(acme_tokens.token(headers={"typ": typ})))

    assert_invalid_token(response, "invalid_token_type")


@pytest.mark.parametrize("typ", [None, "JWT", "jwt", "at+jwt", "AT+JWT", "application/at+jwt"])
def test_the_auth0_profile_takes_untyped_jwt_and_at_jwt_tokens(client, acme, acme_tokens, typ):
    response = client.get(PRIVATE, **bearer(acme_tokens.token(headers={"typ": typ})))

    assert response.status_code == 200


RFC9068_CLAIMS = {"client_id": "client-1", "jti": "token-1"}


@pytest.fixture
def profiled(make_tenant):
    """Acme under the RFC 9068 profile."""
    return make_tenant("acme", token_profile="rfc9068")


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "Application/AT+JWT"])
def test_the_rfc9068_profile_takes_at_jwt_tokens_with_its_claims(
    client, profiled, acme_tokens, typ
):
    token = acme_tokens.token(headers={"typ": typ}, **RFC9068_CLAIMS)

    assert client.get(PRIVATE, **bearer(token)).status_code == 200


@pytest.mark.parametrize("typ", [None, "JWT", "dpop+jwt"])
def test_the_rfc9068_profile_refuses_tokens_not_typed_at_jwt(client, profiled, acme_tokens, typ):
    token = acme_tokens.token(headers={"typ": typ}, **RFC9068_CLAIMS)  # typ None: no typ at all

    response = client.get(PRIVATE, **bearer(token))

    assert_invalid_token(response, "invalid_token_type")


@pytest.mark.parametrize("claim", ["client_id", "jti", "iat"])
def test_the_rfc9068_profile_requires_its_claims(client, profiled, acme_tokens, claim):
    token = acme_tokens.token(headers={"typ": "at+jwt"}, **{**RFC9068_CLAIMS, claim: None})

    response = client.get(PRIVATE, **bearer(token))

    assert_invalid_token(response, "invalid_claims")
    assert claim in response.json()["message"]


def test_the_auth0_profile_does_not_require_client_id_or_jti(client, acme, acme_tokens):
    assert client.get(PRIVATE, **bearer(acme_tokens.token())).status_code == 200


@pytest.fixture
def organized(make_tenant):
    """Acme trusting two Auth0 organizations."""
    return make_tenant("acme", organizations=["org_A1", "org_B2"])


@pytest.mark.parametrize("organization", ["org_A1", "org_B2"])
def test_a_trusted_organization_passes_and_reaches_the_principal(
    organized, acme_tokens, organization, rf
):
    from authz.authentication import TenantTokenAuthentication

    request = rf.get(PRIVATE, **bearer(acme_tokens.token(org_id=organization)))
    request.tenant = directory.by_slug("acme")

    _, principal = TenantTokenAuthentication().authenticate(request)

    assert principal.organization == organization


@pytest.mark.parametrize("organization", [None, "org_C3", "ORG_A1", ["org_A1"], 1, ""])
def test_a_token_of_no_trusted_organization_is_refused(
    client, organized, acme_tokens, organization
):
    response = client.get(PRIVATE, **bearer(acme_tokens.token(org_id=organization)))

    assert_invalid_token(response, "invalid_organization")


def test_without_organizations_org_id_is_not_checked(client, acme, acme_tokens):
    for organization in ("org_anything", None):
        token = acme_tokens.token(org_id=organization)
        assert client.get(PRIVATE, **bearer(token)).status_code == 200


def test_an_edited_organization_list_takes_effect_for_a_token_already_seen(
    client, organized, acme_tokens, settings
):
    settings.AUTHZ = {**settings.AUTHZ, "CONFIG_RECHECK_INTERVAL": 0}
    token = acme_tokens.token(org_id="org_B2")
    assert client.get(PRIVATE, **bearer(token)).status_code == 200

    organized.organizations = ["org_A1"]
    organized.save()

    assert_invalid_token(client.get(PRIVATE, **bearer(token)), "invalid_organization")
