"""tenants/negotiation.py: the same renderer and media type as DRF's negotiation, or its 406."""

import pytest
from django.http import Http404
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from tenants.negotiation import PlainAcceptNegotiation

ACCEPTS = [
    None,
    "*/*",
    "application/json",
    "application/json; indent=4",
    "application/json;q=0.5, text/html",
    "application/*",
    "*/*;q=0.1",
    "text/html",
    "",
    "APPLICATION/JSON",
]
QUERIES = ["", "?format=json", "?format=api", "?%66ormat=xml", "?page=2"]
RENDERER_LISTS = [[JSONRenderer()], [BrowsableAPIRenderer(), JSONRenderer()]]


def choice(negotiation: DefaultContentNegotiation, accept: str | None, query: str, renderers):
    """(renderer class, media type), the 406, or the 404 of an unknown ``?format=``."""
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(APIRequestFactory().get("/api/public" + query, **headers))
    try:
        renderer, media_type = negotiation.select_renderer(request, renderers)
    except NotAcceptable:
        return "406"
    except Http404:
        return "404"
    return type(renderer), media_type


@pytest.mark.parametrize("renderers", RENDERER_LISTS, ids=["json", "browsable+json"])
@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("accept", ACCEPTS)
def test_the_same_answer_as_drf(accept, query, renderers):
    ours = choice(PlainAcceptNegotiation(), accept, query, renderers)

    assert ours == choice(DefaultContentNegotiation(), accept, query, renderers)


@pytest.mark.django_db
def test_the_api_still_refuses_a_type_it_cannot_render(client, acme):
    refused = client.get("/t/acme/api/public", HTTP_ACCEPT="text/html")
    served = client.get("/t/acme/api/public")

    assert refused.status_code == 406
    assert (served.status_code, served["Content-Type"]) == (200, "application/json")
