"""Admin actions that refuse a selection of ids the model cannot have, instead of a 500."""

from typing import Any

from django.contrib import messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect


class CheckedSelectionMixin:
    """For a ModelAdmin: Django filters the queryset by the posted ids unchecked, so ``abc``
    or a NUL raises in the query; here such a selection is refused with a message."""

    def response_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        """Run the action only if every selected value is a possible primary key."""
        if not all(map(self._possible_pk, request.POST.getlist(helpers.ACTION_CHECKBOX_NAME))):
            name = self.model._meta.verbose_name_plural
            self.message_user(
                request,
                f"The selection holds a value that is no id of {name}; nothing was changed.",
                messages.WARNING,
            )
            return HttpResponseRedirect(request.get_full_path())
        return super().response_action(request, queryset)

    def _possible_pk(self, value: Any) -> bool:
        try:
            self.model._meta.pk.get_prep_value(self.model._meta.pk.to_python(value))
        except (ValidationError, ValueError, TypeError):
            return False
        return True
