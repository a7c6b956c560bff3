"""The safe GET against real loopback servers that drip, stall, redirect, lie and impersonate."""

import datetime
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authz.fetch import (
    NestingTooDeep,
    Refused,
    TooComplex,
    Unreachable,
    fetch,
    is_public_address,
    load_json,
)

BODY = b'{"keys": []}'


Respond = Callable[[socket.socket, bytes, threading.Event], None]


class Server(socketserver.ThreadingTCPServer):
    """A loopback TCP server that reads one request per connection and hands it to respond."""

    daemon_threads = True

    def __init__(self, respond: Respond, tls: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.respond, self.tls = respond, tls
        self.stop = threading.Event()
        self.requests: list[bytes] = []

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self.server_address[1]

    def url(self, path: str = "/jwks.json", host: str = "127.0.0.1") -> str:
        """A URL on this server, https when it speaks TLS."""
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: dripping handlers fail when the client gives up, as they should."""


class Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Server = self.server
        conn = (
            server.tls.wrap_socket(self.request, server_side=True) if server.tls else self.request
        )
        with conn:
            request = read_request(conn)
            server.requests.append(request)
            server.respond(conn, request, server.stop)


def read_request(conn: socket.socket) -> bytes:
    """Read up to the end of the request headers."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def answer(status: str, body: bytes = b"", **headers: str) -> Respond:
    """A canned response with a Content-Length."""
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    return lambda conn, request, stop: conn.sendall(data)


def drip(data: bytes, interval: float = 0.2) -> Callable[[socket.socket, threading.Event], None]:
    """Send one byte per interval until done, the client leaves or the test ends."""

    def send(conn: socket.socket, stop: threading.Event) -> None:
        for byte in data:
            if stop.wait(interval):
                return
            conn.sendall(bytes([byte]))

    return send


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """Start loopback servers; stop them and their handlers after the test."""
    servers: list[Server] = []

    def start(respond: Respond, tls: ssl.SSLContext | None = None) -> Server:
        server = Server(respond, tls)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port whose backlog accepts connections that nobody ever answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str, **options: object) -> bytes:
    """Fetch in development mode with test-sized limits unless told otherwise."""
    defaults = {"deadline_seconds": 2.0, "max_bytes": 1024, "allow_insecure": True}
    return fetch(url, **{**defaults, **options})


def timed(call: Callable[[], object]) -> float:
    """Seconds a call took to raise Unreachable."""
    started = time.monotonic()
    with pytest.raises(Unreachable, match="did not answer within 1 s"):
        call()
    return time.monotonic() - started


def resolver(*addresses: str, calls: list[str] | None = None) -> Callable[..., list[tuple]]:
    """A getaddrinfo stand-in answering these addresses for any host."""

    def resolve(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
        if calls is not None:
            calls.append(host)
        return [_addrinfo(address, port) for address in addresses]

    return resolve


def _addrinfo(address: str, port: int) -> tuple:
    if ":" in address:
        return (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))


def test_a_200_body_is_returned_and_the_request_is_well_formed(serve):
    server = serve(answer("200 OK", BODY))

    assert get(server.url()) == BODY
    request = server.requests[0].decode().lower()
    assert request.startswith("get /jwks.json http/1.1\r\n")
    for header in (f"host: 127.0.0.1:{server.port}", "accept: application/json"):
        assert header in request
    assert "user-agent: tenant-authz" in request and "connection: close" in request


def test_a_chunked_body_is_reassembled(serve):
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked = head + b'4\r\n{"a"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n'
    server = serve(lambda conn, request, stop: conn.sendall(chunked))

    assert get(server.url()) == b'{"a": 1}'


def test_a_dripped_body_ends_at_the_deadline(serve):
    def respond(conn, request, stop):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        drip(b"x" * 100)(conn, stop)

    server = serve(respond)

    assert 0.9 <= timed(lambda: get(server.url(), deadline_seconds=1)) < 2


DRIPPED_HEADERS = b"HTTP/1.1 200 OK\r\nX-Padding: " + b"x" * 100


