"""App config for tenants."""

from django.apps import AppConfig


class TenantsConfig(AppConfig):
    """Connects the signals that keep every process's tenant directory current."""

    name = "tenants"

    def ready(self) -> None:
        from tenants import signals  # noqa: F401 - connects the receivers
