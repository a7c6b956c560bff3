"""Logs as one JSON object per line, for Django, Celery and gunicorn alike.

Importable without Django set up: gunicorn's master process loads it from its config file.
"""

import logging
from collections.abc import Mapping
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonLineFormatter(JsonFormatter):
    """Time, level, logger, message and process, then every ``extra`` field of the record."""

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message", "process"],
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
            # Django passes the HttpRequest as ``extra``; its repr holds the query string,
            # where a client may have put an access token.
            reserved_attrs=[*RESERVED_ATTRS, "request"],
        )


class GunicornAccessFields(logging.Filter):
    """Turns gunicorn's access record into fields; the query string and headers stay out."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the formatted access line by method, path, status, latency and client."""
        atoms = record.args if isinstance(record.args, Mapping) else {}
        if atoms:
            record.event = "http_access"
            record.method = atoms["m"]
            record.path = atoms["U"]
            record.status = int(atoms["s"]) if str(atoms["s"]).isdigit() else atoms["s"]
            record.latency_ms = round(atoms["D"] / 1000, 1)
            record.remote_addr = atoms["h"]
            record.response_bytes = atoms["B"]
            record.msg, record.args = f"{atoms['m']} {atoms['U']} {atoms['s']}", ()
        return True


def logging_config(level: str, json_lines: bool = True) -> dict[str, Any]:
    """The ``dictConfig`` of every process: one stderr handler on the root logger."""
    formatter = {"()": JsonLineFormatter} if json_lines else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "default"}},
        "root": {"handlers": ["console"], "level": level.upper()},
        # Each API request already logs one line with its status; keep only server errors here.
        # axes.apps: one "BEGIN" line per process start, noise in every manage.py command.
        "loggers": {"django.request": {"level": "ERROR"}, "axes.apps": {"level": "WARNING"}},
    }


def gunicorn_logging_config(level: str) -> dict[str, Any]:
    """``logconfig_dict`` for gunicorn: its error and access logs as JSON lines too."""
    config = logging_config(level)
    config["filters"] = {"access_fields": {"()": GunicornAccessFields}}
    config["handlers"]["access"] = {**config["handlers"]["console"], "filters": ["access_fields"]}
    config["loggers"] = {
        "gunicorn.error": {"handlers": ["console"], "level": level.upper(), "propagate": False},
        "gunicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    }
    return config
