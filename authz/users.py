"""Django users for token subjects, for tenants that ask for them."""

import hashlib
from functools import lru_cache

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

USERNAME_MAX_LENGTH = 150


def username_for(tenant_slug: str, subject: str) -> str:
    """The quickstart's mapping (``|`` becomes ``.``), prefixed by tenant.

    The ``:`` separator cannot occur in usernames made through Django's forms, so a provisioned
    user can never collide with an operator's account, nor with another tenant's subject.
    """
    username = f"{tenant_slug}:{subject.replace('|', '.')}"
    if len(username) > USERNAME_MAX_LENGTH:
        digest = hashlib.sha256(subject.encode()).hexdigest()
        username = f"{tenant_slug}:sha256.{digest}"
    return username


# Bounded so memory stays flat however many subjects call; warm subjects cost no query.
@lru_cache(maxsize=10_000)
def provisioned_user(tenant_slug: str, subject: str) -> AbstractBaseUser:
    """The Django user of a tenant's token subject, created on first sight."""
    user, created = get_user_model().objects.get_or_create(
        username=username_for(tenant_slug, subject)
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user
