"""``manage.py dpop_request --tenant SLUG GET /api/private``: one API call made the DPoP way.

It makes a fresh key, gets a token bound to it from the tenant's development issuer, sends the
request with a proof of that key (and, when the API asks for one, again with its nonce), and
prints what the API answered.
"""

import json
from argparse import ArgumentParser
from typing import Any

import requests
from django.core.management.base import BaseCommand, CommandError

from devissuer import dpop
from devissuer.management.commands.mint_token import request_token
from tenants.models import Tenant

SHOWN_HEADERS = ("WWW-Authenticate", "DPoP-Nonce", "Location")


class Command(BaseCommand):
    """Call a tenant's API with a DPoP-bound token and a fresh proof, and print the answer."""

    help = "Call a tenant's API with a DPoP-bound token from the development issuer."

    def add_arguments(self, parser: ArgumentParser) -> None:
        """Tenant, method, path, and what the token and request carry."""
        parser.add_argument("--tenant", required=True, help="Tenant slug.")
        parser.add_argument("method", help="GET, POST or DELETE.")
        parser.add_argument("path", help="Path under the tenant, e.g. /api/private.")
        parser.add_argument("--scope", default="", help='Space-separated, e.g. "read:messages".')
        parser.add_argument("--data", default=None, help='JSON body, e.g. \'{"text": "hi"}\'.')
        parser.add_argument(
            "--base-url", default="http://127.0.0.1:8000", help="Where the platform listens."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Mint a bound token, call the API with a proof, print status, headers and body."""
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant {options['tenant']!r}: see `manage.py tenants export`.")
        key = dpop.new_key()
        audience = tenant.audiences.values_list("audience", flat=True).first()
        request = {"audience": audience}
        if options["scope"]:
            request["scope"] = options["scope"]
        token = request_token(tenant.issuer, request, key)
        method = options["method"].upper()
        path = "/" + options["path"].lstrip("/")
        url = f"{options['base_url'].rstrip('/')}/t/{tenant.slug}{path}"
        response = self._send(method, url, token, key, options["data"], nonce=None)
        nonce = response.headers.get("DPoP-Nonce")
        if (
            response.status_code == 401
            and nonce
            and "use_dpop_nonce" in response.headers.get("WWW-Authenticate", "")
        ):
            self.stdout.write(f"(the API asked for its nonce; sending again with {nonce})")
            response = self._send(method, url, token, key, options["data"], nonce=nonce)
        self._print(response)

    def _send(
        self, method: str, url: str, token: str, key: Any, data: str | None, nonce: str | None
    ) -> requests.Response:
        headers = {
            "Authorization": f"DPoP {token}",
            "DPoP": dpop.make_proof(key, method, url, access_token=token, nonce=nonce),
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            return requests.request(method, url, headers=headers, data=data, timeout=10)
        except requests.RequestException as exc:
            raise CommandError(f"{url} did not answer ({exc}). Is the platform running?") from exc

    def _print(self, response: requests.Response) -> None:
        self.stdout.write(f"{response.status_code} {response.reason}")
        for name in SHOWN_HEADERS:
            if name in response.headers:
                self.stdout.write(f"{name}: {response.headers[name]}")
        try:
            self.stdout.write(json.dumps(response.json(), indent=2))
        except ValueError:
            self.stdout.write(response.text)
