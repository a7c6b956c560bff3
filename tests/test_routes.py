"""Per-tenant routes: the template grammar, normalization, specificity, overlaps, scale."""

import time
from collections.abc import Callable
from typing import Any

import pytest

from tenants.config_io import TenantImportError, export_tenants, import_tenants
from tenants.directory import directory
from tenants.models import Route as RouteRow
from tenants.models import TenantChange
from tenants.routes import (
    MAX_ROUTES,
    PathRefused,
    Route,
    RouteConflict,
    RouteTable,
    TemplateError,
    match,
    normalize_path,
    normalized_template,
    parse_template,
    scopes_allow,
)


def table(*specs: tuple[Any, ...]) -> RouteTable:
    """A compiled table from (methods, path[, public[, scopes]]) tuples, in order."""
    return RouteTable.compile([Route.build(i, *spec) for i, spec in enumerate(specs)])


def hit(routes: RouteTable, method: str, path: str) -> str | None:
    """The template of the route a request hits, or None."""
    outcome = routes.match(method, path)
    return outcome.route.template if outcome.route else None


# 1. The template grammar.


@pytest.mark.parametrize(
    "template",
    [
        "orders",
        "/orders//items",
        "/{id}/{id}",
        "/{rest...}/tail",
        "/x{id}",
        "/{1id}",
        "/{}",
        "/./a",
        "/a/..",
        "/%2e%2E/a",
        "/a?b=1",
        "/a#top",
        "/a%2Fb",
        "/a%5Cb",
        "/a%zz",
        "/a\\b",
        "/a;v=1",
        "/" + "a" * 1001,
        "/a" * 65,
        "/{" + "n" * 65 + "}",
    ],
)
def test_a_template_outside_the_grammar_is_refused(template: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(template)


def test_templates_are_stored_in_normalized_form() -> None:
    assert normalized_template("/%7Euser/caf%c3%a9/{id}/") == "/~user/caf%C3%A9/{id}"
    assert normalized_template("/files/{path...}") == "/files/{path...}"
    assert normalized_template("/") == "/"


def test_methods_are_known_tokens_or_star_alone() -> None:
    with pytest.raises(TemplateError, match="not one of"):
        Route.build(0, ["FETCH"], "/a")
    with pytest.raises(TemplateError, match="alone"):
        Route.build(0, ["*", "GET"], "/a")
    with pytest.raises(TemplateError):
        Route.build(0, [], "/a")


# 2. Specificity: a literal beats {name}, which beats {name...}, segment by segment.


SHOP = (
    (["GET"], "/users/me"),
    (["GET"], "/users/{id}"),
    (["*"], "/users/{rest...}"),
    (["GET"], "/users/me/settings"),
    (["GET"], "/users/{id}/orders"),
    (["GET"], "/{any}/me/orders"),
    (["POST"], "/"),
)


@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("GET", "/users/me", "/users/me"),
        ("GET", "/users/42", "/users/{id}"),
        ("GET", "/users/me/settings", "/users/me/settings"),
        # /users/me has no orders child: the match falls back to {id} at the second segment,
        # and /users/{id}/orders beats /{any}/me/orders at the first.
        ("GET", "/users/me/orders", "/users/{id}/orders"),
        ("GET", "/users/me/other", "/users/{rest...}"),
        ("DELETE", "/users/me", "/users/{rest...}"),
        ("GET", "/shops/me/orders", "/{any}/me/orders"),
        ("POST", "/", "/"),
        ("GET", "/", None),
        ("GET", "/users", None),
        ("GET", "/nothing/here", None),
    ],
)
def test_the_most_specific_route_wins_segment_by_segment(
    method: str, path: str, template: str | None
) -> None:
    assert hit(table(*SHOP), method, path) == template


def test_a_match_returns_its_parameters_and_why() -> None:
    outcome = table(*SHOP).match("GET", "/users/me/orders?page=2")
    assert dict(outcome.params) == {"id": "me"}
    assert "route 5 (GET /users/{id}/orders)" in outcome.reason
    rest = table(*SHOP).match("PUT", "/users/a/b/c")
    assert dict(rest.params) == {"rest": "a/b/c"}


def test_no_route_is_refused_by_default_with_its_reason() -> None:
    outcome = table(*SHOP).match("GET", "/admin")
    assert (outcome.route, outcome.code) == (None, "no_route")
    assert outcome.reason == "No route matches GET /admin."
    assert RouteTable().match("GET", "/").code == "no_route"


