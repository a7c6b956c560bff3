"""A safe HTTP GET for issuer documents: one total deadline, checked addresses, bounded size.

Standard library only. Each hop resolves its host once, refuses it if any answer is not public
(development's allow_insecure skips that check and permits http), and connects to exactly the
checked address; TLS verifies the certificate against the hostname. Proxy variables are ignored.
"""

import http.client
import io
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
READ_SIZE = 64 * 1024
# Bytes read past the body limit: the status line and headers (interim 100 Continue responses
# included), then chunk sizes, chunk extensions and trailers. Enough for any honest server.
HEADER_BYTES = 64 * 1024
FRAMING_BYTES = 64 * 1024
USER_AGENT = "tenant-authz"
SHOWN_URL_CHARS = 200  # a redirect's Location is the issuer's text: messages quote only its start
# http.client refuses these in a request path; refusing them here gives a sentence instead.
UNSENDABLE_URL = re.compile(r"[\x00-\x20\x7f]")

NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
LAST_32_BITS = (NAT64_WELL_KNOWN, IPV4_COMPATIBLE, IPV4_TRANSLATED)

# Limits that keep parsing a fetched document linear: brackets are counted before parsing (a
# key set has a few dozen), integers are refused before int() converts them.
MAX_DEPTH = 32
MAX_BRACKETS = 10_000
MAX_INT_DIGITS = 64

# Called as getaddrinfo(host, port, type=SOCK_STREAM); tests pass their own to pin DNS answers.
Resolver = Callable[..., Sequence[tuple[Any, ...]]]


class FetchError(Exception):
    """An issuer document could not be fetched."""


class Unreachable(FetchError):
    """No answer in time, no connection, a TLS failure or an HTTP 5xx: worth retrying."""


class Refused(FetchError):
    """Refused for a reason a retry will not change, a certificate that fails to verify included."""


class TooComplex(ValueError):
    """A JSON document has more structure or longer numbers than any issuer document needs."""


class NestingTooDeep(TooComplex):
    """A JSON document nests arrays and objects deeper than allowed."""


def fetch(
    url: str,
    *,
    deadline_seconds: float,
    max_bytes: int,
    allow_insecure: bool,
    max_redirects: int = 3,
    ssl_context: ssl.SSLContext | None = None,
    resolve: Resolver = socket.getaddrinfo,
) -> bytes:
    """GET a document within one total deadline; https and public addresses only unless insecure."""
    target = _parse(url, allow_insecure)
    session = _Session(_Deadline(deadline_seconds), max_bytes, allow_insecure, ssl_context, resolve)
    try:
        return session.follow(target, max_redirects)
    except TimeoutError as exc:
        message = f"The issuer {target.host} did not answer within {deadline_seconds:g} s."
        raise Unreachable(message) from exc
    except ssl.SSLCertVerificationError as exc:
        message = f"The issuer {target.host} presented a certificate that does not verify"
        raise Refused(f"{message}: {exc.verify_message}.") from exc
    except (OSError, http.client.HTTPException) as exc:
        message = f"The issuer {target.host} could not be reached ({_reason(exc)})."
        raise Unreachable(message) from exc


def is_public_address(address: str) -> bool:
    """Whether traffic to this address stays on the public internet, embedded IPv4 included."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return True
    return ip not in NAT64_LOCAL_USE and all(v4.is_global for v4 in _embedded_ipv4(ip))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address hands its traffic to: mapped, 6to4, NAT64, Teredo."""
    embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if any(ip in network for network in LAST_32_BITS):
        embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [v4 for v4 in embedded if v4 is not None]


def load_json(body: bytes, max_depth: int = MAX_DEPTH, what: str = "document") -> Any:
    """Parse JSON in time linear in its size: brackets and long integers are refused first."""
    if body.count(b"[") + body.count(b"{") > MAX_BRACKETS:
        raise TooComplex(f"The {what} has more than {MAX_BRACKETS} arrays and objects.")
    text = body.decode("utf-8-sig")
    too_deep = NestingTooDeep(f"The {what} nests deeper than {max_depth} levels.")
    try:
        document = json.loads(text, parse_int=_int_parser(what))
    except RecursionError as exc:
        raise too_deep from exc
    if _depth_exceeds(document, max_depth):
        raise too_deep
    return document


def _int_parser(what: str) -> Callable[[str], int]:
    """int(), refusing literals past MAX_INT_DIGITS: converting a long one is quadratic."""

    def bounded_int(digits: str) -> int:
        if len(digits) > MAX_INT_DIGITS:
            raise TooComplex(f"The {what} has an integer longer than {MAX_INT_DIGITS} digits.")
        return int(digits)

    return bounded_int


