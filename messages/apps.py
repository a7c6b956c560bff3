"""App config for the protected messages resource."""

from django.apps import AppConfig


class MessagesConfig(AppConfig):
    """Labelled apart from django.contrib.messages, whose label is also ``messages``."""

    name = "messages"
    label = "api_messages"
    verbose_name = "Messages API"

    def ready(self) -> None:
        # Registers the endpoint keys, and the OpenAPI extensions of the serializers.
        from messages import endpoints, schema  # noqa: F401
