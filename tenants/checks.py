"""System checks on the tenants app's settings that are not the rate limiter's."""

from django.conf import settings
from django.core.checks import Error, register

MIN_PROXY_SECRET = 32


@register()
def proxy_secret_check(app_configs: object, **kwargs: object) -> list[Error]:
    """A forward-auth secret short enough to guess would let anyone forge forwarded headers."""
    secret = settings.AUTHZ_PROXY_SECRET
    if not secret or len(secret) >= MIN_PROXY_SECRET:
        return []
    message = (
        f"AUTHZ_PROXY_SECRET has {len(secret)} characters: use at least {MIN_PROXY_SECRET}, e.g. "
        "the output of: python -c 'import secrets; print(secrets.token_urlsafe(32))'."
    )
    return [Error(message, id="tenants.E003")]
