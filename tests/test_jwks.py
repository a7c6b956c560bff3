"""Fetching key sets from issuers that misbehave: junk, huge, slow, redirecting, failing."""

import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x25519

from authz.jwks import (
    NO_USABLE_KEY,
    InvalidKeySet,
    IssuerUnreachable,
    fetch_jwks,
    key_set_health,
    parse_jwks,
    read_record,
    refresh_key_set,
)
from bench.hostile_bodies import BODIES, check_and_parse, cpu_seconds, pause_meter
from tests.fixtures import bearer


class CannedIssuer(ThreadingHTTPServer):
    """Answers every GET with one canned status, headers and body."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CannedHandler)
        self.status, self.headers, self.body = 200, {}, b""
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, status: int, body: bytes, **headers: str) -> str:
        """Set the canned answer; return a URL on this server."""
        self.status, self.body, self.headers = status, body, headers
        return f"http://127.0.0.1:{self.server_address[1]}/.well-known/jwks.json"


class CannedHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(self.server.status)
        for name, value in self.server.headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def canned():
    server = CannedIssuer()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>hello</html>", "not JSON"),
        (b"[]", '"keys" list'),
        (b'{"keys": {}}', '"keys" list'),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100 + b"]" * 100, "nests deeper than 32 levels"),
        (b'{"keys": [], "n": ' + b"9" * 65 + b"}", "integer longer than 64 digits"),
    ],
)
def test_junk_key_sets_are_refused(canned, body, reason):
    with pytest.raises(InvalidKeySet, match=reason):
        fetch_jwks(canned.answer(200, body))


@pytest.mark.parametrize(
    "body",
    [
        b'{"keys": []}',
        b'{"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}',
        b'{"keys": [{"kty": "RSA", "kid": "x", "n": "AQAB"}]}',
    ],
    ids=["no-keys", "symmetric-only", "broken-rsa"],
)
def test_a_well_formed_set_without_usable_keys_is_an_empty_answer(canned, body):
    assert fetch_jwks(canned.answer(200, body)).keys == ()


def test_an_empty_set_withdraws_the_keys_but_junk_keeps_them(canned, issuer):
    url = canned.answer(200, json.dumps(issuer.store.jwks("acme")).encode())
    assert key_set_health(refresh_key_set(url)).status == "ok"

    canned.answer(200, b"<html>login</html>")
    with pytest.raises(InvalidKeySet):
        refresh_key_set(url)
    kept = read_record(url)
    canned.answer(200, b'{"keys": []}')
    emptied = refresh_key_set(url)

    assert kept.keys and key_set_health(kept).status == "degraded"
    assert (emptied.keys, emptied.last_error) == ((), NO_USABLE_KEY)
    assert key_set_health(read_record(url)).status == "empty"


def test_oversized_key_set_is_refused(canned):
    with pytest.raises(InvalidKeySet, match="larger than"):
        fetch_jwks(canned.answer(200, b" " * (300 * 1024) + b"{}"))


def test_server_error_is_transient_and_client_error_is_not(canned):
    with pytest.raises(IssuerUnreachable):
        fetch_jwks(canned.answer(502, b"bad gateway"))
    with pytest.raises(InvalidKeySet, match="404"):
        fetch_jwks(canned.answer(404, b"not found"))


def test_redirect_to_another_host_is_refused(canned):
    url = canned.answer(302, b"", Location="http://evil.localhost:9/jwks.json")

    with pytest.raises(InvalidKeySet, match="redirected to another origin"):
        fetch_jwks(url)


def test_same_host_redirects_are_followed_but_bounded(canned):
    url = canned.answer(301, b"", Location="/.well-known/jwks.json")

    with pytest.raises(InvalidKeySet, match="redirected more than 3 times"):
        fetch_jwks(url)


def test_private_members_are_stripped_and_keys_deduplicated(issuer):
    published = issuer.store.jwks("acme")["keys"][0]
    body = json.dumps({"keys": [{**published, "d": "secret"}, published]}).encode()

    keys = parse_jwks(body).keys

    assert len(keys) == 1 and "d" not in keys[0]


@pytest.fixture
def silent_port():
    """A loopback port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


def test_slow_issuer_times_out_as_unreachable(silent_port, settings):
    settings.AUTHZ = {**settings.AUTHZ, "JWKS_FETCH_DEADLINE": 0.3}
    started = time.monotonic()

    with pytest.raises(IssuerUnreachable, match=r"did not answer within 0\.3 s"):
        fetch_jwks(f"http://127.0.0.1:{silent_port}/.well-known/jwks.json")

    assert time.monotonic() - started < 2


