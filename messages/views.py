"""The quickstart's three endpoints and the messages resource, served per tenant."""

from typing import Any

from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import exceptions, generics, serializers
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from messages import endpoints
from messages.endpoints import PRIVATE, PRIVATE_SCOPED
from messages.models import Message, TenantScopedQuerySet
from messages.serializers import MessageSerializer
from tenants.views import TenantAPIView, TenantResolutionMixin

MAX_ID = 2**63 - 1
GREETING = inline_serializer("Greeting", {"message": serializers.CharField()})


class PublicMessage(TenantAPIView):
    """GET /api/public: no token needed (and none looked at)."""

    authentication_classes = ()
    permission_classes = (AllowAny,)

    @extend_schema(responses=GREETING)
    def get(self, request: Request) -> Response:
        """The quickstart's public message."""
        return Response(
            {
                "message": "Hello from a public endpoint! "
                "You don't need to be authenticated to see this."
            }
        )


class PrivateMessage(TenantAPIView):
    """GET /api/private: any valid token of the tenant."""

    endpoint_key = PRIVATE.key

    @extend_schema(responses=GREETING)
    def get(self, request: Request) -> Response:
        """The quickstart's private message."""
        return Response(
            {"message": "Hello from a private endpoint! You need to be authenticated to see this."}
        )


class PrivateScopedMessage(TenantAPIView):
    """GET /api/private-scoped: the tenant's rule, by default read:messages."""

    endpoint_key = PRIVATE_SCOPED.key

    @extend_schema(responses=GREETING)
    def get(self, request: Request) -> Response:
        """The quickstart's scoped message, naming the scopes this tenant demands."""
        scopes = " ".join(request.tenant.required_scopes(self.endpoint_key))
        return Response(
            {
                "message": "Hello from a private endpoint! You need to be authenticated "
                f"and have a scope of {scopes} to see this."
            }
        )


class InvalidCursor(exceptions.NotFound):
    """A cursor this API did not issue names no page."""

    default_detail = "Invalid cursor"
    default_code = "invalid_cursor"


class NewestFirst(CursorPagination):
    """Stable pages however many messages arrive meanwhile; a page size as published, or 400."""

    ordering = ("-created_at", "-id")
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def get_page_size(self, request: Request) -> int:
        """The page size asked for, refused unless an integer from 1 to ``max_page_size``."""
        asked = request.query_params.get(self.page_size_query_param)
        if asked is None:
            return self.page_size
        size = bounded_int(asked, self.max_page_size)
        if size is None:
            raise serializers.ValidationError(
                {self.page_size_query_param: [f"A page size is from 1 to {self.max_page_size}."]}
            )
        return size

    def decode_cursor(self, request: Request) -> Any:
        """DRF's cursor; one it cannot read, or whose position is not a time, names no page."""
        try:
            cursor = super().decode_cursor(request)
        except exceptions.NotFound as exc:
            raise InvalidCursor() from exc
        if cursor is not None and cursor.position is not None and not _is_time(cursor.position):
            raise InvalidCursor()
        return cursor

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        """DRF's parameters, with the range the server enforces and what a bad cursor gets."""
        cursor, page_size = super().get_schema_operation_parameters(view)
        cursor["description"] = (
            "Opaque: take it from `next` or `previous`. A cursor this API did not issue "
            "is 404 `invalid_cursor`."
        )
        page_size["description"] = "Messages per page; any other value is 400."
        page_size["schema"].update(minimum=1, maximum=self.max_page_size, default=self.page_size)
        return [cursor, page_size]


def bounded_int(text: str, maximum: int) -> int | None:
    """The integer from 1 to ``maximum`` that ``text`` spells in ASCII digits, else None."""
    # The length bound first: int() of thousands of digits is slow, then refused by Python.
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(maximum))):
        return None
    value = int(text)
    return value if 1 <= value <= maximum else None


def _is_time(value: str) -> bool:
    try:
        return parse_datetime(value) is not None
    except ValueError:
        return False


class NotAuthor(exceptions.PermissionDenied):
    """Only the author, or a token with the tenant's admin scope, may delete a message."""

    default_detail = "Only the author of this message may delete it."
    default_code = "not_author"


class TenantMessages(TenantResolutionMixin):
    """Messages of the request's tenant, and nothing else."""

    serializer_class = MessageSerializer
    endpoint_keys: dict[str, str] = {}

    def endpoint_key_for(self, method: str) -> str | None:
        """The key of this method."""
        return self.endpoint_keys.get(method)

    def get_queryset(self) -> TenantScopedQuerySet:
        """The tenant-scoped queryset: the only way this view reaches rows."""
        return Message.objects.for_tenant(self.request.tenant)


class MessageList(TenantMessages, generics.ListCreateAPIView):
    """GET /api/messages (newest first, cursor pages); POST /api/messages."""

    pagination_class = NewestFirst
    endpoint_keys = {
        "GET": endpoints.LIST.key,
        "HEAD": endpoints.LIST.key,
        "OPTIONS": endpoints.LIST.key,
        "POST": endpoints.CREATE.key,
    }

    def perform_create(self, serializer: MessageSerializer) -> None:
        """The author is the token's subject, never the client's say."""
        serializer.instance = self.get_queryset().create(
            author=self.request.auth.subject, **serializer.validated_data
        )

    def get_success_headers(self, data: dict[str, Any]) -> dict[str, str]:
        """``Location`` of the new message, under the same host or /t/<slug>/ prefix."""
        return {"Location": self.request.build_absolute_uri(f"{self.request.path}/{data['id']}")}


MESSAGE_ID = OpenApiParameter(
    "message_id",
    {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID},
    OpenApiParameter.PATH,
    description="The message's id; anything but a positive 64-bit integer is 400.",
)


@extend_schema_view(
    get=extend_schema(parameters=[MESSAGE_ID]), delete=extend_schema(parameters=[MESSAGE_ID])
)
class MessageDetail(TenantMessages, generics.RetrieveDestroyAPIView):
    """GET and DELETE /api/messages/<id>."""

    endpoint_keys = {
        "GET": endpoints.READ.key,
        "HEAD": endpoints.READ.key,
        "OPTIONS": endpoints.READ.key,
        "DELETE": endpoints.DELETE.key,
    }

    def get_object(self) -> Message:
        """The tenant's message with this id; another tenant's id is simply not found."""
        message_id = bounded_int(self.kwargs["message_id"], MAX_ID)
        if message_id is None:
            raise serializers.ValidationError({"id": ["A message id is a positive integer."]})
        message = self.get_queryset().filter(pk=message_id).first()
        if message is None:
            raise exceptions.NotFound("No such message.")
        return message

    def perform_destroy(self, instance: Message) -> None:
        """Authors delete their own; the tenant's admin scope deletes any."""
        principal, admin_scope = self.request.auth, self.request.tenant.admin_scope
        is_admin = bool(admin_scope) and admin_scope in principal.scopes
        if instance.author != principal.subject and not is_admin:
            raise NotAuthor()
        instance.delete()
