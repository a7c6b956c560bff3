"""platform/demo, the real script: it serves, and the commands it prints work in a new shell.

The demo runs in a temporary DEMO_HOME (its .env, db.sqlite3 and var/) on free ports, with a clean
environment: no SECRET_KEY, DEBUG, DATABASE_URL or REDIS_URL. Each "new shell" is a fresh process
with the same clean environment plus the one line the demo prints for a DEMO_HOME of its own.
"""

import json
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"  # the interpreter the printed commands name
PRINTED = "Stop with Ctrl-C."  # the last line the demo prints before it serves

# clean_state (conftest) clears the shared store, a database table on the embedded default.
pytestmark = [pytest.mark.demo, pytest.mark.django_db]


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_environment(**extra: str) -> dict[str, str]:
    """PATH and HOME only, plus these."""
    return {**{name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}, **extra}


@dataclass(frozen=True)
class Demo:
    """A running platform/demo: its process, its files and what it printed."""

    process: subprocess.Popen[bytes]
    home: Path
    port: int

    @property
    def output(self) -> str:
        """Everything the demo printed so far."""
        return (self.home / "demo.log").read_text()

    def url(self, path: str) -> str:
        """An address on the demo's server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def shell_environment(self) -> dict[str, str]:
        """A new shell's environment: the clean one, after the export line the demo printed."""
        exports = [line.split()[1:] for line in self.output.splitlines() if "  export " in line]
        assert len(exports) == 1, self.output
        return clean_environment(**dict(pair.split("=", 1) for pair in exports[0]))

    def manage(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """``.venv/bin/python manage.py ...`` in a new shell, as the demo prints it."""
        return subprocess.run(
            [str(PYTHON), "manage.py", *args],
            cwd=ROOT,
            env=self.shell_environment(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )


def wait_for(ready: Callable[[], bool], demo: Demo, what: str, timeout: float) -> None:
    """Poll until ready() holds; fail with the demo's output if it exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert demo.process.poll() is None, f"the demo exited before {what}:\n{demo.output}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n{demo.output}"
        time.sleep(0.1)


def serving(demo: Demo) -> bool:
    """Whether the demo's server answers the public endpoint."""
    try:
        return requests.get(demo.url("/t/demo/api/public"), timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def start_demo(home: Path) -> Demo:
    """Start platform/demo in its own process group, its output in ``home/demo.log``."""
    port, issuer_port = free_port(), free_port()
    environment = clean_environment(
        DEMO_HOME=str(home), DEMO_PORT=str(port), DEVISSUER_PORT=str(issuer_port)
    )
    with (home / "demo.log").open("wb") as log:
        process = subprocess.Popen(
            [str(ROOT / "platform" / "demo")],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the check below finds any child left behind
        )
    return Demo(process, home, port)


def group_alive(pgid: int) -> bool:
    """Whether any process of this process group still exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_demo(demo: Demo) -> None:
    """SIGINT to the demo alone: it must stop its issuer and server and exit."""
    pgid = demo.process.pid  # a session leader: its group's id is its pid
    try:
        demo.process.send_signal(signal.SIGINT)
        assert demo.process.wait(timeout=15) == 130, demo.output
        deadline = time.monotonic() + 5
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not group_alive(pgid), f"a child of the demo outlived it:\n{demo.output}"
    finally:
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)


def serving_demo(home: Path) -> Demo:
    """The demo started in ``home``, once it printed its commands and serves."""
    running = start_demo(home)
    try:
        # Generous: about 15 s on an idle machine, twice that on a busy one.
        wait_for(lambda: PRINTED in running.output, running, "printed commands", 60)
        wait_for(lambda: serving(running), running, "answer at /t/demo/api/public", 20)
    except BaseException:
        os.killpg(running.process.pid, signal.SIGKILL)
        raise
    return running


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo, started once: printed its commands, serving; stopped and checked after."""
    running = serving_demo(tmp_path_factory.mktemp("demo-home"))
    yield running
    stop_demo(running)


def test_the_demo_leaves_a_private_env_file_with_development_settings_only(demo):
    env_file = demo.home / ".env"
    lines = env_file.read_text().splitlines()
    settings = dict(line.split("=", 1) for line in lines if not line.startswith("#"))

    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert lines[0].startswith("# Written by platform/demo") and f"rm {env_file}" in lines[0]
    assert {name: settings[name] for name in settings if name != "SECRET_KEY"} == {
        "DEBUG": "true",
        "AUTHZ_ALLOW_INSECURE_ISSUERS": "true",
        "AUTHZ_INSECURE_ISSUERS_ACKNOWLEDGED": "true",
    }
    assert len(settings["SECRET_KEY"]) >= 50


def test_the_commands_the_demo_prints_work_in_a_new_shell(demo):
    minted = demo.manage("mint_token", "--tenant", "demo", "--scope", "read:messages")
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()

    scoped = requests.get(
        demo.url("/t/demo/api/private-scoped"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    exported = demo.manage("tenants", "export")

    assert scoped.status_code == 200, scoped.text
    assert exported.returncode == 0, exported.stderr
    assert [tenant["slug"] for tenant in json.loads(exported.stdout)["tenants"]] == ["demo"]


def test_the_dpop_call_the_demo_prints_works_in_a_new_shell(demo):
    printed = next(line for line in demo.output.splitlines() if "dpop_request" in line).split()
    command = printed[printed.index("dpop_request") + 1 :]

    called = demo.manage("dpop_request", *command)

    assert called.returncode == 0, called.stderr
    assert called.stdout.startswith("200 OK"), called.stdout
    assert "Hello from a private endpoint" in called.stdout


def test_the_api_pages_dpop_post_creates_a_message(demo):
    base = f"http://127.0.0.1:{demo.port}"
    posted = demo.manage(
        "dpop_request",
        "--tenant",
        "demo",
        "--base-url",
        base,
        "--scope",
        "write:messages",
        "POST",
        "/api/messages",
        "--data",
        '{"text": "hi"}',
    )

    assert posted.returncode == 0, posted.stderr
    assert posted.stdout.startswith("201 Created"), posted.stdout
    assert '"text": "hi"' in posted.stdout


def test_an_import_from_a_new_shell_reaches_the_running_demo_within_2_s(demo):
    exported = json.loads(demo.manage("tenants", "export").stdout)
    tenant = exported["tenants"][0]
    assert requests.get(demo.url("/t/demo/api/public"), timeout=5).status_code == 200

    imported = demo.manage(
        "tenants", "import", "-", stdin=json.dumps({"tenants": [{**tenant, "active": False}]})
    )
    assert imported.returncode == 0, imported.stderr
    changed_at = time.monotonic()
    while requests.get(demo.url("/t/demo/api/public"), timeout=5).status_code == 200:
        assert time.monotonic() - changed_at < 2.0, "the server still serves the inactive tenant"
        time.sleep(0.05)
    seconds = time.monotonic() - changed_at

    answer = requests.get(demo.url("/t/demo/api/public"), timeout=5)
    assert (answer.status_code, answer.json()["code"]) == (404, "tenant_not_found")
    restored = demo.manage("tenants", "import", "-", stdin=json.dumps({"tenants": [tenant]}))
    assert restored.returncode == 0, restored.stderr
    assert seconds < 2.0
