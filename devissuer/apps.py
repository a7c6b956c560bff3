"""The development issuer's app: its commands (devissuer, mint_token); production never needs it."""

from django.apps import AppConfig


class DevIssuerConfig(AppConfig):
    """Runs local issuers that mint tokens, so nobody needs an Auth0 account to try or test."""

    name = "devissuer"
    verbose_name = "Development issuer"