def test_a_method_no_route_names_falls_to_star_routes_only() -> None:
    routes = table((["GET"], "/a/{x}"), (["*"], "/a/{rest...}"))
    assert hit(routes, "PATCH", "/a/b") == "/a/{rest...}"
    assert hit(routes, "GET", "/a/b") == "/a/{x}"


def test_match_takes_a_tenant_config() -> None:
    class Config:
        routes = table(*SHOP)

    assert match(Config(), "GET", "/users/me").route.template == "/users/me"


# 3. Overlaps are refused when saved, naming both routes.


def test_two_routes_matching_the_same_requests_are_refused_naming_both() -> None:
    with pytest.raises(RouteConflict) as refused:
        table((["GET", "POST"], "/orders/{id}"), (["POST"], "/orders/{order}"))
    (problem,) = refused.value.problems
    assert "route 1 (GET,POST /orders/{id})" in problem
    assert "route 2 (POST /orders/{order})" in problem
    assert "for POST" in problem


def test_star_overlaps_every_method_and_rest_overlaps_rest() -> None:
    with pytest.raises(RouteConflict, match=r"route 1 .* and route 2"):
        table((["*"], "/a/{x...}"), (["DELETE"], "/a/{y...}"))
    # Same shape, different methods, or different shapes: no overlap.
    table((["GET"], "/a/{x}"), (["POST"], "/a/{y}"), (["GET"], "/a/{x...}"), (["GET"], "/a/b"))


def test_head_is_decided_as_get_unless_a_more_specific_route_takes_head() -> None:
    routes = table(
        (["GET"], "/admin/{rest...}", False, ["admin"]),
        (["*"], "/{any...}", True),
        (["HEAD"], "/admin/ping", True),
        (["GET"], "/docs/{page}", False, ["read"]),
        (["*"], "/docs/{rest...}", True),
    )

    assert hit(routes, "HEAD", "/admin/users") == "/admin/{rest...}"
    assert hit(routes, "HEAD", "/admin/ping") == "/admin/ping"
    assert hit(routes, "HEAD", "/docs/intro") == "/docs/{page}"
    assert hit(routes, "HEAD", "/docs/a/b") == "/docs/{rest...}"
    assert hit(routes, "HEAD", "/elsewhere") == "/{any...}"
    assert hit(routes, "POST", "/admin/users") == "/{any...}"


# 4. Normalization (RFC 3986 section 6) and the paths refused.


@pytest.mark.parametrize(
    ("raw", "segments"),
    [
        ("/a/b", ("a", "b")),
        ("/a/b/", ("a", "b")),
        ("/", ()),
        ("/%61%7e", ("a~",)),
        ("/a%3ab", ("a%3Ab",)),
        ("/caf\u00e9", ("caf%C3%A9",)),
        ("/a?x=/../b#f", ("a",)),
        ("/a/...", ("a", "...")),
        ("/a/.b", ("a", ".b")),
    ],
)
def test_paths_are_normalized_before_matching(raw: str, segments: tuple[str, ...]) -> None:
    assert normalize_path(raw) == segments


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("/public/..%2Fadmin", "encoded_slash"),
        ("/public/%2f", "encoded_slash"),
        ("/public/..%5Cadmin", "encoded_backslash"),
        ("/public\\..\\admin", "backslash"),
        ("/public/%252e%252e/admin", "encoded_percent"),
        ("/a//b", "empty_segment"),
        ("/a/./b", "dot_segment"),
        ("/a/b/..", "dot_segment"),
        ("/../a", "dot_segment"),
        ("/a/%2E%2E/b", "dot_segment"),
        ("/a/%2e/b", "dot_segment"),
        ("/a/.%2e/b", "dot_segment"),
        ("/a/./", "dot_segment"),
        ("/admin;jsessionid=1", "path_parameter"),
        ("/a%00", "control_character"),
        ("/a\nb", "control_character"),
        ("/a%", "malformed_escape"),
        ("/a%4", "malformed_escape"),
        ("a/b", "invalid_path"),
        ("", "invalid_path"),
    ],
)
def test_paths_an_upstream_could_read_differently_are_refused(raw: str, code: str) -> None:
    with pytest.raises(PathRefused) as refused:
        normalize_path(raw)
    assert refused.value.code == code


def test_a_dot_dot_never_reaches_a_route_the_upstream_would_not_act_on() -> None:
    # An upstream that does not resolve dot segments (Express) acts on /admin/... for these.
    routes = table(
        (["GET"], "/public/{rest...}", True),
        (["GET"], "/admin/{rest...}", False, ["admin"]),
    )
    for raw in (
        "/admin/../public/x",
        "/admin/%2E%2E/public/x",
        "/admin/.%2e/public/x",
        "/public/./../admin/users",
    ):
        assert routes.match("GET", raw).code == "dot_segment", raw
    assert routes.match("GET", "/public/..%2Fadmin/users").code == "encoded_slash"


