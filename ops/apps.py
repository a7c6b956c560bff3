"""The operations app."""

from django.apps import AppConfig
from django.db.models.signals import post_migrate

from ops.cache import create_cache_table


class OpsConfig(AppConfig):
    """Health probes, request logging, deployment commands and the database cache's table."""

    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        """Create the database cache's table after each migrate, so a plain migrate sets up all."""
        post_migrate.connect(create_cache_table, sender=self)