def test_dripped_headers_end_at_the_deadline(serve):
    server = serve(lambda conn, request, stop: drip(DRIPPED_HEADERS)(conn, stop))

    assert 0.9 <= timed(lambda: get(server.url(), deadline_seconds=1)) < 2


def test_a_server_that_never_answers_ends_at_the_deadline(silent_port):
    url = f"http://127.0.0.1:{silent_port}/jwks.json"

    assert timed(lambda: get(url, deadline_seconds=1)) < 2


def test_a_tls_handshake_that_never_completes_ends_at_the_deadline(silent_port):
    url = f"https://issuer.test:{silent_port}/jwks.json"

    assert timed(lambda: get(url, deadline_seconds=1, resolve=resolver("127.0.0.1"))) < 2


def test_slow_dns_ends_at_the_deadline():
    released = threading.Event()

    def resolve(*args, **kwargs):
        released.wait(10)
        return [_addrinfo("127.0.0.1", 9)]

    try:
        assert timed(lambda: get("http://slow.test/", deadline_seconds=1, resolve=resolve)) < 2
    finally:
        released.set()


def test_redirects_share_one_deadline(serve):
    def respond(conn, request, stop):
        stop.wait(0.4)
        hop = int(request.split(b" ")[1].strip(b"/") or 0)
        answer("302 Found", Location=f"/{hop + 1}")(conn, request, stop)

    server = serve(respond)

    assert timed(lambda: get(server.url("/"), deadline_seconds=1, max_redirects=5)) < 2


def test_a_huge_content_length_is_refused_before_reading(serve):
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n"
    server = serve(lambda conn, request, stop: (conn.sendall(head), stop.wait(5)))

    with pytest.raises(Refused, match="larger than 1024 bytes"):
        get(server.url(), deadline_seconds=3)


def test_a_huge_chunked_body_is_refused(serve):
    def respond(conn, request, stop):
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while not stop.is_set():
            conn.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")

    server = serve(respond)

    with pytest.raises(Refused, match="larger than 1024 bytes"):
        get(server.url())


def test_a_body_shorter_than_its_content_length_is_unreachable(serve):
    server = serve(
        lambda conn, request, stop: conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}")
    )

    with pytest.raises(Unreachable, match="before the end"):
        get(server.url())


def test_client_errors_are_refused_and_server_errors_unreachable(serve):
    with pytest.raises(Refused, match="answered HTTP 404"):
        get(serve(answer("404 Not Found", b"secret body")).url())
    with pytest.raises(Unreachable, match="answered HTTP 503") as raised:
        get(serve(answer("503 Service Unavailable", b"secret body")).url())
    assert "secret" not in str(raised.value)


def test_a_same_origin_redirect_is_followed(serve):
    def respond(conn, request, stop):
        if request.startswith(b"GET /old "):
            return answer("301 Moved Permanently", Location="/jwks.json")(conn, request, stop)
        return answer("200 OK", BODY)(conn, request, stop)

    server = serve(respond)

    assert get(server.url("/old")) == BODY
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    "location",
    [
        "http://localhost:{port}/jwks.json",
        "http://127.0.0.1:{other}/jwks.json",
        "https://127.0.0.1:{port}/",
    ],
)
def test_a_redirect_to_another_origin_is_refused(serve, location):
    target = serve(answer("200 OK", BODY))
    server = serve(lambda conn, request, stop: None)
    server.respond = answer(
        "302 Found", Location=location.format(port=server.port, other=target.port)
    )

    with pytest.raises(Refused, match="redirected to another origin"):
        get(server.url())
    assert target.requests == []


def test_a_redirect_loop_is_refused_after_max_redirects(serve):
    server = serve(answer("307 Temporary Redirect", Location="/jwks.json"))

    with pytest.raises(Refused, match="redirected more than 3 times"):
        get(server.url())
    assert len(server.requests) == 4


def test_connection_refused_is_unreachable(closed_port):
    with pytest.raises(Unreachable, match="could not be reached"):
        get(f"http://127.0.0.1:{closed_port}/jwks.json")


