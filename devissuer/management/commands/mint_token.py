"""``manage.py mint_token --tenant SLUG``: an access token from the tenant's development issuer."""

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

import requests
from django.core.management.base import BaseCommand, CommandError

from devissuer import dpop
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
        parser.add_argument(
            "--dpop-key",
            type=Path,
            default=None,
            help="PEM private key to bind the token to (DPoP, cnf.jkt); made when missing.",
        )
        parser.add_argument("--org", default=None, help="Auth0 organization id (org_id claim).")
        parser.add_argument(
            "--profile",
            choices=["auth0", "rfc9068"],
            default="auth0",
            help="rfc9068: typ at+jwt, with client_id and jti.",
        )

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
        if options["org"]:
            request["org_id"] = options["org"]
        if options["profile"] != "auth0":
            request["profile"] = options["profile"]
        key = self._dpop_key(options["dpop_key"]) if options["dpop_key"] else None
        self.stdout.write(request_token(tenant.issuer, request, key))

    def _dpop_key(self, path: Path) -> Any:
        if not path.exists():
            dpop.save_key(dpop.new_key(), path)
            self.stderr.write(f"Made a new DPoP key in {path}.")
        try:
            return dpop.load_key(path)
        except (ValueError, TypeError, OSError) as exc:
            raise CommandError(f"{path} is not a PEM private key ({exc}).") from exc


def request_token(issuer: str, request: dict[str, Any], key: Any = None) -> str:
    """A token from the issuer's token endpoint, bound to ``key`` (DPoP) when one is given."""
    url = f"{issuer.rstrip('/')}/oauth/token"
    headers = {"DPoP": dpop.make_proof(key, "POST", url)} if key is not None else {}
    try:
        response = requests.post(url, json=request, headers=headers, timeout=5)
        response.raise_for_status()
        return response.json()["access_token"]
    except (requests.RequestException, ValueError, KeyError) as exc:
        raise CommandError(
            f"The issuer at {url} did not mint a token ({exc}). Is this tenant bound to the "
            "development issuer, and is `python manage.py devissuer` running?"
        ) from exc