# 5. Scopes: alternatives, each granted in full.


def test_scopes_allow_when_one_alternative_is_granted_in_full() -> None:
    route = Route.build(0, ["GET"], "/orders", False, ["read:orders write:orders", "admin"])
    assert scopes_allow({"admin"}, route.scopes)
    assert scopes_allow({"read:orders", "write:orders", "x"}, route.scopes)
    assert not scopes_allow({"read:orders"}, route.scopes)
    assert scopes_allow(set(), Route.build(0, ["GET"], "/any").scopes)
    assert route.scope_alternatives == ("read:orders write:orders", "admin")


# 6. Scale: linear in the path, independent of the number of routes.


def many_routes(count: int) -> list[Route]:
    """``count`` routes shaped like a REST API's: resources, ids, actions."""
    routes = []
    for index in range(count):
        kind = index % 4
        base = f"/r{index // 4}"
        path = (base, f"{base}/{{id}}", f"{base}/{{id}}/sub", f"{base}/files/{{p...}}")[kind]
        routes.append(Route.build(index, ["GET", "POST"], path, False, ["read"]))
    return routes


def test_a_tenant_may_have_10000_routes_and_they_compile_quickly() -> None:
    started = time.process_time()
    routes = RouteTable.compile(many_routes(10_000))
    assert time.process_time() - started < 5.0
    assert hit(routes, "GET", "/r2499/7/sub") == "/r2499/{id}/sub"
    assert hit(routes, "GET", "/r2499/files/a/b") == "/r2499/files/{p...}"
    with pytest.raises(RouteConflict, match=f"at most {MAX_ROUTES}"):
        RouteTable.compile(many_routes(MAX_ROUTES + 1))


def cpu_per_match(routes: RouteTable, path: str, rounds: int = 3000) -> float:
    """The least CPU time of one match over a few runs."""
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(rounds):
            routes.match("GET", path)
        best = min(best, (time.process_time() - started) / rounds)
    return best


def test_hostile_paths_cost_linear_time_whatever_the_routes() -> None:
    # A route set that makes a backtracking matcher try every {x}/literal combination.
    depth = 8
    specs = [
        (
            ["GET"],
            "/" + "/".join([f"{{a{i}}}" if i != j else "a" for i in range(depth)]) + f"/end{j}",
        )
        for j in range(depth)
    ]
    routes = table(*specs, (["GET"], "/" + "/".join(f"{{p{i}}}" for i in range(depth)) + "/x"))
    short = cpu_per_match(routes, "/a" * 100)
    long = cpu_per_match(routes, "/a" * 1000, rounds=300)
    assert long < short * 10 * 3  # ten times the path, at most about ten times the cost
    long_segment = cpu_per_match(routes, "/" + "a" * 100_000, rounds=30)
    assert long_segment < 0.01


def test_routes_too_ambiguous_for_linear_matching_are_refused() -> None:
    depth = 16  # every {x}/literal mix would need its own state: 2**16 of them
    specs = [
        (["GET"], "/" + "/".join("a" if i == j else f"{{p{i}}}" for i in range(depth)))
        for j in range(depth)
    ]
    with pytest.raises(RouteConflict, match="too ambiguous"):
        table(*specs, (["GET"], "/" + "/".join(f"{{p{i}}}" for i in range(depth)) + "/z"))


def test_compiling_any_route_set_is_bounded_in_work() -> None:
    # Each /y{i}/{b}/z state would copy the 5,000 literals of {a}: refused, and quickly.
    routes = [Route.build(i, ["GET"], f"/{{a}}/x{i}") for i in range(5000)]
    routes += [Route.build(5000 + i, ["GET"], f"/y{i}/{{b}}/z") for i in range(5000)]
    started = time.process_time()
    with pytest.raises(RouteConflict, match="too ambiguous"):
        RouteTable.compile(routes)
    assert time.process_time() - started < 10.0


def test_states_that_share_many_literals_are_bounded_in_work() -> None:
    # Each /k{i}/{b} state would copy the literals of /{a}/{b}: n states of n steps each.
    routes = [Route.build(i, ["*"], f"/{{a}}/{{b}}/l{i}") for i in range(0, 8000, 2)]
    routes += [Route.build(i, ["*"], f"/k{i}/{{b}}/m{i}") for i in range(1, 8000, 2)]
    started = time.process_time()
    with pytest.raises(RouteConflict, match="too ambiguous"):
        RouteTable.compile(routes)
    assert time.process_time() - started < 10.0  # 24 s and 436 MiB before the steps were charged


