"""OpenAPI for the messages serializers: request bodies exactly as strict as the server."""

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

# What Python's str.strip() removes (str.isspace()), spelled out: a pattern's \s is ECMAScript's,
# which lacks U+001C..U+001F and U+0085 and has U+FEFF.
WHITESPACE = (
    r"\t\n\u000b\u000c\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)


def trimmed_text_pattern(max_length: int) -> str:
    """Text that, once trimmed, has 1 to ``max_length`` characters, and no NUL (DRF refuses it)."""
    space, visible = f"[{WHITESPACE}]", rf"[^\u0000{WHITESPACE}]"
    return rf"^{space}*{visible}(?:[^\u0000]{{0,{max_length - 2}}}{visible})?{space}*$"


def is_trimmed_text(field: serializers.Field) -> bool:
    """A non-blank CharField that trims: DRF checks its length after trimming."""
    return (
        isinstance(field, serializers.CharField)
        and field.trim_whitespace
        and not field.allow_blank
        and field.min_length is None
        and field.max_length is not None
    )


def describe_trimmed_text(schema: dict[str, Any], max_length: int) -> None:
    """Say what the server takes: minLength and maxLength would count the untrimmed text."""
    schema.pop("minLength", None)
    schema.pop("maxLength", None)
    schema["pattern"] = trimmed_text_pattern(max_length)
    schema["description"] = (
        f"1 to {max_length} characters once leading and trailing whitespace is trimmed "
        "(it is stored trimmed)."
    )


class RequestBodyAsEnforced(OpenApiSerializerExtension):
    """Request bodies of serializers that refuse unknown fields, declared as the server checks."""

    target_class = "messages.serializers.RefusesUnknownFields"
    match_subclasses = True

    def map_serializer(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        """drf-spectacular's schema; for requests closed, and with trimmed text as counted."""
        schema = auto_schema._map_basic_serializer(self.target, direction)
        if direction == "request":
            schema["additionalProperties"] = False
            for name, field in self.target.fields.items():
                if name in schema.get("properties", {}) and is_trimmed_text(field):
                    describe_trimmed_text(schema["properties"][name], field.max_length)
        return schema