def _depth_exceeds(document: Any, max_depth: int) -> bool:
    """Whether arrays and objects nest deeper than max_depth, walked without recursion."""
    pending = [(document, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        if depth >= max_depth:
            return True
        pending.extend((child, depth + 1) for child in value)
    return False


@dataclass(frozen=True)
class _Target:
    """One URL, split into what a hop needs."""

    url: str
    scheme: str
    host: str
    port: int
    path: str

    @property
    def origin(self) -> tuple[str, str, int]:
        """Scheme, host and port: what a redirect must keep."""
        return self.scheme, self.host, self.port

    @property
    def host_header(self) -> str:
        """The Host header: brackets around IPv6, the port only when not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


def _parse(url: str, allow_insecure: bool) -> _Target:
    """Split and validate an issuer URL; refuse http unless insecure issuers are allowed."""
    shown = url if len(url) <= SHOWN_URL_CHARS else f"{url[:SHOWN_URL_CHARS]}…"
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise Refused(f"The issuer URL {shown} is not a valid URL.") from exc
    if parts.scheme not in (DEFAULT_PORTS if allow_insecure else ("https",)):
        raise Refused(f"The issuer URL {shown} must use https.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not parts.hostname or UNSENDABLE_URL.search(url) or not path.isascii():
        raise Refused(f"The issuer URL {shown} is not a valid URL.")
    try:
        host = parts.hostname.encode("idna").decode("ascii")
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except (UnicodeError, ValueError) as exc:
        raise Refused(f"The issuer URL {shown} has an invalid host or port.") from exc
    return _Target(url, parts.scheme, host, port, path)


class _Deadline:
    """One point in monotonic time that every step of a fetch shares."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left; raise TimeoutError once there are none."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left


class _DeadlineReader(io.RawIOBase):
    """A socket's receiving side where every recv waits only for the time left, and the bytes
    received stay within a limit that the caller raises once the headers are read."""

    def __init__(self, sock: socket.socket, deadline: _Deadline, host: str) -> None:
        super().__init__()
        self._sock, self._deadline = sock, deadline
        self.received, self.limit = 0, HEADER_BYTES
        self.refusal = f"The issuer {host} sent headers larger than {HEADER_BYTES} bytes."

    def readable(self) -> bool:
        """Always: this is a reader."""
        return True

    def readinto(self, buffer: Any) -> int:
        """One recv, bounded by the deadline; Refused past the limit."""
        self._sock.settimeout(self._deadline.remaining())
        count = self._sock.recv_into(buffer)
        self.received += count
        if self.received > self.limit:
            raise Refused(self.refusal)
        return count


class _DeadlineSocket:
    """The socket as http.client sees it; the caller owns and closes the real one."""

    def __init__(self, sock: socket.socket, deadline: _Deadline, host: str) -> None:
        self._sock, self._deadline = sock, deadline
        self.reader = _DeadlineReader(sock, deadline, host)

    def sendall(self, data: bytes) -> None:
        """Send within the time left."""
        self._sock.settimeout(self._deadline.remaining())
        self._sock.sendall(data)

    def makefile(self, mode: str) -> io.BufferedReader:
        """The response stream http.client parses."""
        return io.BufferedReader(self.reader)

    def close(self) -> None:
        """Nothing: http.client closes early when the response says Connection: close."""


@dataclass(frozen=True)
class _Session:
    """The settings of one fetch and the deadline all its hops share."""

    deadline: _Deadline
    max_bytes: int
    allow_insecure: bool
    ssl_context: ssl.SSLContext | None
    resolve: Resolver

    def follow(self, target: _Target, max_redirects: int) -> bytes:
        """GET the target, following same-origin redirects; return the body of the 200."""
        for _ in range(max_redirects + 1):
            with self._connect(target) as sock:
                response, reader = self._request(sock, target)
                location = _redirect_location(response, target.host)
                if location is None:
                    return self._read_body(response, reader, target.host)
            target = self._redirected(target, location)
        raise Refused(f"The issuer {target.host} redirected more than {max_redirects} times.")

    def _redirected(self, target: _Target, location: str) -> _Target:
        """The redirect's target, refused unless it keeps scheme, host and port."""
        try:
            joined = urljoin(target.url, location)
        except ValueError as exc:
            raise Refused(f"The issuer {target.host} redirected to an invalid URL.") from exc
        redirected = _parse(joined, self.allow_insecure)
        if redirected.origin != target.origin:
            scheme, host, port = redirected.origin
            message = f"The issuer {target.host} redirected to another origin"
            raise Refused(f"{message} ({scheme}://{host}:{port}).")
        return redirected

    def _connect(self, target: _Target) -> socket.socket:
        """Connect to the checked addresses in turn until one accepts; TLS for https."""
        addresses = self._addresses(target)
        for family, sockaddr in addresses[:-1]:
            try:
                sock = self._open(family, sockaddr)
                break
            except OSError:
                continue
        else:
            sock = self._open(*addresses[-1])  # the last address's error is the one reported
        return self._wrap(sock, target) if target.scheme == "https" else sock

    def _open(self, family: int, sockaddr: tuple[Any, ...]) -> socket.socket:
        """A TCP connection to one address, within the time left."""
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.deadline.remaining())
            sock.connect(sockaddr)
        except BaseException:
            sock.close()
            raise
        return sock

    def _wrap(self, sock: socket.socket, target: _Target) -> socket.socket:
        """TLS with SNI and certificate verification against the hostname, not the address."""
        try:
            context = self.ssl_context or ssl.create_default_context()
            sock.settimeout(self.deadline.remaining())
            return context.wrap_socket(sock, server_hostname=target.host)
        except BaseException:
            sock.close()
            raise

    def _addresses(self, target: _Target) -> list[tuple[int, tuple[Any, ...]]]:
        """Resolve once; refuse the host if any answer is not public, since DNS picks the order."""
        answers = [(info[0], info[4]) for info in self._resolved(target)]
        if not answers:
            raise Unreachable(f"The issuer host {target.host} does not resolve.")
        public = all(is_public_address(sockaddr[0]) for _, sockaddr in answers)
        if not self.allow_insecure and not public:
            raise Refused(f"The issuer host {target.host} resolves to a non-public address.")
        return answers

    def _resolved(self, target: _Target) -> Sequence[tuple[Any, ...]]:
        """The resolver's answer, waited for in a thread: getaddrinfo has no timeout of its own."""
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append(self.resolve(target.host, target.port, type=socket.SOCK_STREAM))
            except Exception as exc:
                outcome.append(exc)

        thread = threading.Thread(target=run, name="fetch-resolve", daemon=True)
        thread.start()
        thread.join(self.deadline.remaining())
        if not outcome:
            raise TimeoutError
        if isinstance(outcome[0], OSError | UnicodeError):
            raise Unreachable(f"The issuer host {target.host} does not resolve.") from outcome[0]
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    def _request(
        self, sock: socket.socket, target: _Target
    ) -> tuple[http.client.HTTPResponse, _DeadlineReader]:
        """Send the GET on the connected socket and parse the status line and headers."""
        connection = http.client.HTTPConnection(target.host, target.port)
        connection.sock = wrapped = _DeadlineSocket(sock, self.deadline, target.host)
        headers = {
            "Host": target.host_header,
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            "Connection": "close",
        }
        connection.request("GET", target.path, headers=headers)
        response = connection.getresponse()
        return response, wrapped.reader

    def _read_body(
        self, response: http.client.HTTPResponse, reader: _DeadlineReader, host: str
    ) -> bytes:
        """The body, one recv at a time, refused past max_bytes or FRAMING_BYTES of framing."""
        too_large = f"The document from {host} is larger than {self.max_bytes} bytes."
        if response.length is not None and response.length > self.max_bytes:
            raise Refused(too_large)
        body, headers_end = bytearray(), reader.received
        reader.refusal = f"The issuer {host} sent more than {FRAMING_BYTES} bytes of framing."
        # Chunk sizes, extensions and trailers get FRAMING_BYTES past the body and the next read;
        # tiny chunks cost a Python loop each, so their framing is bounded, not the total only.
        while True:
            reader.limit = headers_end + len(body) + READ_SIZE + FRAMING_BYTES
            chunk = response.read1(READ_SIZE)
            if not chunk:
                break
            body += chunk
            if len(body) > self.max_bytes:
                raise Refused(too_large)
            if reader.received - headers_end - len(body) > FRAMING_BYTES:
                raise Refused(reader.refusal)
        if response.length:
            raise Unreachable(f"The issuer {host} closed the connection before the end.")
        return bytes(body)


def _redirect_location(response: http.client.HTTPResponse, host: str) -> str | None:
    """The Location of a redirect, None for a 200; raise for any other status."""
    status = response.status
    if status in REDIRECT_STATUSES:
        location = response.getheader("Location")
        if not location:
            raise Refused(f"The issuer {host} answered HTTP {status} without a Location.")
        return location
    if status >= 500:
        raise Unreachable(f"The issuer {host} answered HTTP {status}.")
    if status != 200:
        raise Refused(f"The issuer {host} answered HTTP {status}.")
    return None


def _reason(exc: BaseException) -> str:
    """A short cause that never quotes what the server sent."""
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or type(exc).__name__}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
