"""``manage.py mint_token --tenant SLUG``: an access token from the tenant's development issuer."""

from argparse import ArgumentParser
from typing import Any

import requests
from django.core.management.base import BaseCommand, CommandError

from tenants.models import Tenant


class Command(BaseCommand):
    """Ask the tenant's issuer (the development issuer) for a token and print it."""

    help = "Print an access token for a tenant whose issuer is the development issuer."

    def add_arguments(self, parser: ArgumentParser) -> None:
        """Tenant, scope, subject, lifetime and audience."""
        parser.add_argument("--tenant", required=True, help="Tenant slug.")
        parser.add_argument("--scope", default="", help='Space-separated, e.g. "read:messages".')
        parser.add_argument("--sub", default=None, help="Token subject (default: a client id).")
        parser.add_argument("--expires-in", type=int, default=3600, help="Lifetime in seconds.")
        parser.add_argument("--audience", default=None, help="Default: the tenant's first.")

    def handle(self, *args: Any, **options: Any) -> None:
        """Mint and print the token alone, so it can be captured by a shell."""
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant {options['tenant']!r}: see `manage.py tenants export`.")
        audience = (
            options["audience"] or tenant.audiences.values_list("audience", flat=True).first()
        )
        request = {"audience": audience, "expires_in": options["expires_in"]}
        request.update({k: options[k] for k in ("scope", "sub") if options[k]})
        self.stdout.write(self._mint(tenant.issuer, request))

    def _mint(self, issuer: str, request: dict[str, Any]) -> str:
        url = f"{issuer.rstrip('/')}/oauth/token"
        try:
            response = requests.post(url, json=request, timeout=5)
            response.raise_for_status()
            return response.json()["access_token"]
        except (requests.RequestException, ValueError, KeyError) as exc:
            raise CommandError(
                f"The issuer at {url} did not mint a token ({exc}). Is this tenant bound to the "
                "development issuer, and is `python manage.py devissuer` running?"
            ) from exc
