"""Driving one scenario from a separate process: Debian's wrk when installed, else pyload.py."""

import json
import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.stack import PYTHON

HERE = Path(__file__).resolve().parent
WRK_THREADS = 1  # one event loop keeps a 2-core server busy; the rest of the CPU is the server's
CONNECTIONS = 4  # two sync workers, each with one request queued behind the one it serves


@dataclass(frozen=True)
class Load:
    """What a load generator measured over one timed run."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    unexpected_status: int
    reused: int

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        """Socket errors plus responses whose status was not the expected one."""
        return self.socket_errors + self.unexpected_status


def generator() -> str:
    """wrk when installed, unless BENCH_LOAD_GENERATOR=python asks for the fallback."""
    wanted = os.environ.get("BENCH_LOAD_GENERATOR", "wrk")
    return "wrk" if wanted == "wrk" and shutil.which("wrk") else "python"


def drive(
    base_url: str,
    lines: list[tuple[str, ...]],
    expect: int,
    seconds: int,
    workdir: Path,
    connections: int = CONNECTIONS,
) -> Load:
    """Send ``lines`` (path, Authorization) in a loop for ``seconds``; expect ``expect``."""
    requests_file = write_requests(workdir, lines)
    if generator() == "wrk":
        argv = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
        argv += ["-s", str(HERE / "scenario.lua"), base_url]
    else:
        argv = pyload_argv(base_url, requests_file, expect, seconds, connections)
    return run(argv, requests_file, expect, seconds + 60)


def drive_once(
    base_url: str, lines: list[tuple[str, ...]], expect: int, workdir: Path, timeout: int = 900
) -> Load:
    """Send every line once (pyload.py: each connection sends its share once), then stop."""
    requests_file = write_requests(workdir, lines)
    argv = pyload_argv(base_url, requests_file, expect, timeout)
    argv += ["--most", str(math.ceil(len(lines) / CONNECTIONS))]
    return run(argv, requests_file, expect, timeout + 60)


def write_requests(workdir: Path, lines: list[tuple[str, ...]]) -> Path:
    """The request file the load generators read: "path<TAB>authorization[<TAB>DPoP proof
    [<TAB>headers]]", headers as "Name: value" pairs joined by "|"."""
    requests_file = workdir / "requests.tsv"
    requests_file.write_text("".join("\t".join(line) + "\n" for line in lines))
    return requests_file


def pyload_argv(
    base_url: str, requests_file: Path, expect: int, seconds: int, connections: int = CONNECTIONS
) -> list[str]:
    """The command line of the Python load generator."""
    argv = [PYTHON, str(HERE / "pyload.py"), base_url, "--requests-file", str(requests_file)]
    argv += ["--expect", str(expect), "--seconds", str(seconds)]
    return [*argv, "--connections", str(connections)]


def run(argv: list[str], requests_file: Path, expect: int, timeout: int) -> Load:
    """Run a load generator to completion; return the RESULT line it printed."""
    env = {
        **os.environ,
        "BENCH_REQUESTS": str(requests_file),
        "BENCH_EXPECT": str(expect),
        "BENCH_THREADS": str(WRK_THREADS),
    }
    # Our own argv: wrk or this interpreter, with paths and numbers we made.
    done = subprocess.run(  # noqa: S603
        argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return Load(**json.loads(line.removeprefix("RESULT ")))
    raise RuntimeError(f"{argv[0]} printed no result:\n{done.stdout}\n{done.stderr}")
