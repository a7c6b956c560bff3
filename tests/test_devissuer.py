"""The development issuer, exercised over real HTTP; no database, no Django."""

import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from devissuer.issuer import (
    MAX_BODY_BYTES,
    DevIssuerServer,
    DevKeyStore,
    issuer_url,
    start_in_thread,
)

AUDIENCE = "https://api.example.test"


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    """A key directory nested in tmp_path, so escapes from it are observable."""
    return tmp_path / "keys"


@pytest.fixture
def key_store(key_dir: Path) -> DevKeyStore:
    """A key store persisting under key_dir."""
    return DevKeyStore(key_dir)


@pytest.fixture
def issuer_server(key_store: DevKeyStore) -> Iterator[DevIssuerServer]:
    """A running dev issuer on a free port."""
    server = start_in_thread(key_store)
    yield server
    server.stop()


def mint(server: DevIssuerServer, name: str = "acme", **body: Any) -> requests.Response:
    """POST a JSON token request for ``name``."""
    return requests.post(
        f"{server.url_for(name)}oauth/token", json={"audience": AUDIENCE, **body}, timeout=5
    )


def verify(server: DevIssuerServer, token: str, name: str = "acme") -> dict[str, Any]:
    """Verify ``token`` against the JWKS the server publishes for ``name``."""
    client = jwt.PyJWKClient(f"{server.url_for(name)}.well-known/jwks.json", cache_jwk_set=False)
    key = client.get_signing_key_from_jwt(token)
    return jwt.decode(
        token, key, algorithms=["RS256"], audience=AUDIENCE, issuer=server.url_for(name)
    )


def served_kids(server: DevIssuerServer, name: str = "acme") -> list[str]:
    """The kids of the served JWKS, in order."""
    response = requests.get(f"{server.url_for(name)}.well-known/jwks.json", timeout=5)
    return [key["kid"] for key in response.json()["keys"]]


