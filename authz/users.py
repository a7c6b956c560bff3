"""Django users for token subjects, for tenants that ask for them."""

import hashlib
import threading
import time
from collections import OrderedDict
from urllib.parse import quote

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models.signals import post_delete
from django.dispatch import receiver

USERNAME_MAX_LENGTH = 150
# Users held per process, and for how long: a user deleted in another process is created anew
# there within this time (this process forgets it at once, through the delete signal).
CACHE_SIZE = 10_000
CACHE_SECONDS = 60.0


def username_for(tenant_slug: str, subject: str) -> str:
    """``<tenant>:<subject>``, with the quickstart's ``|`` as ``.``, and one subject per name.

    Every character that could make two subjects meet is percent-encoded first (``.`` too, so
    ``auth0|alice`` and ``auth0.alice`` stay apart). The ``:`` cannot occur in usernames made
    through Django's forms, so a provisioned user never collides with an operator's account,
    nor with another tenant's subject; ``#`` marks a hashed long subject and is never encoded.
    """
    encoded = quote(subject, safe="@+|").replace(".", "%2E").replace("|", ".")
    username = f"{tenant_slug}:{encoded}"
    if len(username) > USERNAME_MAX_LENGTH:
        username = f"{tenant_slug}:#{hashlib.sha256(subject.encode()).hexdigest()}"
    return username


class ProvisionedUsers:
    """The Django user of each recent token subject, so warm subjects cost no query."""

    def __init__(self) -> None:
        self._users: OrderedDict[tuple[str, str], tuple[AbstractBaseUser, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, tenant_slug: str, subject: str) -> AbstractBaseUser:
        """The user of a tenant's token subject, created on first sight."""
        key, now = (tenant_slug, subject), time.monotonic()
        with self._lock:
            held = self._users.get(key)
            if held is not None and now - held[1] < CACHE_SECONDS:
                self._users.move_to_end(key)
                return held[0]
        user = _get_or_create(username_for(tenant_slug, subject))
        with self._lock:
            self._users[key] = (user, now)
            while len(self._users) > CACHE_SIZE:
                self._users.popitem(last=False)
        return user

    def forget(self, user_id: int | None = None) -> None:
        """Drop one user (by id), or every user."""
        with self._lock:
            if user_id is None:
                self._users.clear()
                return
            for key in [key for key, (user, _) in self._users.items() if user.pk == user_id]:
                del self._users[key]


def _get_or_create(username: str) -> AbstractBaseUser:
    user, created = get_user_model().objects.get_or_create(username=username)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


provisioned_users = ProvisionedUsers()


def provisioned_user(tenant_slug: str, subject: str) -> AbstractBaseUser:
    """The Django user of a tenant's token subject, created on first sight."""
    return provisioned_users.get(tenant_slug, subject)


@receiver(post_delete, sender=settings.AUTH_USER_MODEL)
def _forget_deleted_user(instance: AbstractBaseUser, **kwargs: object) -> None:
    provisioned_users.forget(instance.pk)
