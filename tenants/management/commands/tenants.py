"""``manage.py tenants import FILE.json`` and ``manage.py tenants export``: config as code."""

import json
from argparse import ArgumentParser, FileType
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from tenants.config_io import TenantImportError, export_tenants, import_tenants


class Command(BaseCommand):
    """Import or export tenants as JSON."""

    help = "Import tenants from JSON (all or nothing, upsert by slug) or export them."

    def add_arguments(self, parser: ArgumentParser) -> None:
        """Two subcommands: import FILE and export."""
        actions = parser.add_subparsers(dest="action", required=True)
        importer = actions.add_parser("import", help="Create or update tenants from a file.")
        importer.add_argument("file", type=FileType("r"), help="JSON file, or - for stdin.")
        actions.add_parser("export", help="Print every tenant as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the chosen subcommand."""
        if options["action"] == "export":
            self.stdout.write(json.dumps(export_tenants(), indent=2))
            return
        try:
            with options["file"] as file:
                document = json.load(file)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{options['file'].name} is not valid JSON: {exc}") from exc
        try:
            summary = import_tenants(document, progress=self._progress)
        except TenantImportError as exc:
            for error in exc.errors:
                self.stderr.write(f"  {error}")
            raise CommandError("Nothing was imported: fix the problems above.") from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {summary.created + summary.updated} tenant(s): {summary.created} "
                f"created, {summary.updated} updated; {summary.key_sets} key set(s) to refresh."
            )
        )

    def _progress(self, done: int, total: int) -> None:
        self.stderr.write(f"  {done}/{total} tenants checked")