def raw_request(server: DevIssuerServer, method: str, path: str, body: bytes = b"") -> Any:
    """Send ``path`` verbatim (requests would normalise dot segments) and return the response."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request(method, path, body=body or None)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_issuer_url_has_one_trailing_slash() -> None:
    assert issuer_url("http://h:1", "acme") == "http://h:1/acme/"
    assert issuer_url("https://issuer.example/", "a-b_1") == "https://issuer.example/a-b_1/"


def test_discovery_document(issuer_server: DevIssuerServer) -> None:
    response = requests.get(
        f"{issuer_server.base_url}/acme/.well-known/openid-configuration", timeout=5
    )

    assert response.status_code == 200
    doc = response.json()
    host, port = issuer_server.server_address[:2]
    assert doc["issuer"] == f"http://{host}:{port}/acme/"
    assert doc["jwks_uri"] == f"http://{host}:{port}/acme/.well-known/jwks.json"
    assert doc["token_endpoint"] == f"http://{host}:{port}/acme/oauth/token"
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert doc["grant_types_supported"] == ["client_credentials"]
    assert doc["response_types_supported"]
    assert doc["subject_types_supported"]


def test_jwks_document(issuer_server: DevIssuerServer, key_store: DevKeyStore) -> None:
    response = requests.get(f"{issuer_server.url_for('acme')}.well-known/jwks.json", timeout=5)

    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "max-age=60"
    [key] = response.json()["keys"]
    assert {k: key[k] for k in ("kty", "use", "alg", "e")} == {
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "e": "AQAB",
    }
    assert key["kid"] == key_store.current("acme")[0]
    public = jwt.PyJWK(key).key.public_numbers()
    assert public == key_store.current("acme")[1].public_key().public_numbers()


def test_token_verifies_against_served_jwks(issuer_server: DevIssuerServer) -> None:
    before = int(time.time())
    response = mint(
        issuer_server,
        scope="read:messages  write:messages",
        permissions=["read:messages"],
        sub="client-7@clients",
        expires_in=120,
    )

    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 120
    assert body["scope"] == "read:messages write:messages"
    claims = verify(issuer_server, body["access_token"])
    assert claims["iss"] == issuer_server.url_for("acme")
    assert claims["iss"].endswith("/acme/")
    assert claims["aud"] == AUDIENCE
    assert claims["sub"] == "client-7@clients"
    assert claims["azp"] == "client-7"
    assert claims["gty"] == "client-credentials"
    assert claims["scope"] == "read:messages write:messages"
    assert claims["permissions"] == ["read:messages"]
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 120


def test_token_defaults(issuer_server: DevIssuerServer) -> None:
    body = mint(issuer_server, name="globex").json()

    assert "scope" not in body
    assert body["expires_in"] == 3600
    claims = verify(issuer_server, body["access_token"], name="globex")
    assert claims["sub"] == "globex-client@clients"
    assert claims["exp"] - claims["iat"] == 3600
    assert "scope" not in claims
    assert "permissions" not in claims


def test_form_encoded_token_request(issuer_server: DevIssuerServer) -> None:
    response = requests.post(
        f"{issuer_server.url_for('acme')}oauth/token",
        data={
            "grant_type": "client_credentials",
            "audience": AUDIENCE,
            "scope": "read:messages",
            "expires_in": "60",
            "client_id": "ignored",
        },
        timeout=5,
    )

    assert response.status_code == 200
    claims = verify(issuer_server, response.json()["access_token"])
    assert claims["scope"] == "read:messages"
    assert claims["exp"] - claims["iat"] == 60


def test_public_url_sets_issuer(key_store: DevKeyStore) -> None:
    server = start_in_thread(key_store, public_url="https://issuer.example.test/")
    host, port = server.server_address[:2]
    try:
        discovery = requests.get(
            f"http://{host}:{port}/acme/.well-known/openid-configuration", timeout=5
        ).json()
        token = requests.post(
            f"http://{host}:{port}/acme/oauth/token", json={"audience": AUDIENCE}, timeout=5
        ).json()["access_token"]
    finally:
        server.stop()

    assert server.base_url == "https://issuer.example.test"
    assert server.url_for("acme") == "https://issuer.example.test/acme/"
    assert discovery["issuer"] == "https://issuer.example.test/acme/"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "https://issuer.example.test/acme/"


def test_keys_persist_across_restart(key_dir: Path) -> None:
    first = start_in_thread(DevKeyStore(key_dir))
    port = first.server_address[1]
    kid_before = served_kids(first)
    token = mint(first).json()["access_token"]
    first.stop()

    # Same port right away: stop() must release the socket.
    second = start_in_thread(DevKeyStore(key_dir), port=port)
    try:
        assert served_kids(second) == kid_before
        assert verify(second, token)["aud"] == AUDIENCE
    finally:
        second.stop()


def test_rotation_keeps_one_previous_key(
    issuer_server: DevIssuerServer, key_store: DevKeyStore, key_dir: Path
) -> None:
    original = served_kids(issuer_server)[0]
    token_before = mint(issuer_server).json()["access_token"]

    first = requests.post(f"{issuer_server.url_for('acme')}rotate", timeout=5).json()
    assert first["previous"] == original
    assert first["kid"] != original
    assert served_kids(issuer_server) == [first["kid"], original]
    assert key_store.current("acme")[0] == first["kid"]
    assert (
        jwt.get_unverified_header(mint(issuer_server).json()["access_token"])["kid"]
        == (first["kid"])
    )
    assert verify(issuer_server, token_before)["sub"] == "acme-client@clients"

    second = requests.post(f"{issuer_server.url_for('acme')}rotate", timeout=5).json()
    assert second["previous"] == first["kid"]
    assert served_kids(issuer_server) == [second["kid"], first["kid"]]
    with pytest.raises(jwt.PyJWKClientError):
        verify(issuer_server, token_before)
    assert sorted(p.name for p in (key_dir / "acme").glob("*.pem")) == sorted(
        [f"{second['kid']}.pem", f"{first['kid']}.pem"]
    )
    assert DevKeyStore(key_dir).jwks("acme") == key_store.jwks("acme")


def test_issuers_are_independent(issuer_server: DevIssuerServer) -> None:
    token = mint(issuer_server, name="acme").json()["access_token"]

    assert served_kids(issuer_server, "acme") != served_kids(issuer_server, "globex")
    with pytest.raises(jwt.PyJWKClientError):
        verify(issuer_server, token, name="globex")


def test_sign_with_extra_headers_and_previous_key(key_store: DevKeyStore) -> None:
    old_kid, old_key = key_store.current("acme")
    key_store.rotate("acme")

    token = key_store.sign(
        "acme", {"sub": "x"}, headers={"jku": "https://evil.example/jwks"}, key_id=old_kid
    )

    header = jwt.get_unverified_header(token)
    assert header["kid"] == old_kid
    assert header["jku"] == "https://evil.example/jwks"
    assert jwt.decode(token, old_key.public_key(), algorithms=["RS256"]) == {"sub": "x"}
    with pytest.raises(ValueError, match="not published"):
        key_store.sign("acme", {}, key_id="nope")


def test_store_creates_one_key_under_concurrency(key_store: DevKeyStore, key_dir: Path) -> None:
    kids: list[str] = []
    threads = [
        threading.Thread(target=lambda: kids.append(key_store.current("race")[0])) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(kids) == 8
    assert len(set(kids)) == 1
    assert len(list((key_dir / "race").glob("*.pem"))) == 1


JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
BAD_TOKEN_REQUESTS = {
    # id: (body, content type, a word the error description must name)
    "bad-json": (b"{not json", JSON, "JSON"),
    "json-not-object": (b'["audience"]', JSON, "object"),
    "not-utf8": (b"\xff\xfe", JSON, "UTF-8"),
    "empty-body": (b"", JSON, "audience"),
    "missing-audience": (b"{}", JSON, "audience"),
    "empty-audience": (b'{"audience": " "}', JSON, "audience"),
    "audience-not-string": (b'{"audience": 5}', JSON, "audience"),
    "form-no-audience": (b"scope=a", FORM, "audience"),
    "exp-zero": (b'{"audience": "a", "expires_in": 0}', JSON, "expires_in"),
    "exp-too-big": (b'{"audience": "a", "expires_in": 86401}', JSON, "expires_in"),
    "exp-negative": (b'{"audience": "a", "expires_in": -5}', JSON, "expires_in"),
    "exp-float": (b'{"audience": "a", "expires_in": 1.5}', JSON, "expires_in"),
    "exp-bool": (b'{"audience": "a", "expires_in": true}', JSON, "expires_in"),
    "exp-word": (b'{"audience": "a", "expires_in": "x"}', JSON, "expires_in"),
    "form-exp-negative": (b"audience=a&expires_in=-5", FORM, "expires_in"),
    "scope-list": (b'{"audience": "a", "scope": ["a"]}', JSON, "scope"),
    "permissions-string": (b'{"audience": "a", "permissions": "a"}', JSON, "permissions"),
    "permissions-int": (b'{"audience": "a", "permissions": [1]}', JSON, "permissions"),
    "form-permissions": (b"audience=a&permissions=x", FORM, "JSON body"),
    "empty-sub": (b'{"audience": "a", "sub": ""}', JSON, "sub"),
    "grant-type": (b'{"audience": "a", "grant_type": "password"}', JSON, "grant_type"),
}


@pytest.mark.parametrize(
    ("body", "content_type", "named"),
    list(BAD_TOKEN_REQUESTS.values()),
    ids=list(BAD_TOKEN_REQUESTS),
)
def test_bad_token_requests_are_invalid_request(
    issuer_server: DevIssuerServer, body: bytes, content_type: str, named: str
) -> None:
    response = requests.post(
        f"{issuer_server.url_for('acme')}oauth/token",
        data=body,
        headers={"Content-Type": content_type},
        timeout=5,
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert named in response.json()["error_description"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/Acme/.well-known/jwks.json"),
        ("GET", "/-acme/.well-known/openid-configuration"),
        ("POST", "/acme.corp/oauth/token"),
        ("POST", "/%2e%2e/rotate"),
        ("GET", "/../.well-known/jwks.json"),
        ("GET", f"/{'a' * 64}/.well-known/jwks.json"),
    ],
)
def test_invalid_issuer_name_on_known_route_is_400(
    issuer_server: DevIssuerServer, key_dir: Path, method: str, path: str
) -> None:
    status, body = raw_request(issuer_server, method, path)

    assert status == 400
    assert body["error"] == "invalid_request"
    assert not key_dir.exists()


def test_longest_valid_issuer_name(issuer_server: DevIssuerServer) -> None:
    name = "a" * 63

    assert mint(issuer_server, name=name).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/acme/"),
        ("GET", "/acme/.well-known/other"),
        ("GET", "/acme/oauth/token"),
        ("POST", "/acme/.well-known/jwks.json"),
        ("PUT", "/acme/rotate"),
        ("DELETE", "/acme/.well-known/jwks.json"),
        ("GET", "/acme/.well-known/jwks.json/extra"),
        ("GET", "/../../etc/.well-known/jwks.json"),
        ("POST", "/A/b/oauth/token"),
        ("GET", "/acme/../.well-known/jwks.json"),
    ],
)
def test_unknown_routes_are_404(
    issuer_server: DevIssuerServer, tmp_path: Path, key_dir: Path, method: str, path: str
) -> None:
    status, body = raw_request(issuer_server, method, path)

    assert status == 404
    assert body["error"] == "not_found"
    assert not key_dir.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["..", ".", "A/b", "../x", "a/../../x", "", "a\n", "Ab"])
def test_store_rejects_invalid_names(key_store: DevKeyStore, tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="invalid issuer name"):
        key_store.current(name)
    with pytest.raises(ValueError, match="invalid issuer name"):
        key_store.rotate(name)

    assert list(tmp_path.iterdir()) == []


def test_body_size_limit(issuer_server: DevIssuerServer) -> None:
    prefix = json.dumps({"audience": AUDIENCE, "pad": ""})[:-2]
    at_limit = (prefix + "x" * (MAX_BODY_BYTES - len(prefix) - 2) + '"}').encode()
    assert len(at_limit) == MAX_BODY_BYTES
    over = at_limit[:-2] + b'x"}'

    url = f"{issuer_server.url_for('acme')}oauth/token"
    headers = {"Content-Type": "application/json"}
    ok = requests.post(url, data=at_limit, headers=headers, timeout=5)
    too_big = requests.post(url, data=over, headers=headers, timeout=5)

    assert ok.status_code == 200
    assert too_big.status_code == 413
    assert too_big.json()["error"] == "request_too_large"


def test_server_error_is_json_without_traceback(
    issuer_server: DevIssuerServer, key_store: DevKeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(name: str) -> dict[str, Any]:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(key_store, "jwks", explode)

    response = requests.get(f"{issuer_server.url_for('acme')}.well-known/jwks.json", timeout=5)

    assert response.status_code == 500
    assert response.json()["error"] == "server_error"
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text


def test_hit_counting_and_stats(issuer_server: DevIssuerServer) -> None:
    served_kids(issuer_server)
    issuer_server.reset_hits()

    served_kids(issuer_server)
    served_kids(issuer_server, "globex")
    mint(issuer_server)

    assert issuer_server.hits("/acme/.well-known/jwks.json") == 1
    assert issuer_server.hits(".well-known/jwks.json") == 2
    assert issuer_server.hits("/oauth/token") == 1
    assert issuer_server.hits("/rotate") == 0
    stats = requests.get(f"{issuer_server.base_url}/_stats", timeout=5).json()
    assert stats == {
        "GET /acme/.well-known/jwks.json": 1,
        "GET /globex/.well-known/jwks.json": 1,
        "POST /acme/oauth/token": 1,
        "GET /_stats": 1,
    }

    issuer_server.reset_hits()
    assert issuer_server.hits(".well-known/jwks.json") == 0


def test_quiet_unless_verbose(key_store: DevKeyStore, capfd: pytest.CaptureFixture[str]) -> None:
    for verbose in (False, True):
        server = start_in_thread(key_store, verbose=verbose)
        try:
            requests.get(f"{server.url_for('acme')}.well-known/jwks.json", timeout=5)
        finally:
            server.stop()
        err = capfd.readouterr().err
        if verbose:
            assert err.count("\n") == 1
            assert "GET /acme/.well-known/jwks.json" in err
            assert " 200 " in err
        else:
            assert err == ""


def test_a_slow_issuer_drips_its_key_set_and_only_its_own(issuer_server: DevIssuerServer) -> None:
    slow = requests.post(f"{issuer_server.url_for('acme')}slow", json={"seconds": 1}, timeout=5)
    assert slow.json() == {"seconds": 1}

    started = time.monotonic()
    dripped = requests.get(f"{issuer_server.url_for('acme')}.well-known/jwks.json", timeout=5)
    took = time.monotonic() - started
    other = requests.get(f"{issuer_server.url_for('other')}.well-known/jwks.json", timeout=5)

    assert dripped.json()["keys"] and 1 <= took < 2, took
    assert other.elapsed.total_seconds() < 0.5
    requests.post(f"{issuer_server.url_for('acme')}slow", json={"seconds": 0}, timeout=5)
    again = requests.get(f"{issuer_server.url_for('acme')}.well-known/jwks.json", timeout=5)
    assert again.elapsed.total_seconds() < 0.5


@pytest.mark.parametrize(
    "body", [{}, {"seconds": "1"}, {"seconds": True}, {"seconds": -1}, {"seconds": 601}]
)
def test_a_slow_request_without_a_sane_number_is_refused(
    issuer_server: DevIssuerServer, body: dict[str, Any]
) -> None:
    response = requests.post(f"{issuer_server.url_for('acme')}slow", json=body, timeout=5)

    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")