def test_slow_issuer_gives_503_within_the_timeout(
    client, make_tenant, tokens, silent_port, settings
):
    settings.AUTHZ = {**settings.AUTHZ, "JWKS_FETCH_DEADLINE": 0.3}
    url = f"http://127.0.0.1:{silent_port}/jwks.json"
    make_tenant("slow", jwks_url=url)
    started = time.monotonic()

    response = client.get("/t/slow/api/private", **bearer(tokens("slow").token()))

    assert response.status_code == 503 and time.monotonic() - started < 2
    assert read_record(url).last_error == "The issuer 127.0.0.1 did not answer within 0.3 s."


def test_junk_issuer_gives_503_and_records_the_error(client, make_tenant, tokens, canned):
    url = canned.answer(200, b"<html>login</html>")
    make_tenant("junk", jwks_url=url)

    response = client.get("/t/junk/api/private", **bearer(tokens("junk").token()))

    assert response.status_code == 503
    assert read_record(url).last_error == "The key set is not JSON."


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "10.0.0.8", "169.254.169.254"])
def test_outside_development_internal_destinations_are_never_fetched(canned, settings, host):
    settings.AUTHZ = {**settings.AUTHZ, "ALLOW_INSECURE_ISSUERS": False}
    url = canned.answer(200, b"{}").replace("http://127.0.0.1", f"https://{host}")

    with pytest.raises(InvalidKeySet, match="non-public address"):
        fetch_jwks(url)


def _uint(value: int) -> str:
    return (
        base64.urlsafe_b64encode(value.to_bytes((value.bit_length() + 7) // 8, "big"))
        .rstrip(b"=")
        .decode()
    )


def _rsa_jwk(bits: int = 2048, exponent: int = 65537) -> dict:
    numbers = rsa.generate_private_key(65537, bits).public_key().public_numbers()
    return {"kty": "RSA", "kid": "k", "n": _uint(numbers.n), "e": _uint(exponent)}


def _ec_jwk(curve: ec.EllipticCurve, crv: str, **members: str) -> dict:
    numbers = ec.generate_private_key(curve).public_key().public_numbers()
    size = (curve.key_size + 7) // 8
    coordinate = {
        name: base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode()
        for name, value in (("x", numbers.x), ("y", numbers.y))
    }
    return {"kty": "EC", "kid": "k", "crv": crv, **coordinate, **members}


def _okp_jwk(key: object, crv: str) -> dict:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "kid": "k", "crv": crv, "x": base64.urlsafe_b64encode(raw).decode()}


def _kept(jwk: dict) -> bool:
    return bool(parse_jwks(json.dumps({"keys": [jwk]}).encode()).keys)


@pytest.mark.parametrize(
    ("jwk", "kept"),
    [
        (lambda: _rsa_jwk(2048), True),
        (lambda: _rsa_jwk(4096, exponent=3), True),
        (lambda: _rsa_jwk(1024), False),
        (lambda: _rsa_jwk(4096, exponent=2**3071 + 1), False),  # costs milliseconds per check
        (lambda: _rsa_jwk(2048, exponent=65539), False),
        (lambda: _ec_jwk(ec.SECP256R1(), "P-256", alg="ES256"), True),
        (lambda: _ec_jwk(ec.SECP384R1(), "P-384"), True),
        (lambda: _ec_jwk(ec.SECP521R1(), "P-521", alg="ES512"), True),
        (lambda: _ec_jwk(ec.SECP384R1(), "P-384", alg="ES256"), False),  # not ES256's curve
        (lambda: _ec_jwk(ec.SECP256K1(), "secp256k1"), False),
        (lambda: _okp_jwk(ed25519.Ed25519PrivateKey.generate(), "Ed25519"), True),
        (lambda: _okp_jwk(ed448.Ed448PrivateKey.generate(), "Ed448"), True),
        (lambda: _okp_jwk(x25519.X25519PrivateKey.generate(), "X25519"), False),
    ],
    ids=[
        "rsa-2048",
        "rsa-4096-e3",
        "rsa-1024",
        "rsa-huge-exponent",
        "rsa-exponent-over-65537",
        "p256-es256",
        "p384",
        "p521-es512",
        "p384-declared-es256",
        "secp256k1",
        "ed25519",
        "ed448",
        "x25519",
    ],
)
def test_only_sound_keys_on_their_named_curves_are_kept(jwk, kept):
    assert _kept(jwk()) is kept


def _named(jwk: dict, kid: str, **members: object) -> dict:
    return {**jwk, "kid": kid, **members}


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ({"alg": "none"}, "Key 'bad' is not a public key PyJWT loads for alg 'none'."),
        ({"alg": "HS256"}, "Key 'bad' is not a public key PyJWT loads for alg 'HS256'."),
        ({"alg": ["RS256"]}, "Key 'bad' is not a public key PyJWT loads for alg ['RS256']."),
        ({"kty": ["RSA"]}, "Key 'bad' has key type ['RSA'], not RSA, EC or OKP."),
        ({"use": "enc"}, "Key 'bad' is not for signing."),
        ({"e": "Aw", "n": "AQAB"}, "Key 'bad' has a size, exponent or curve refused here."),
    ],
    ids=["alg-none", "alg-hs256", "alg-list", "kty-list", "use-enc", "rsa-17-bits"],
)
def test_an_unusable_entry_is_skipped_with_a_reason_and_the_usable_keys_kept(members, reason):
    good = _rsa_jwk()
    body = json.dumps({"keys": [_named(good, "bad", **members), _named(good, "good")]}).encode()

    key_set = parse_jwks(body)

    assert [key["kid"] for key in key_set.keys] == ["good"]
    assert key_set.skipped == (reason,)


