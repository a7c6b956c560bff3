"""The message representation, strict about what clients may send."""

from typing import Any

from rest_framework import serializers

from messages.models import MAX_TEXT_LENGTH, Message


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of turning them into text."""

    def to_internal_value(self, data: Any) -> str:
        """Only JSON strings are text."""
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class RefusesUnknownFields(serializers.Serializer):
    """A serializer that refuses fields the client may not set, rather than dropping them."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        """Every unknown or read-only field is an error, beside the fields' own errors."""
        writable = {name for name, field in self.fields.items() if not field.read_only}
        errors = {
            name: ["This field cannot be set."]
            for name in sorted(set(data) - writable if isinstance(data, dict) else ())
        }
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            errors = {**exc.detail, **errors}
        if errors:
            raise serializers.ValidationError(errors)
        return value


class MessageSerializer(RefusesUnknownFields, serializers.ModelSerializer):
    """A message; clients send only ``text``."""

    text = StrictCharField(
        max_length=MAX_TEXT_LENGTH,
        allow_blank=False,
        trim_whitespace=True,
        # DRF's sentence, saying what it counts: the text once trimmed, not the text as sent.
        error_messages={
            "max_length": "Ensure this field has no more than {max_length} characters once "
            "leading and trailing whitespace is trimmed."
        },
    )

    class Meta:
        model = Message
        fields = ["id", "text", "author", "created_at"]
        read_only_fields = ["id", "author", "created_at"]
