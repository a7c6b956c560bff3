"""gunicorn reads this file when started from the project root (``gunicorn config.wsgi``).

It prepares this server's metrics directory as it is read, before any worker forks and before a
``--preload`` master imports the application, so /metrics adds up every worker. Deployments use
platform/gunicorn.conf.py, which does the same and configures the rest from the environment.
"""

from ops.metrics_dir import prepare_web

prepare_web()
