"""Ours against the peer (bench/peer), CPU per request in-process: steadier than req/s on a
shared machine.

Sets up the redis mode as ``bench/inprocess.py`` does, then, round after round, starts one
process serving ours (``config.wsgi``) and one serving the peer (``apiexample.wsgi``, from
``bench/peer`` with only its own environment), each calling its WSGI application straight for
``public``, ``scoped_repeat`` and ``scoped_distinct`` (tokens that process never saw) after a
warm-up, and prints the best CPU µs per request of each, and the peer's over ours (the req/s
ratio an idle machine would show, without the load generator and sockets).

    .venv/bin/python -m bench.versus_peer [--rounds 5] [--requests 2000]
"""

import argparse
import json
import subprocess
import sys
from typing import Any

from bench.bench import add_tenants
from bench.fixtures import Tokens, issuer_name, public_path, say, scoped_path, slug
from bench.stack import PEER_DIR, PYTHON, ROOT, Stack, peer_env, start_platform

SCENARIOS = ("public", "scoped_repeat", "scoped_distinct")


def lines_of(tokens: Tokens, ours: bool, requests: int) -> dict[str, Any]:
    """Each scenario's (path, authorization) lines, warm-up lines first, as one side sends them."""
    public = public_path(0) if ours else "/api/public"
    scoped = scoped_path(0) if ours else "/api/private-scoped"
    return {
        "warm": [(scoped, tokens.bearer(0)) for _ in range(50)] + [(public, "")],
        "public": [(public, "")],
        "scoped_repeat": [(scoped, tokens.bearer(0))],
        "scoped_distinct": [(scoped, tokens.bearer(0)) for _ in range(requests)],
    }


def one_side(env: dict[str, str], cwd: str, app: str, lines: dict, requests: int) -> dict:
    """Run the loop in a fresh process serving ``app``; return its µs per request by scenario."""
    job = json.dumps({"app": app, "lines": lines, "requests": requests})
    done = subprocess.run(  # noqa: S603 - this interpreter, our own loop
        [PYTHON, "-c", LOOP],
        input=job,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise RuntimeError(f"{app} loop failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")


# What each side's process runs: bench.inprocess's caller over its own WSGI application.
LOOP = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
job = json.load(sys.stdin)
from importlib import import_module
module, name = job["app"].split(":")
app = getattr(import_module(module), name)
from bench.inprocess import caller, cpu_microseconds
call = caller(app, 200)
cpu_microseconds(call, job["lines"]["warm"], len(job["lines"]["warm"]))
result = {{}}
for scenario in {list(SCENARIOS)!r}:
    lines = job["lines"][scenario]
    result[scenario] = cpu_microseconds(call, lines, job["requests"])
print("RESULT " + json.dumps(result))
"""


def main() -> None:
    """Set up, alternate rounds of ours and the peer's, print the best of each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with Stack() as stack:
        plat = start_platform(stack, "redis")
        add_tenants(plat, 10)
        tokens = Tokens(stack.workdir / "keys", plat.issuer_url)
        ours_env = {**plat.env, "DJANGO_SETTINGS_MODULE": "config.settings"}
        peer = peer_env(f"{plat.issuer_url}/{issuer_name(0)}/", f"https://api.{slug(0)}.test")
        best: dict[str, dict[str, float]] = {"ours": {}, "peer": {}}
        for number in range(args.rounds):
            say(f"round {number + 1} of {args.rounds}")
            for side, env, cwd, app in (
                ("ours", ours_env, str(ROOT), "config.wsgi:application"),
                ("peer", peer, str(PEER_DIR), "apiexample.wsgi:application"),
            ):
                lines = lines_of(tokens, side == "ours", args.requests)
                for scenario, cost in one_side(env, cwd, app, lines, args.requests).items():
                    best[side][scenario] = min(cost, best[side].get(scenario, cost))
        for scenario in SCENARIOS:
            ours, peer = best["ours"][scenario], best["peer"][scenario]
            print(
                f"{scenario:16s} ours {ours:7.1f} µs  peer {peer:7.1f} µs  "
                f"peer / ours {peer / ours:.3f}",
                file=sys.stdout,
                flush=True,
            )


if __name__ == "__main__":
    main()
