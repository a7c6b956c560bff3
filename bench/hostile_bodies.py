"""CPU time to check and parse the worst key set bodies we can build, and another thread's pause.

Every body is as large as a fetch accepts (AUTHZ_JWKS_MAX_BYTES, 256 KiB) and goes through what
a refresh does with fetched bytes: authz.jwks.parse_jwks (the bracket count, json.loads with
bounded integers, the depth walk, then PyJWT and the soundness check on each entry kept). The
hostile responses go through the whole fetch (status line, headers, chunked framing) from a
loopback server. Usage, from the repository root:

    .venv/bin/python -m bench.hostile_bodies [--size-kib 256] [--rounds 3]
"""

import argparse
import base64
import gc
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("SECRET_KEY", "bench-only-not-secret")

import django

django.setup()

from authz.fetch import FetchError, fetch  # noqa: E402
from authz.jwks import InvalidKeySet, parse_jwks  # noqa: E402

KIB = 1024
RSA_2048_N = base64.urlsafe_b64encode(b"\xc5" * 256).rstrip(b"=")


def _fill(head: bytes, unit: bytes, tail: bytes, size: int) -> bytes:
    """head, then unit repeated as often as fits in size with tail."""
    return head + unit * max(0, (size - len(head) - len(tail)) // len(unit)) + tail


def _keys_of(unit: bytes, size: int) -> bytes:
    """A key set whose "keys" list repeats one entry to the size."""
    return _fill(b'{"keys": [', unit + b",", b'{"kty": "oct"}]}', size)


def _entries_with_long_member(member: bytes, size: int, count: int = 32) -> bytes:
    """A key set of count RSA entries, each with one member as long as the size allows."""
    room = size // count - 80
    value = member + b"A" * room
    entry = b'{"kty": "RSA", "kid": "k%d", "n": "' + value + b'", "e": "AQAB"}'
    entries = b", ".join(entry.replace(b"%d", str(i).encode()) for i in range(count))
    return b'{"keys": [' + entries + b"]}"


# Each builder makes a body of at most ``size`` bytes that makes some parser on the fetch path
# work hard: the quadratic case first, then one per parser and per kind of token.
BODIES: dict[str, Callable[[int], bytes]] = {
    "issue: quote then escaped quotes": lambda n: _fill(b'"', b'\\"', b"", n),
    "unclosed string of escapes": lambda n: _fill(b'{"keys": ["', b"\\\\", b"", n),
    "deep nesting": lambda n: b"[" * n,
    "nesting at the bracket cap": lambda n: b"[" * min(n // 2, 10_000) + b"]" * min(n // 2, 10_000),
    "nesting 32 deep, repeated": lambda n: _fill(
        b'{"keys": [], "x": [', b"[" * 32 + b"]" * 32 + b",", b"1]}", n
    ),
    "brackets inside strings": lambda n: _fill(b'{"keys": [], "x": "', b"[{", b'"}', n),
    "many integers": lambda n: _fill(b'{"keys": [], "x": [', b"1,", b"1]}", n),
    "integers of 64 digits": lambda n: _fill(b'{"keys": [], "x": [', b"9" * 64 + b",", b"1]}", n),
    "one long integer": lambda n: _fill(b'{"keys": [], "x": ', b"9", b"}", n),
    "one long float": lambda n: _fill(b'{"keys": [], "x": 0.', b"1", b"}", n),
    "many floats": lambda n: _fill(b'{"keys": [], "x": [', b"1e9,", b"1]}", n),
    "string of escapes": lambda n: _fill(b'{"keys": [], "x": "', b"\\n", b'"}', n),
    "unicode escapes": lambda n: _fill(b'{"keys": [], "x": "', b"\\u00e9", b'"}', n),
    "surrogate pair escapes": lambda n: _fill(b'{"keys": [], "x": "', b"\\ud83d\\ude00", b'"}', n),
    "multibyte UTF-8": lambda n: _fill(b'{"keys": [], "x": "', "é".encode(), b'"}', n),
    "invalid UTF-8 at the end": lambda n: _fill(b'{"keys": [], "x": "', b"a", b'"}\xff', n),
    "many keys in one object": lambda n: _many_names(n),
    "one key repeated": lambda n: _fill(b'{"keys": [], ', b'"a": 0, ', b'"b": 0}', n),
    "many small objects": lambda n: _keys_of(b"{}", n),
    "many entries with a kid": lambda n: _keys_of(b'{"kty": "oct", "kid": "k"}', n),
    "many RSA entries": lambda n: _keys_of(
        b'{"kty": "RSA", "kid": "k", "n": "' + RSA_2048_N + b'", "e": "AQAB"}', n
    ),
    "32 entries with a long modulus": lambda n: _entries_with_long_member(b"", n),
    "32 entries with a long kid": lambda n: _long_kids(n),
    "whitespace": lambda n: _fill(b"", b" ", b'{"keys": []}', n),
}


def _many_names(size: int) -> bytes:
    """One object with as many distinct member names as fit."""
    names, used, index = [], 20, 0
    while used < size:
        name = b'"k%d": 0, ' % index
        names.append(name)
        used, index = used + len(name), index + 1
    return b'{"keys": [], ' + b"".join(names[:-1]) + b'"z": 0}'


def _long_kids(size: int, count: int = 32) -> bytes:
    """32 entries whose kids are as long as the size allows; each is skipped with a reason."""
    kid = b"k" * (size // count - 40)
    return b'{"keys": [' + b", ".join([b'{"kty": "oct", "kid": "' + kid + b'"}'] * count) + b"]}"


def check_and_parse(body: bytes) -> None:
    """What a refresh does with fetched bytes; a refusal is an answer too."""
    with suppress(InvalidKeySet):
        parse_jwks(body)


def cpu_seconds(call: Callable[[], object], rounds: int) -> float:
    """The least thread CPU time of ``rounds`` calls, with the collector out of the way."""
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        try:
            started = time.thread_time()
            call()
            best = min(best, time.thread_time() - started)
        finally:
            gc.enable()
    return best


@contextmanager
def pause_meter() -> Iterator[list[float]]:
    """Record the longest gap another thread of this process sees between 1 ms sleeps."""
    gaps: list[float] = [0.0]
    done = threading.Event()

    def tick() -> None:
        last = time.monotonic()
        while not done.is_set():
            time.sleep(0.001)
            now = time.monotonic()
            gaps[0] = max(gaps[0], now - last - 0.001)
            last = now

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    time.sleep(0.01)
    try:
        yield gaps
    finally:
        done.set()
        ticker.join()


def longest_pause(call: Callable[[], object]) -> float:
    """Seconds another thread was held up, at most, while call ran."""
    with pause_meter() as gaps:
        call()
    return gaps[0]


# Responses that make the HTTP parsers work: headers, interim responses, chunk framing.
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
RESPONSES: dict[str, tuple[bytes, bytes]] = {
    "endless 100 Continue": (b"", b"HTTP/1.1 100 Continue\r\n\r\n"),
    "headers of 1 KiB each": (b"HTTP/1.1 200 OK\r\n", b"X-Pad: " + b"x" * 1000 + b"\r\n"),
    "one endless header": (b"HTTP/1.1 200 OK\r\nX-Pad: ", b"x" * 1000),
    "header continuation lines": (b"HTTP/1.1 200 OK\r\nX-Pad: x\r\n", b" " + b"x" * 600 + b"\r\n"),
    "chunk extensions": (CHUNKED, b"1;" + b"x" * 60_000 + b"\r\n{\r\n"),
    "one-byte chunks": (CHUNKED, b"1\r\n \r\n"),
    "endless trailers": (CHUNKED + b"2\r\n{}\r\n0\r\n", b"X-Trailer: y\r\n"),
}


@contextmanager
def hostile_server(head: bytes, repeated: bytes) -> Iterator[str]:
    """A loopback server that sends head, then repeated until the client leaves."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(head)
                    while not stop.is_set():
                        conn.sendall(repeated)
                except OSError:
                    continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/jwks.json"
    finally:
        stop.set()
        listener.close()


def fetch_refused(url: str, size: int) -> str:
    """Fetch as a refresh would; the refusal's sentence."""
    try:
        fetch(url, deadline_seconds=5, max_bytes=size, allow_insecure=True)
    except FetchError as exc:
        return str(exc)
    return "accepted"


def report_bodies(size: int, rounds: int) -> None:
    """One line per body: its size, CPU time to check and parse, another thread's pause."""
    print(f"{'body':34} {'bytes':>7} {'CPU ms':>8} {'pause ms':>9}")
    for name, build in BODIES.items():
        body = build(size)
        assert len(body) <= size, name
        seconds = cpu_seconds(lambda body=body: check_and_parse(body), rounds)
        pause = longest_pause(lambda body=body: check_and_parse(body))
        print(f"{name:34} {len(body):7} {seconds * 1000:8.2f} {pause * 1000:9.2f}")


def report_responses(size: int, rounds: int) -> None:
    """One line per hostile response: CPU time of the fetch, its wall time, the refusal."""
    print(f"\n{'response':34} {'CPU ms':>7} {'wall ms':>8}  refusal")
    for name, (head, repeated) in RESPONSES.items():
        with hostile_server(head, repeated) as url:
            seconds = cpu_seconds(lambda url=url: fetch_refused(url, size), rounds)
            started = time.monotonic()
            refusal = fetch_refused(url, size)
            wall = time.monotonic() - started
        print(f"{name:34} {seconds * 1000:7.2f} {wall * 1000:8.1f}  {refusal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-kib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    size = options.size_kib * KIB
    report_bodies(size, options.rounds)
    report_responses(size, options.rounds)


if __name__ == "__main__":
    main()
