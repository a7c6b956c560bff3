"""Races between real processes that surely overlap: a loopback gate, and the proof they raced.

A start time agreed in advance does not make processes race on a loaded machine: one may still
be importing Django when another has finished. Racers instead connect to a gate (a tiny TCP
server of the test) and block until every racer has connected; the gate then releases them all
at once. Each racer reports when it started and ended its racing part, and the test asserts
that those intervals share a moment: the racers were in flight at the same time.

In a racer (a ``manage.py shell -c`` process started with ``RACE_GATE`` in its environment)::

    from tests.racing import wait_at_gate, report
    started = wait_at_gate()
    ...  # the racing part
    report(started)
"""

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

GATE = "RACE_GATE"
INTERVAL_MARK = "raced:"


def wait_at_gate() -> float:
    """Block until every racer waits at the gate of ``RACE_GATE``; the time of release."""
    host, port = os.environ[GATE].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=120) as connection:
        if connection.recv(1) != b"!":
            raise RuntimeError("the gate closed before every racer arrived")
    return time.time()


def report(started: float) -> None:
    """Print the racing part's interval, for ``intervals`` to read from the output."""
    print(f"{INTERVAL_MARK}{started!r},{time.time()!r}", flush=True)


def intervals(output: str) -> tuple[float, float]:
    """The (start, end) a racer reported in its output."""
    (line,) = [line for line in output.splitlines() if line.startswith(INTERVAL_MARK)]
    start, end = line.removeprefix(INTERVAL_MARK).split(",")
    return float(start), float(end)


def without_intervals(output: str) -> str:
    """A racer's output without the interval it reported."""
    return "\n".join(line for line in output.splitlines() if not line.startswith(INTERVAL_MARK))


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of spans that share one moment."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, change in events:  # at a tie an end comes first: touching spans do not overlap
        running += change
        most = max(most, running)
    return most


def assert_overlapped(spans: list[tuple[float, float]], together: int | None = None) -> None:
    """Some moment lies in ``together`` of the spans (default: in every span)."""
    together = len(spans) if together is None else together
    assert most_at_once(spans) >= together, f"fewer than {together} raced at once: {sorted(spans)}"


@contextmanager
def gate(racers: int, timeout: float = 90) -> Iterator[dict[str, str]]:
    """A gate for ``racers`` processes: yields the environment entry that names it."""
    server = socket.create_server(("127.0.0.1", 0), backlog=racers)
    server.settimeout(0.2)
    arrived: list[socket.socket] = []
    done = threading.Event()
    args = (server, racers, arrived, done, time.monotonic() + timeout)
    opener = threading.Thread(target=_open_when_full, args=args, daemon=True)
    opener.start()
    try:
        yield {GATE: f"127.0.0.1:{server.getsockname()[1]}"}
    finally:
        done.set()  # racers that never came (they failed first) are not waited for
        opener.join(timeout=5)
        server.close()
        for connection in arrived:
            connection.close()
    if len(arrived) < racers:
        pytest.fail(f"only {len(arrived)} of {racers} racers reached the gate")


def _open_when_full(
    server: socket.socket,
    racers: int,
    arrived: list[socket.socket],
    done: threading.Event,
    deadline: float,
) -> None:
    while len(arrived) < racers:
        if done.is_set() or time.monotonic() > deadline:
            for connection in arrived:  # the racers that came read an empty answer and stop
                connection.close()
            return
        try:
            arrived.append(server.accept()[0])
        except TimeoutError:
            continue
    for connection in arrived:
        connection.sendall(b"!")