def test_matching_costs_the_same_with_10000_routes_as_with_10() -> None:
    small, large = RouteTable.compile(many_routes(10)), RouteTable.compile(many_routes(10_000))
    path = "/r1/42/sub"
    assert hit(small, "GET", path) == hit(large, "GET", path)
    ratio = cpu_per_match(large, path) / cpu_per_match(small, path)
    assert ratio < 1.5  # within 10 % on a quiet machine; margin for a shared one


# 7. Stored with the tenant: import, export, directory, change feed.


ROUTES = [
    {"methods": ["GET", "HEAD"], "path": "/orders/{id}", "public": False, "scopes": ["read"]},
    {"methods": ["*"], "path": "/health", "public": True, "scopes": []},
    {"methods": ["POST"], "path": "/orders", "public": False, "scopes": ["write", "admin all"]},
]


@pytest.mark.django_db
def test_routes_round_trip_through_import_and_export(make_tenant: Callable[..., Any]) -> None:
    make_tenant("shop", routes=ROUTES)
    (exported,) = [t for t in export_tenants()["tenants"] if t["slug"] == "shop"]
    assert exported["routes"] == ROUTES
    import_tenants({"tenants": [exported]})
    (again,) = [t for t in export_tenants()["tenants"] if t["slug"] == "shop"]
    assert again["routes"] == ROUTES


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ("/a", "routes: must be a list"),
        (["/a"], "routes[0]: each route is"),
        ([{"path": "/a", "verbs": ["GET"]}], "routes[0]: unknown field 'verbs'"),
        ([{"methods": ["GET"]}], "routes[0]: path: this field is required"),
        ([{"path": "/a", "public": "yes"}], "routes[0]: public: must be a bool"),
        ([{"path": "/a//b"}], "routes[0]: path: A path has no empty segment"),
        ([{"path": "/a", "methods": ["FETCH"]}], "routes[0]: methods: 'FETCH' is not one of"),
        ([{"path": "/a", "scopes": ["bad\\scope"]}], "routes[0]: scopes: bad\\scope is not"),
        ([{"path": "/a", "public": True, "scopes": ["x"]}], "public route takes no scopes"),
        (
            [{"path": "/a/{x}", "methods": ["GET"]}, {"path": "/a/{y}", "methods": ["*"]}],
            "routes: route 1 (GET /a/{x}) and route 2 (* /a/{y}) match exactly the same",
        ),
    ],
)
def test_import_refuses_bad_routes_with_clear_errors(
    make_tenant: Callable[..., Any], routes: object, message: str
) -> None:
    with pytest.raises(TenantImportError) as refused:
        make_tenant("shop", routes=routes)
    assert any(message in error for error in refused.value.errors), refused.value.errors


@pytest.mark.django_db
def test_a_tenant_of_10000_routes_imports_and_loads(make_tenant: Callable[..., Any]) -> None:
    routes = [
        {"methods": list(r.methods), "path": r.template, "scopes": list(r.scope_alternatives)}
        for r in many_routes(10_000)
    ]
    make_tenant("big", routes=routes)
    assert RouteRow.objects.filter(tenant__slug="big").count() == 10_000
    config = directory.by_slug("big")
    assert match(config, "POST", "/r2000/files/x").route.template == "/r2000/files/{p...}"


@pytest.mark.django_db
def test_the_directory_follows_route_changes(make_tenant: Callable[..., Any]) -> None:
    tenant = make_tenant("shop", routes=ROUTES)
    config = directory.by_slug("shop")
    assert match(config, "GET", "/orders/7").route.scopes == (frozenset({"read"}),)
    assert match(config, "DELETE", "/orders/7").code == "no_route"
    before = TenantChange.objects.count()
    RouteRow.objects.create(tenant=tenant, position=9, methods=["DELETE"], path="/orders/{id}")
    assert TenantChange.objects.count() == before + 1
    assert match(directory.by_slug("shop"), "DELETE", "/orders/7").route.template == "/orders/{id}"


@pytest.mark.django_db
def test_stored_routes_that_bypassed_validation_refuse_every_request(
    make_tenant: Callable[..., Any],
) -> None:
    tenant = make_tenant("shop", routes=ROUTES)
    RouteRow.objects.create(tenant=tenant, position=5, methods=["GET"], path="/orders/{x}")
    outcome = match(directory.by_slug("shop"), "GET", "/health")
    assert outcome.code == "no_route"
    assert "match exactly the same requests" in outcome.reason
