"""App config for token verification and key sets."""

from django.apps import AppConfig


class AuthzConfig(AppConfig):
    """Registers the system checks and the provisioned users' delete receiver."""

    name = "authz"
    verbose_name = "Token authorization"

    def ready(self) -> None:
        from authz import checks, users  # noqa: F401 - registers the checks and receivers
