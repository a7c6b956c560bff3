"""A Python load generator for machines without wrk: scenario.lua's request file and RESULT line.

Each of ``--connections`` processes sends one request at a time, in a loop bounded by a deadline
and a request count, and takes every Nth line of the request file from its own offset.
Latency is measured like wrk's: from sending the request to reading the whole response, after
the connection is open.
"""

import argparse
import http.client
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Tally:
    """What one load process saw."""

    latencies: list[float] = field(default_factory=list)
    socket_errors: int = 0
    unexpected_status: int = 0
    reused: int = 0
    seconds: float = 0.0


def read_lines(path: str) -> list[tuple[str, str, str, str]]:
    """The (path, authorization, DPoP proof, headers) lines of a request file ("" when absent)."""
    with open(path) as file:
        return [tuple((line.rstrip("\n") + "\t\t\t").split("\t")[:4]) for line in file]


def one_request(
    connection: http.client.HTTPConnection, path: str, auth: str, proof: str = "", extra: str = ""
) -> int:
    """Send one GET on an open connection and read the whole response; return its status."""
    headers = {"Authorization": auth} if auth else {}
    if proof:
        headers["DPoP"] = proof
    headers.update(pair.split(": ", 1) for pair in extra.split("|") if pair)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    response.read()
    if response.will_close:
        connection.close()  # the next request() reconnects
    return response.status


def drive(url: str, share: list[tuple], expect: int, seconds: float, most: int) -> Tally:
    """Send requests from ``share`` in a loop until the deadline or ``most`` requests."""
    target = urlsplit(url)
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
    tally, started = Tally(), time.monotonic()
    deadline = started + seconds
    for sent in range(most):
        if time.monotonic() >= deadline:
            break
        tally.reused += sent >= len(share)
        try:
            if connection.sock is None:
                connection.connect()
            sending = time.perf_counter()
            status = one_request(connection, *share[sent % len(share)])
        except OSError:
            tally.socket_errors += 1
            connection.close()
            continue
        tally.latencies.append(time.perf_counter() - sending)
        tally.unexpected_status += status != expect
    connection.close()
    tally.seconds = time.monotonic() - started
    return tally


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values, in milliseconds."""
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] * 1000


def main() -> None:
    """Run the load and print the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--requests-file", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--most", type=int, default=1_000_000, help="requests per connection")
    args = parser.parse_args()
    lines, n = read_lines(args.requests_file), args.connections
    with ProcessPoolExecutor(n) as pool:
        futures = [
            pool.submit(drive, args.url, lines[k::n] or lines, args.expect, args.seconds, args.most)
            for k in range(n)
        ]
        tallies = [future.result() for future in futures]
    ordered = sorted(latency for tally in tallies for latency in tally.latencies)
    counts = ("socket_errors", "unexpected_status", "reused")
    result = {
        "requests": len(ordered),
        "seconds": round(max(tally.seconds for tally in tallies), 3),
        "p50_ms": round(percentile(ordered, 0.50), 3),
        "p99_ms": round(percentile(ordered, 0.99), 3),
        **{key: sum(getattr(tally, key) for tally in tallies) for key in counts},
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
