"""Content negotiation for the API: DRF's, with its most common case answered without parsing."""

from typing import Any

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request


class PlainAcceptNegotiation(DefaultContentNegotiation):
    """DRF's negotiation; a request that accepts anything, or exactly the first renderer's type,
    with no query string (no ``?format=``) and no format suffix, gets that renderer at once.

    That answer is the one DRF's parse of ``*/*`` or of the bare media type reaches; anything
    else (a list, parameters, another type, a query string) goes through DRF's own negotiation.
    """

    def select_renderer(
        self, request: Request, renderers: list, format_suffix: Any = None
    ) -> tuple[Any, str]:
        """The first renderer for the plain cases; DRF's choice (or 406) for the rest."""
        meta = request._request.META
        first = renderers[0] if renderers else None
        accept = meta.get("HTTP_ACCEPT", "*/*")
        plain = first is not None and accept in ("*/*", first.media_type)
        if plain and not format_suffix and not meta.get("QUERY_STRING"):
            return first, first.media_type
        return super().select_renderer(request, renderers, format_suffix)