def test_the_next_address_is_tried_when_one_refuses(serve):
    server = serve(answer("200 OK", BODY))
    url = server.url(host="issuer.test")

    assert get(url, resolve=resolver("::1", "127.0.0.1")) == BODY


def test_outside_development_http_is_refused_before_resolving():
    with pytest.raises(Refused, match="must use https"):
        get("http://issuer.test/jwks.json", allow_insecure=False, resolve=None)


@pytest.mark.parametrize(
    "url", ["https://127.0.0.1:9/jwks.json", "https://[::1]:9/jwks.json", "https://localhost:9/"]
)
def test_outside_development_loopback_is_refused(url):
    with pytest.raises(Refused, match="resolves to a non-public address"):
        get(url, allow_insecure=False)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("10.0.0.1", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("64:ff9b::a00:1", False),
        ("64:ff9b::7f00:1", False),
        ("64:ff9b:1::808:808", False),
        ("2002:a00:1::", False),
        ("2002:7f00:1::", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:0:a00:1", False),
        ("::a00:1", False),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),
        ("not an address", False),
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("64:ff9b::808:808", True),
        ("2002:808:808::", True),
    ],
)
def test_address_classification(address, public):
    assert is_public_address(address) is public


def test_each_hop_resolves_once_and_connects_to_the_checked_address(serve):
    server = serve(answer("200 OK", BODY))
    calls: list[str] = []
    first = resolver("127.0.0.1", calls=calls)
    later = resolver("192.0.2.1")  # TEST-NET-1: a connection there would fail

    def rebinding(*args, **kwargs):
        return (first if not calls else later)(*args, **kwargs)

    assert get(server.url(host="rebind.test"), resolve=rebinding) == BODY
    assert calls == ["rebind.test"]


def test_one_private_address_among_public_ones_is_refused():
    for order in (("8.8.8.8", "10.0.0.1"), ("10.0.0.1", "8.8.8.8"), ("2606:4700::1111", "::1")):
        with pytest.raises(Refused, match=r"issuer\.test resolves to a non-public address"):
            get("https://issuer.test/jwks.json", allow_insecure=False, resolve=resolver(*order))


def certificate(tmp_path: Path, name: str) -> Path:
    """A self-signed certificate and key for one DNS name, in one PEM file."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / f"{name}.pem"
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + private)
    return path


def tls_server(serve: Callable[..., Server], pem: Path, names: list[str]) -> Server:
    """A TLS server presenting this certificate and recording the SNI names it is sent."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    return serve(answer("200 OK", BODY), tls=context)


def test_https_verifies_the_hostname_and_sends_sni(serve, tmp_path):
    pem, names = certificate(tmp_path, "issuer.test"), []
    server = tls_server(serve, pem, names)
    trusted = ssl.create_default_context(cafile=pem)

    body = get(server.url(host="issuer.test"), ssl_context=trusted, resolve=resolver("127.0.0.1"))

    assert body == BODY and names == ["issuer.test"]


def test_https_refuses_a_certificate_for_another_name(serve, tmp_path):
    pem = certificate(tmp_path, "other.test")
    server = tls_server(serve, pem, [])
    trusted = ssl.create_default_context(cafile=pem)
    url = server.url(host="issuer.test")

    with pytest.raises(Refused, match="certificate that does not verify"):
        get(url, ssl_context=trusted, resolve=resolver("127.0.0.1"))


def test_https_refuses_an_untrusted_certificate(serve, tmp_path):
    server = tls_server(serve, certificate(tmp_path, "issuer.test"), [])

    with pytest.raises(Refused, match="certificate that does not verify"):
        get(server.url(host="issuer.test"), resolve=resolver("127.0.0.1"))


def test_dripped_headers_over_tls_end_at_the_deadline(serve, tmp_path):
    pem = certificate(tmp_path, "issuer.test")
    server = tls_server(serve, pem, [])
    server.respond = lambda conn, request, stop: drip(DRIPPED_HEADERS)(conn, stop)
    trusted = ssl.create_default_context(cafile=pem)
    url = server.url(host="issuer.test")

    def call() -> None:
        get(url, deadline_seconds=1, ssl_context=trusted, resolve=resolver("127.0.0.1"))

    assert 0.9 <= timed(call) < 2


