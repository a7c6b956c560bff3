"""Django's createsuperuser, with the password validators applied without a terminal too.

Django validates the password only when it asks for it; with ``--no-input`` it takes
``DJANGO_SUPERUSER_PASSWORD`` as it is. Here a weak one is refused in both modes.
"""

import os
from typing import Any

from django.contrib.auth.management.commands import createsuperuser
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError


class Command(createsuperuser.Command):
    """``createsuperuser`` that refuses a weak ``DJANGO_SUPERUSER_PASSWORD``."""

    def handle(self, *args: Any, **options: Any) -> None:
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        if not options["interactive"] and password is not None:
            self._refuse_weak(password, options)
        super().handle(*args, **options)

    def _refuse_weak(self, password: str, options: dict[str, Any]) -> None:
        """Raise CommandError naming every validator the password fails."""
        fields = [self.UserModel.USERNAME_FIELD, *self.UserModel.REQUIRED_FIELDS]
        known = {name: self._given(name, options) for name in fields}
        # Only plain attributes: the similarity validator compares them with the password.
        user = self.UserModel(**{name: value for name, value in known.items() if value})
        try:
            validate_password(password, user)
        except ValidationError as error:
            raise CommandError("DJANGO_SUPERUSER_PASSWORD: " + " ".join(error.messages)) from None

    @staticmethod
    def _given(name: str, options: dict[str, Any]) -> str | None:
        return options.get(name) or os.environ.get(f"DJANGO_SUPERUSER_{name.upper()}")
