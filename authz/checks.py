"""System checks: refuse insecure issuers in production unless explicitly acknowledged."""

from django.conf import settings
from django.core.checks import Error, register

from authz.conf import authz_settings


@register()
def insecure_issuers_check(app_configs: object, **kwargs: object) -> list[Error]:
    """Fail when http/loopback issuers are allowed with DEBUG off and nobody said it is meant."""
    if not authz_settings.ALLOW_INSECURE_ISSUERS or settings.DEBUG:
        return []
    if authz_settings.INSECURE_ISSUERS_ACKNOWLEDGED:
        return []
    return [
        Error(
            "AUTHZ_ALLOW_INSECURE_ISSUERS is on while DEBUG is off: tenants could trust http "
            "or loopback issuers in production.",
            hint="Unset AUTHZ_ALLOW_INSECURE_ISSUERS, or set "
            "AUTHZ_INSECURE_ISSUERS_ACKNOWLEDGED=true if this is a test deployment.",
            id="authz.E001",
        )
    ]