def test_deep_nesting_is_refused_without_recursion():
    with pytest.raises(TooComplex, match="more than 10000 arrays and objects"):
        load_json(b"[" * 100_000)
    with pytest.raises(NestingTooDeep):
        load_json(b'{"a":' * 5_000 + b"1" + b"}" * 5_000)


def test_the_parser_recursion_limit_is_caught_too():
    with pytest.raises(NestingTooDeep):
        load_json(b"[" * 10_000 + b"]" * 10_000, max_depth=10**6)


def test_moderate_nesting_is_parsed():
    assert load_json(b"[" * 10 + b"]" * 10) == [[[[[[[[[[]]]]]]]]]]
    assert load_json(b"[" * 32 + b"]" * 32, max_depth=32)
    with pytest.raises(NestingTooDeep):
        load_json(b"[" * 33 + b"]" * 33, max_depth=32)


def test_brackets_inside_strings_do_not_count():
    document = b'{"a": "' + b"[{" * 100 + b'", "b": "\\"' + b"[" * 100 + b'"}'

    assert load_json(document, max_depth=2) == {"a": "[{" * 100, "b": '"' + "[" * 100}


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://[x/", "redirected to an invalid URL"),
        ("http://127.0.0.1:99999/jwks.json", "invalid host or port"),
        ("http://127.0.0.1:port/jwks.json", "invalid host or port"),
        ("/caf\u00e9/jwks.json", "is not a valid URL"),
        ("http://" + "a" * 64 + "/jwks.json", "invalid host or port"),
        ("http://a..b/jwks.json", "invalid host or port"),
        ("/" + "x" * 10_000 + "\u00e9", r"is not a valid URL"),
    ],
    ids=[
        "bad-ipv6",
        "port-99999",
        "port-word",
        "non-ascii-path",
        "label-too-long",
        "empty-label",
        "long",
    ],
)
def test_a_redirect_to_a_location_that_does_not_parse_is_refused(serve, location, reason):
    server = serve(answer("302 Found", Location=location))

    with pytest.raises(Refused, match=reason) as raised:
        get(server.url())
    assert len(str(raised.value)) < 300


def test_a_non_ascii_path_is_refused_before_connecting(closed_port):
    with pytest.raises(Refused, match="is not a valid URL"):
        get(f"http://127.0.0.1:{closed_port}/caf\u00e9")


def endless(head: bytes, repeated: bytes) -> Respond:
    """Send head, then repeated for as long as the client reads or the test lasts."""

    def respond(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
        conn.sendall(head)
        while not stop.is_set():
            conn.sendall(repeated)

    return respond


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("respond", "reason"),
    [
        (endless(b"", b"HTTP/1.1 100 Continue\r\n\r\n"), "sent headers larger than 65536 bytes"),
        (endless(b"HTTP/1.1 200 OK\r\n", b"X-Pad: " + b"x" * 1000 + b"\r\n"), "headers larger"),
        (endless(b"HTTP/1.1 200 OK\r\nX-Pad: ", b"x" * 1000), "headers larger"),
        (endless(CHUNKED, b"1;" + b"x" * 60_000 + b"\r\n{\r\n"), "bytes of framing"),
        (endless(CHUNKED + b"2\r\n{}\r\n0\r\n", b"X-Trailer: y\r\n"), "bytes of framing"),
        (endless(CHUNKED, b"1\r\n \r\n"), "bytes of framing"),
    ],
    ids=[
        "endless-100-continue",
        "many-headers",
        "one-endless-header",
        "chunk-extensions",
        "endless-trailers",
        "one-byte-chunks",
    ],
)
def test_a_hostile_response_is_refused_after_bounded_bytes_and_time(serve, respond, reason):
    server = serve(respond)
    started = time.monotonic()

    with pytest.raises(Refused, match=reason):
        get(server.url(), deadline_seconds=5, max_bytes=256 * 1024)

    assert time.monotonic() - started < 2.5
