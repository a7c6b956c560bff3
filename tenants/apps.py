"""App config for tenants."""

from django.apps import AppConfig


class TenantsConfig(AppConfig):
    """Connects the signals that keep every process's tenant directory current."""

    name = "tenants"

    def ready(self) -> None:
        from corsheaders.signals import check_request_enabled

        from tenants import checks, ratelimit, signals  # noqa: F401 - receivers, checks
        from tenants.cors import origin_allowed_for_tenant

        check_request_enabled.connect(origin_allowed_for_tenant)
