"""Where a web server's processes write their Prometheus figures (prometheus-client multiprocess).

No prometheus-client import here: PROMETHEUS_MULTIPROC_DIR must be set before it is first
imported. gunicorn reads its config file before it loads the application (also with
``--preload``), and both config files (``./gunicorn.conf.py``, read by default from the project
root, and ``platform/gunicorn.conf.py``) call ``prepare_web()`` as they are read. Each server gets
an empty directory of its own under METRICS_DIR (default: a tmpfs), ``web-<host>-<master pid>``,
so two servers on one host never share one; directories of servers no longer running are removed
then. ``check_web_process()`` refuses to serve under a gunicorn that did not prepare one.
"""

import inspect
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
OWNER = "METRICS_DIR_OWNER"  # the pid of the gunicorn master that prepared MULTIPROC_DIR
UNPREPARED = (
    "/metrics would count only the worker that answers it: this gunicorn did not prepare its "
    "metrics directory ({reason}). Start gunicorn from the project root, whose gunicorn.conf.py "
    "prepares it, or with -c platform/gunicorn.conf.py (or call ops.metrics_dir.prepare_web() "
    "in your own config file), and in the foreground: --daemon forks after reading the config."
)


def metrics_root() -> Path:
    """METRICS_DIR, else a directory on /dev/shm (memory), else in the temporary directory."""
    if os.environ.get("METRICS_DIR"):
        return Path(os.environ["METRICS_DIR"])
    base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()  # noqa: S108
    return Path(base) / "authz-metrics"


def server_dir(master_pid: int) -> Path:
    """The directory of the gunicorn whose master is ``master_pid``, on this host."""
    return metrics_root() / f"web-{socket.gethostname()}-{master_pid}"


def prepare_web() -> Path:
    """Give this gunicorn (this process is its master) an empty directory, and point
    prometheus-client at it, for the master and the workers it forks."""
    pid = os.getpid()
    directory = server_dir(pid)
    if os.environ.get(OWNER) == str(pid) and directory.is_dir():
        return directory  # the config is read again on a reload (HUP): keep the counts
    remove_dead_servers()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROC_DIR] = str(directory)
    os.environ[OWNER] = str(pid)
    return directory


def remove_dead_servers() -> None:
    """Remove the directories of this host's servers whose master is no longer running."""
    prefix = f"web-{socket.gethostname()}-"
    root = metrics_root()
    if not root.is_dir():
        return
    for directory in root.iterdir():
        pid = directory.name.removeprefix(prefix)
        if directory.name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(directory, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


def gunicorn_role() -> str | None:
    """``master`` or ``worker`` while gunicorn loads the application in this process, else None."""
    modules = set()
    frame = inspect.currentframe()
    while frame is not None:
        modules.add(frame.f_globals.get("__name__", ""))
        frame = frame.f_back
    if any(module.startswith("gunicorn.workers.") for module in modules):
        return "worker"  # forked by the master: its frames are below the worker's
    return "master" if "gunicorn.arbiter" in modules else None


def forks_workers() -> bool:
    """Whether this process is a gunicorn master loading the application (``--preload``)."""
    return gunicorn_role() == "master"


def check_web_process() -> None:
    """Refuse to load the application in a gunicorn that did not prepare this server's directory.

    Only gunicorn is checked: runserver serves from one process, whose own figures are all of
    them. Any gunicorn is, even ``-w 1``: it adds workers on TTIN and replaces them as they exit.
    """
    role = gunicorn_role()
    if role is None:
        return
    master = os.getpid() if role == "master" else os.getppid()
    reason = _unprepared_reason(master)
    if reason:
        raise ImproperlyConfigured(UNPREPARED.format(reason=reason))


def _unprepared_reason(master: int) -> str:
    owner = os.environ.get(OWNER)
    if owner is None:
        return f"{OWNER} is not set"
    if owner != str(master) or os.environ.get(MULTIPROC_DIR) != str(server_dir(master)):
        return f"it was prepared by process {owner}, and this server's master is {master}"
    values = sys.modules.get("prometheus_client.values")
    if values is not None and values.ValueClass is values.MutexValue:
        return "prometheus_client was imported before the directory was set"
    return ""
