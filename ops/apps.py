"""The operations app."""

from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Health probes, request logging and deployment commands."""

    name = "ops"
    verbose_name = "Operations"
