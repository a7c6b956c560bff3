"""Tenant isolation is structural: no unscoped door to messages, and no path between tenants."""

import string
from typing import Any

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messages.models import Message
from tests.fixtures import TokenFactory, bearer

ALL_SCOPES = "read:messages write:messages delete:messages"
NOT_FOUND = {"message": "No such message.", "code": "not_found"}


@pytest.mark.parametrize(
    "query",
    [
        lambda objects: objects.all(),
        lambda objects: objects.filter(text="x"),
        lambda objects: objects.exclude(text="x"),
        lambda objects: objects.count(),
        lambda objects: objects.get(pk=1),
        lambda objects: objects.first(),
        lambda objects: objects.exists(),
        lambda objects: objects.values("text"),
        lambda objects: objects.create(text="x", author="y", tenant_id=1),
        lambda objects: objects.none(),
    ],
    ids=["all", "filter", "exclude", "count", "get", "first", "exists", "values", "create", "none"],
)
def test_unscoped_access_raises_type_error(db, query):
    with pytest.raises(TypeError, match=r"for_tenant\(tenant\)"):
        query(Message.objects)


def bulk_create(rows: Any, other: Any) -> Message:
    """bulk_create with a row naming another tenant."""
    return rows.bulk_create([Message(tenant_id=other.id, text="x", author="y")])[0]


@pytest.mark.parametrize(
    "create",
    [
        lambda rows, other: rows.create(tenant_id=other.id, text="x", author="y"),
        lambda rows, other: rows.create(tenant=other, text="x", author="y"),
        lambda rows, other: rows.get_or_create(tenant_id=other.id, text="x", author="y")[0],
        lambda rows, other: rows.update_or_create(text="x", defaults={"tenant_id": other.id})[0],
        bulk_create,
    ],
    ids=["create-tenant-id", "create-tenant", "get-or-create", "update-or-create", "bulk-create"],
)
def test_rows_created_through_a_tenants_queryset_belong_to_that_tenant(acme, make_tenant, create):
    globex = make_tenant("globex")

    message = create(Message.objects.for_tenant(acme), globex)

    assert message.tenant_id == acme.id
    assert list(Message.objects.for_tenant(acme)) == [message]
    assert not Message.objects.for_tenant(globex).exists()


def test_a_tenants_queryset_neither_finds_nor_deletes_another_tenants_rows(acme, make_tenant):
    globex = make_tenant("globex")
    theirs = Message.objects.for_tenant(globex).create(text="globex", author="y")

    assert not Message.objects.for_tenant(acme).filter(pk=theirs.pk).exists()
    Message.objects.for_tenant(acme).delete()
    assert list(Message.objects.for_tenant(globex)) == [theirs]


# The property: random interleavings of two tenants' API calls never cross.

PAIRS = {
    "own-issuers": (("acme", "acme", []), ("globex", "globex", [])),
    "shared-issuer": (("acme", "acme", []), ("beta", "acme", ["https://api.acme.test"])),
}
ROOTS = {"host": "/api/messages", "prefix": "/t/{slug}/api/messages"}
TEXT = st.text(string.ascii_letters + string.digits + "é€ ", min_size=1, max_size=30).filter(
    str.strip
)
STEP = st.one_of(
    st.tuples(st.just("create"), st.integers(0, 1), st.sampled_from(list(ROOTS)), TEXT),
    st.tuples(
        st.sampled_from(["delete", "get"]),
        st.integers(0, 1),
        st.sampled_from(list(ROOTS)),
        st.integers(0, 1_000),
    ),
)


class TenantApi:
    """One tenant's messages API, with one token, by host or by /t/<slug>/ prefix."""

    def __init__(self, client: Client, slug: str, token: str) -> None:
        self.client, self.slug, self.token = client, slug, token

    def call(self, method: str, via: str, path: str = "", **extra: Any) -> Any:
        """``method`` on this tenant's messages URL."""
        url = ROOTS[via].format(slug=self.slug) + path
        host = f"{self.slug}.localhost" if via == "host" else "testserver"
        return getattr(self.client, method)(url, HTTP_HOST=host, **bearer(self.token), **extra)

    def listing(self) -> list[tuple[int, str]]:
        """(id, text) of every message the API lists, newest first."""
        response = self.call("get", "prefix", data={"page_size": 100})
        assert response.status_code == 200, response.content
        return [(m["id"], m["text"]) for m in response.json()["results"]]


@pytest.fixture(params=list(PAIRS))
def two_tenants(request, client, make_tenant, tokens) -> tuple[list[Any], list[TenantApi]]:
    """Two tenants (on their own issuers, or sharing one) and an API client for each."""
    tenants, apis = [], []
    for slug, issuer, audiences in PAIRS[request.param]:
        extra = {"audiences": audiences} if audiences else {}
        tenants.append(make_tenant(slug, issuer_name=issuer, **extra))
        factory: TokenFactory = tokens(issuer)
        apis.append(TenantApi(client, slug, factory.token(scope=ALL_SCOPES)))
    return tenants, apis


def expected_status(step: str, mine: bool, live: bool) -> int:
    """What the API must answer: only the owner's live message is found."""
    if not (mine and live):
        return 404
    return 204 if step == "delete" else 200


def run_step(step: tuple, apis: list[TenantApi], owners: dict[int, int], model: list[dict]) -> None:
    """Perform one step through the API and check its answer against the model."""
    kind, actor, via, arg = step
    api = apis[actor]
    if kind == "create":
        response = api.call("post", via, data={"text": arg}, content_type="application/json")
        assert response.status_code == 201, response.content
        owners[response.json()["id"]] = actor
        model[actor][response.json()["id"]] = arg.strip()
        return
    message_id = sorted(owners)[arg % len(owners)] if owners else 2**63 - 1
    owner = owners.get(message_id)
    live = owner is not None and message_id in model[owner]
    response = api.call(kind, via, f"/{message_id}")
    assert response.status_code == expected_status(kind, owner == actor, live), step
    if response.status_code == 404:
        assert response.json() == NOT_FOUND
    elif kind == "get":
        assert response.json()["text"] == model[actor][message_id]
    else:
        del model[actor][message_id]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(STEP, max_size=12))
def test_interleaved_tenants_never_see_or_delete_each_others_messages(two_tenants, steps):
    tenants, apis = two_tenants
    owners: dict[int, int] = {}
    model: list[dict[int, str]] = [{}, {}]
    try:
        for step in steps:
            run_step(step, apis, owners, model)
            for api, created in zip(apis, model, strict=True):
                assert api.listing() == sorted(created.items(), reverse=True), step
    finally:
        for tenant in tenants:
            Message.objects.for_tenant(tenant).delete()
