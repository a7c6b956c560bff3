"""gunicorn for the web role, configured from the environment (run by platform/start-web)."""

import os

from ops.logging import gunicorn_logging_config
from ops.metrics_dir import prepare_web

# BIND_ADDRESS stays 0.0.0.0 in a container; natively, 127.0.0.1.
bind = [f"{os.environ.get('BIND_ADDRESS', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"]  # noqa: S104
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
timeout = int(os.environ.get("WEB_TIMEOUT", "30"))
graceful_timeout = 20
# Above the usual proxy idle timeout, so the proxy closes idle connections first.
keepalive = 75
# Worker heartbeats in memory: on a container's overlay filesystem they can stall the workers.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - not a temp file

# One server per container, managed by its orchestrator: no control socket in $HOME.
control_socket_disable = True

accesslog = "-"
loglevel = os.environ.get("LOG_LEVEL", "INFO").lower()
logconfig_dict = gunicorn_logging_config(loglevel)

# As the file is read: before a --preload master imports the application (on_starting is later).
prepare_web()