def test_entries_without_a_kid_or_past_the_limit_are_named(settings):
    settings.AUTHZ = {**settings.AUTHZ, "JWKS_MAX_KEYS": 3}
    good = _rsa_jwk()
    entries = ["x", {**good, "kid": ""}, good, good, good, good]

    key_set = parse_jwks(json.dumps({"keys": entries}).encode())

    assert key_set.skipped == (
        "Entry 1 is not a JSON object.",
        "Entry 2 has no kid.",
        "3 entries after the first 3 were ignored.",
    )
    assert len(key_set.keys) == 1


def test_a_long_kid_is_cut_short_in_the_reason():
    body = json.dumps({"keys": [{"kty": "oct", "kid": "k" * 100_000}]}).encode()

    (reason,) = parse_jwks(body).skipped

    assert len(reason) < 120 and reason.startswith("Key 'kkk")


def test_an_alg_none_entry_beside_good_keys_refreshes_cleanly(canned, issuer):
    published = issuer.store.jwks("acme")["keys"]
    forged = {**published[0], "kid": "none-key", "alg": "none"}
    url = canned.answer(200, json.dumps({"keys": [forged, *published]}).encode())

    record = refresh_key_set(url)

    assert [key["kid"] for key in record.keys] == [key["kid"] for key in published]
    assert record.last_error is None and key_set_health(read_record(url)).status == "ok"


def test_a_key_set_of_unusable_entries_only_is_a_recorded_error(canned, issuer):
    published = issuer.store.jwks("acme")["keys"][0]
    url = canned.answer(200, json.dumps({"keys": [{**published, "alg": "none"}]}).encode())

    record = refresh_key_set(url)

    kid = published["kid"]
    reason = f"Key {kid!r} is not a public key PyJWT loads for alg 'none'."
    assert record.keys == () and record.last_error == f"{NO_USABLE_KEY} {reason}"
    assert read_record(url).last_error == record.last_error
    assert key_set_health(read_record(url)).status == "empty"


def _cpu_of_batch(body: bytes, repeat: int) -> float:
    """Least thread CPU seconds of three batches of ``repeat`` parses."""
    return cpu_seconds(lambda: [check_and_parse(body) for _ in range(repeat)], rounds=3)


@pytest.mark.parametrize("name", list(BODIES))
def test_every_hostile_body_costs_linear_time(name):
    small, large = BODIES[name](16 * 1024), BODIES[name](128 * 1024)
    repeat = max(1, int(0.002 / max(_cpu_of_batch(small, 1), 1e-6)))

    growth = _cpu_of_batch(large, repeat) / _cpu_of_batch(small, repeat)

    assert growth <= 24, f"{name}: {growth:.1f}x from 16 to 128 KiB (linear is 8x)"


def test_the_issue_body_is_refused_at_once_while_another_thread_runs():
    body = BODIES["issue: quote then escaped quotes"](256 * 1024)

    with pause_meter() as gaps:
        seconds = cpu_seconds(lambda: check_and_parse(body), rounds=3)

    assert seconds < 0.1 and gaps[0] < 2.0, (seconds, gaps[0])  # old: 131 s; load adds ~0.3 s
