"""Where a web role's processes write their Prometheus figures (prometheus-client multiprocess).

No prometheus-client import here: PROMETHEUS_MULTIPROC_DIR must be set before it is first
imported. Each gunicorn gets its own directory under METRICS_DIR (default: a tmpfs), named by
host and port so that servers on one host never share one, emptied when the server starts.
"""

import os
import shutil
import socket
import tempfile
from pathlib import Path


def metrics_root() -> Path:
    """METRICS_DIR, else a directory on /dev/shm (memory), else in the temporary directory."""
    if os.environ.get("METRICS_DIR"):
        return Path(os.environ["METRICS_DIR"])
    base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()  # noqa: S108
    return Path(base) / "authz-metrics"


def prepare_web() -> Path:
    """Empty this server's directory and point prometheus-client at it, for the gunicorn master
    and the workers it forks (call it before any prometheus-client import)."""
    name = f"web-{socket.gethostname()}-{os.environ.get('PORT', '8000')}"
    directory = metrics_root() / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory
