"""A tenant's routes: path templates, request path normalization, and the compiled matcher.

A route is methods, a path template (literal segments, ``{name}`` for one segment, ``{name...}``
last for one or more), ``public`` and scope alternatives. The most specific route wins segment by
segment: a literal beats ``{name}``, which beats ``{name...}``. Routes are compiled once per tenant
change into a deterministic automaton over path segments, so a match costs one dictionary lookup
per segment, however many routes the tenant has. No Django or HTTP imports: the decision view,
the admin and the token debugger call ``match(tenant_config, method, raw_path)``.
"""

import re
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

ANY_METHOD = "*"
# RFC 9110 section 9 and RFC 5789: the methods a route may name.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
MAX_ROUTES = 20_000
MAX_TEMPLATE_LENGTH = 1000
MAX_TEMPLATE_SEGMENTS = 64
MAX_NAME_LENGTH = 64
MAX_ALTERNATIVES = 32
MAX_ALTERNATIVE_LENGTH = 1000
# Automaton states allowed per trie node; more means a route set whose match could not stay
# linear (many {name} segments before distinct literals), refused when saved.
STATES_PER_NODE = 4
SPARE_STATES = 1000
MAX_PROBLEMS = 20
# Trie nodes summed over every state and its steps: compiling stays O(routes) even for a
# hostile route set.
MEMBERS_PER_NODE = 16
SPARE_MEMBERS = 100_000
TOO_AMBIGUOUS = (
    "These routes are too ambiguous to match in linear time: too many {name} segments come "
    "before different literals. Use literals first."
)

REST, PARAM, LITERAL = 0, 1, 2  # segment kinds, in rising specificity
PARAM_SEGMENT = re.compile(r"\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>\.\.\.)?\}")
UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Characters that stand as they are in a normalized segment: RFC 3986 pchar less ";" (below).
PLAIN = UNRESERVED | frozenset("!$&'()*+,=:@")
# One token of a raw path: an escape, a stray "%", or a run of characters that need a look.
PATH_TOKEN = re.compile(r"%[0-9A-Fa-f]{2}|%|[^A-Za-z0-9\-._~!$&'()*+,=:@/]")


class PathRefused(ValueError):
    """A request path no route may be matched against; ``code`` names the reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class TemplateError(ValueError):
    """A route's path template is not in the grammar; the message says what to fix."""


class RouteConflict(ValueError):
    """A set of routes that cannot be compiled; ``problems`` has one sentence each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(" ".join(problems))
        self.problems = problems


# Escapes refused because an upstream could decode them into a different path: "/" and "\"
# split segments there but not here, "%" would be decoded twice by a double-decoding upstream,
# and control characters (NUL above all) end or bend paths in C and Java stacks.
REFUSED_ESCAPES = {
    "2F": ("encoded_slash", "An encoded / (%2F) in the path is refused."),
    "5C": ("encoded_backslash", "An encoded \\ (%5C) in the path is refused."),
    "25": ("encoded_percent", "An encoded % (%25) in the path is refused (double encoding)."),
}


def _escape(text: str) -> str:
    """Percent-encode characters that are not allowed raw in a path, as UTF-8."""
    return "".join(f"%{byte:02X}" for byte in text.encode("utf-8"))


def _normalize_token(match: re.Match[str]) -> str:
    piece = match[0]
    if piece == "%":
        raise PathRefused("malformed_escape", "A % in the path is not followed by two hex digits.")
    if piece[0] == "%":
        hex_digits = piece[1:].upper()
        if hex_digits in REFUSED_ESCAPES:
            raise PathRefused(*REFUSED_ESCAPES[hex_digits])
        value = int(hex_digits, 16)
        if value < 0x20 or value == 0x7F:
            raise PathRefused("control_character", "An encoded control character is refused.")
        character = chr(value)
        return character if character in UNRESERVED else f"%{hex_digits}"
    if piece == "\\":
        raise PathRefused("backslash", "A \\ in the path is refused: some servers read it as /.")
    if piece == ";":
        raise PathRefused(
            "path_parameter", "A ; in the path is refused: Java servers strip what follows it."
        )
    if ord(piece) < 0x20 or ord(piece) == 0x7F:
        raise PathRefused("control_character", "A control character in the path is refused.")
    return _escape(piece)


def normalize_path(raw_path: str) -> tuple[str, ...]:
    """The segments of a request path (RFC 3986 section 6), or PathRefused; linear time.

    Unreserved escapes are decoded (so %2E%2E is ..), other escapes upper-cased, characters not
    allowed raw are escaped, query and fragment dropped. One trailing slash is ignored (a template
    cannot tell ``/a`` from ``/a/``). Dot segments and empty segments are refused, not resolved:
    nginx, Caddy, Traefik and Envoy pass ``/admin/../public`` on as sent, and an upstream that
    does not resolve it (Express does not) would act on ``/admin`` where we decided ``/public``.
    """
    path = raw_path.partition("?")[0].partition("#")[0]
    if not path.startswith("/"):
        raise PathRefused("invalid_path", "The path must start with /.")
    decoded = PATH_TOKEN.sub(_normalize_token, path)
    pieces = decoded[1:].split("/")
    if "" in pieces[:-1]:
        raise PathRefused("empty_segment", "An empty path segment (//) is refused.")
    if "." in pieces or ".." in pieces:
        raise PathRefused(
            "dot_segment",
            "A . or .. path segment is refused: proxies pass it on as sent, and upstreams "
            "disagree on resolving it.",
        )
    return tuple(pieces[:-1] if pieces[-1] == "" else pieces)


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment of a template: a literal, or a parameter of one or of the remaining segments."""

    kind: int
    text: str  # the literal in normalized form, or the parameter's name

    def __str__(self) -> str:
        if self.kind == LITERAL:
            return self.text
        return f"{{{self.text}...}}" if self.kind == REST else f"{{{self.text}}}"


def parse_template(template: str) -> tuple[Segment, ...]:
    """The segments of a path template, literals normalized; TemplateError when it is not one."""
    if not isinstance(template, str) or not template.startswith("/"):
        raise TemplateError("A path starts with /, such as /orders/{id}.")
    if len(template) > MAX_TEMPLATE_LENGTH:
        raise TemplateError(f"A path has at most {MAX_TEMPLATE_LENGTH} characters.")
    pieces = template[1:].split("/")
    if pieces[-1] == "":
        pieces.pop()  # one trailing slash: matching ignores it too
    if len(pieces) > MAX_TEMPLATE_SEGMENTS:
        raise TemplateError(f"A path has at most {MAX_TEMPLATE_SEGMENTS} segments.")
    segments = tuple(_segment(piece) for piece in pieces)
    _check_parameters(segments)
    return segments


def _segment(piece: str) -> Segment:
    if piece == "":
        raise TemplateError("A path has no empty segment (//).")
    if "{" in piece or "}" in piece:
        found = PARAM_SEGMENT.fullmatch(piece)
        if found is None:
            raise TemplateError(
                f"{piece!r} is not a parameter: write {{name}} or {{name...}} as a whole "
                "segment, the name made of letters, digits and _."
            )
        if len(found["name"]) > MAX_NAME_LENGTH:
            raise TemplateError(f"A parameter name has at most {MAX_NAME_LENGTH} characters.")
        return Segment(REST if found["rest"] else PARAM, found["name"])
    if "?" in piece or "#" in piece:
        raise TemplateError("A path has no query (?) or fragment (#).")
    try:
        literal = PATH_TOKEN.sub(_normalize_token, piece)
    except PathRefused as refused:
        raise TemplateError(f"{piece!r}: {refused}") from None
    if literal in (".", ".."):
        raise TemplateError("A path has no dot segments (. or ..).")
    return Segment(LITERAL, literal)


def _check_parameters(segments: tuple[Segment, ...]) -> None:
    names = [segment.text for segment in segments if segment.kind != LITERAL]
    if len(set(names)) != len(names):
        raise TemplateError("Each parameter name appears once in a path.")
    if any(segment.kind == REST for segment in segments[:-1]):
        raise TemplateError("A {name...} parameter is allowed only as the last segment.")


def normalized_template(template: str) -> str:
    """The template in the form it is stored and shown."""
    return "/" + "/".join(str(segment) for segment in parse_template(template))


def parse_methods(methods: object) -> frozenset[str]:
    """A route's methods: known HTTP methods, or ``["*"]`` alone; TemplateError otherwise."""
    if not isinstance(methods, list | tuple) or not methods:
        raise TemplateError('Give a list of HTTP methods, such as ["GET", "HEAD"], or ["*"].')
    for method in methods:
        if method != ANY_METHOD and method not in METHODS:
            raise TemplateError(f"{method!r} is not one of {', '.join(METHODS)} or *.")
    if ANY_METHOD in methods and len(methods) > 1:
        raise TemplateError("* means every method: list it alone.")
    if len(set(methods)) != len(methods):
        raise TemplateError("A method is listed twice.")
    return frozenset(methods)


@dataclass(frozen=True, slots=True)
class Route:
    """One compiled route: what it matches and what it demands."""

    position: int
    methods: frozenset[str]
    template: str
    public: bool = False
    scopes: tuple[frozenset[str], ...] = ()  # alternatives; empty: any valid token
    segments: tuple[Segment, ...] = ()

    @classmethod
    def build(
        cls,
        position: int,
        methods: Sequence[str],
        template: str,
        public: bool = False,
        scopes: Iterable[str] = (),
    ) -> "Route":
        """A route from its stored fields; TemplateError when they are not valid."""
        segments = parse_template(template)
        return cls(
            position=position,
            methods=parse_methods(list(methods)),
            template="/" + "/".join(map(str, segments)),
            public=bool(public),
            scopes=tuple(frozenset(alternative.split()) for alternative in scopes),
            segments=segments,
        )

    @property
    def label(self) -> str:
        """How messages name the route: its position, methods and template."""
        methods = ",".join(sorted(self.methods))
        return f"route {self.position + 1} ({methods} {self.template})"

    @property
    def scope_alternatives(self) -> tuple[str, ...]:
        """The alternatives as space-separated strings, sorted within each."""
        return tuple(" ".join(sorted(alternative)) for alternative in self.scopes)

    def captures(self, segments: tuple[str, ...]) -> dict[str, str]:
        """The parameters of a path this route matched."""
        params = {}
        for index, segment in enumerate(self.segments):
            if segment.kind == PARAM:
                params[segment.text] = segments[index]
            elif segment.kind == REST:
                params[segment.text] = "/".join(segments[index:])
        return params

    def matches(self, segments: tuple[str, ...]) -> bool:
        """Whether the route's template matches these segments (one route, for explanations)."""
        for index, segment in enumerate(self.segments):
            if segment.kind == REST:
                return len(segments) > index
            if index >= len(segments):
                return False
            if segment.kind == LITERAL and segment.text != segments[index]:
                return False
        return len(segments) == len(self.segments)


def scopes_allow(granted: Set[str], alternatives: Sequence[frozenset[str]]) -> bool:
    """Whether granted scopes meet a route: no alternatives, or one granted in full."""
    return not alternatives or any(alternative <= granted for alternative in alternatives)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What matching a request gave: the route (None: refused), its parameters and why."""

    route: Route | None
    params: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    code: str = ""  # "" on a match; no_route, or the path refusal's code
    reason: str = ""
    path: str = ""  # the normalized path matched

    @property
    def matched(self) -> bool:
        """Whether a route was found."""
        return self.route is not None


@dataclass(slots=True)
class _Node:
    """A trie node: routes sharing a template prefix (literals by text, one {name} child)."""

    depth: int
    kinds: tuple[int, ...]
    literals: dict[str, "_Node"] = field(default_factory=dict)
    param: "_Node | None" = None
    exact: dict[str, Route] = field(default_factory=dict)  # method -> route ending here
    rest: dict[str, Route] = field(default_factory=dict)  # method -> {name...} route here
    claims: dict[str, list[Route]] = field(default_factory=dict)  # every route, to find overlaps


class _State:
    """A state of the automaton: the trie nodes a path prefix reaches, with the best routes."""

    __slots__ = ("exact", "other", "rest", "step")

    def __init__(self) -> None:
        self.step: dict[str, _State] = {}
        self.other: _State | None = None
        self.exact: dict[str, tuple[int, Route]] = {}  # method key -> (rank, route)
        self.rest: dict[str, tuple[int, Route]] = {}


class RouteTable:
    """A tenant's routes compiled for matching in O(path segments), independent of their number."""

    def __init__(self, routes: Sequence[Route] = (), broken: str = "") -> None:
        self.routes = tuple(routes)
        self.broken = broken  # why every request is refused: routes stored past validation
        root = _Node(0, ())
        for route in self.routes:
            _insert(root, route)
        self.problems = _overlaps(root)
        self._named = frozenset(m for route in self.routes for m in route.methods) - {ANY_METHOD}
        self._start = _Automaton(root, self._named).build() if not self.problems else None

    @classmethod
    def compile(cls, routes: Sequence[Route]) -> "RouteTable":
        """The table for these routes; RouteConflict when some overlap or there are too many."""
        if len(routes) > MAX_ROUTES:
            raise RouteConflict([f"A tenant has at most {MAX_ROUTES} routes."])
        table = cls(routes)
        if table.problems:
            raise RouteConflict(table.problems)
        return table

    @classmethod
    def lenient(cls, routes: Sequence[Route]) -> "RouteTable":
        """The table for stored routes; when they cannot compile, one that refuses everything."""
        try:
            return cls.compile(routes)
        except RouteConflict as conflict:
            return cls((), broken=str(conflict))

    def match(self, method: str, raw_path: str) -> Outcome:
        """The most specific route for this method and path, or why there is none."""
        try:
            segments = normalize_path(raw_path)
        except PathRefused as refused:
            return Outcome(None, code=refused.code, reason=str(refused))
        path = "/" + "/".join(segments)
        if self.broken:
            return Outcome(None, code="no_route", reason=self.broken, path=path)
        found = self._decide(method, segments)
        if found is None:
            reason = f"No route matches {method} {path}."
            return Outcome(None, code="no_route", reason=reason, path=path)
        params = MappingProxyType(found.captures(segments))
        reason = f"{found.label} is the most specific route for {method} {path}."
        return Outcome(found, params, reason=reason, path=path)

    def _decide(self, method: str, segments: tuple[str, ...]) -> Route | None:
        """The route for ``method``; HEAD is decided as GET unless a more specific route takes
        HEAD, since upstreams run GET's handler for HEAD (a catch-all must not open it)."""
        found = self._find(method, segments)
        if method == "HEAD":
            as_get = self._find("GET", segments)
            if as_get is not None and (found is None or as_get[0] >= found[0]):
                found = as_get
        return found[1] if found is not None else None

    def _find(self, method: str, segments: tuple[str, ...]) -> tuple[int, Route] | None:
        method = method if method in self._named else ANY_METHOD
        state, best = self._start, None
        for segment in segments:
            if state is None:
                break
            candidate = state.rest.get(method)
            if candidate is not None and (best is None or candidate[0] > best[0]):
                best = candidate
            state = state.step.get(segment, state.other)
        else:
            candidate = state.exact.get(method) if state is not None else None
            if candidate is not None and (best is None or candidate[0] > best[0]):
                best = candidate
        return best

    def explain(self, method: str, raw_path: str) -> tuple[Outcome, list[str]]:
        """The match and, for the admin, each other route the path meets and why it lost."""
        outcome = self.match(method, raw_path)
        if not outcome.path:
            return outcome, []
        segments = normalize_path(raw_path)
        notes = []
        for route in self.routes:
            if route is outcome.route or not route.matches(segments):
                continue
            if route.methods & {method, ANY_METHOD} or (
                method == "HEAD" and "GET" in route.methods
            ):
                notes.append(f"{route.label} matches too, but is less specific.")
            else:
                notes.append(f"{route.label} matches the path, but not the method {method}.")
        return outcome, notes


def _insert(root: _Node, route: Route) -> None:
    node = root
    for segment in route.segments:
        if segment.kind == REST:
            for method in route.methods:
                node.rest.setdefault(method, route)
            node.claims.setdefault("rest", []).append(route)
            return
        node = _child(node, segment)
    for method in route.methods:
        node.exact.setdefault(method, route)
    node.claims.setdefault("exact", []).append(route)


def _child(node: _Node, segment: Segment) -> _Node:
    if segment.kind == LITERAL:
        child = node.literals.get(segment.text)
        if child is None:
            child = node.literals[segment.text] = _Node(node.depth + 1, (*node.kinds, LITERAL))
        return child
    if node.param is None:
        node.param = _Node(node.depth + 1, (*node.kinds, PARAM))
    return node.param


def _overlaps(root: _Node) -> list[str]:
    """One sentence per pair of routes that match exactly the same requests for some method."""
    problems: list[str] = []
    for node in _walk(root):
        for routes in node.claims.values():
            problems += _pairs(routes)
    return problems[:MAX_PROBLEMS]


def _pairs(routes: list[Route]) -> list[str]:
    """Clashes among routes of one node and kind: their method sets meet (* meets all)."""
    problems, owner = [], {}
    for route in routes:
        clashes: dict[Route, set[str]] = {}
        if ANY_METHOD in route.methods:
            for method, other in owner.items():
                clashes.setdefault(other, set()).add(method)
        else:
            for method in route.methods:
                for other in (owner.get(method), owner.get(ANY_METHOD)):
                    if other is not None:
                        clashes.setdefault(other, set()).add(method)
        for other, methods in clashes.items():
            named = ", ".join(sorted(methods - {ANY_METHOD}) or ["every method"])
            problems.append(
                f"{other.label} and {route.label} match exactly the same requests for "
                f"{named}: remove one, or change its path or methods."
            )
        for method in route.methods:
            owner.setdefault(method, route)
    return problems


def _walk(root: _Node) -> Iterable[_Node]:
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.literals.values())
        if node.param is not None:
            stack.append(node.param)


class _Automaton:
    """Subset construction over the trie: each state is the set of nodes a path prefix reaches."""

    def __init__(self, root: _Node, named: frozenset[str]) -> None:
        self.root = root
        self.methods = (*sorted(named), ANY_METHOD)
        nodes = list(_walk(root))
        self.limit = STATES_PER_NODE * len(nodes) + SPARE_STATES
        self.budget = MEMBERS_PER_NODE * len(nodes) + SPARE_MEMBERS  # bounds the compile's work
        self.rank = _ranks(nodes)
        self.states: dict[frozenset[int], _State] = {}
        self.by_id = {id(node): node for node in nodes}

    def build(self) -> _State:
        """The start state, every state reachable from it built."""
        start = self._state(frozenset({id(self.root)}))
        pending = [frozenset({id(self.root)})]
        while pending:
            key = pending.pop()
            state, members = self.states[key], [self.by_id[i] for i in key]
            params = {id(node.param) for node in members if node.param is not None}
            steps: dict[str, set[int]] = {}
            for node in members:
                for text, child in node.literals.items():
                    steps.setdefault(text, set(params)).add(id(child))
            # Each state copies its members' literals: charged too, or n states sharing n
            # literals (/{a}/{b}/l{i} beside /k{i}/{b}/m{i}) would build n * n steps.
            self._charge(sum(len(ids) for ids in steps.values()))
            for text, ids in steps.items():
                state.step[text] = self._target(frozenset(ids), pending)
            state.other = self._target(frozenset(params), pending) if params else None
        return start

    def _target(self, key: frozenset[int], pending: list[frozenset[int]]) -> _State:
        if key not in self.states:
            if len(self.states) >= self.limit:
                raise RouteConflict([TOO_AMBIGUOUS])
            self._charge(len(key))
            self._state(key)
            pending.append(key)
        return self.states[key]

    def _charge(self, work: int) -> None:
        """Spend compile work from the budget; RouteConflict once it is spent."""
        self.budget -= work
        if self.budget < 0:
            raise RouteConflict([TOO_AMBIGUOUS])

    def _state(self, key: frozenset[int]) -> _State:
        state = self.states[key] = _State()
        members = [self.by_id[i] for i in key]
        for where in ("exact", "rest"):
            table = getattr(state, where)
            for method in self.methods:
                best = self._best(members, where, method)
                if best is not None:
                    table[method] = best
        return state

    def _best(self, members: list[_Node], where: str, method: str) -> tuple[int, Route] | None:
        best = None
        for node in members:
            routes: dict[str, Route] = getattr(node, where)
            route = routes.get(method) or routes.get(ANY_METHOD)
            if route is not None:
                rank = self.rank[(node.kinds, where)]
                if best is None or rank > best[0]:
                    best = (rank, route)
        return best


def _ranks(nodes: list[_Node]) -> dict[tuple[tuple[int, ...], str], int]:
    """Specificity as one number: kinds compared segment by segment (a {name...} as a segment)."""
    keys = {(node.kinds, "exact") for node in nodes} | {(node.kinds, "rest") for node in nodes}

    def order(key: tuple[tuple[int, ...], str]) -> tuple[int, ...]:
        kinds, where = key
        return (*kinds, REST) if where == "rest" else kinds

    return {key: rank for rank, key in enumerate(sorted(keys, key=order))}


EMPTY_TABLE = RouteTable()


def stored_table(rows: Iterable[tuple[Sequence[str], str, bool, Sequence[str]]]) -> RouteTable:
    """The table of stored routes (methods, path, public, scopes), in their order; routes that
    cannot compile (stored past validation) give a table that refuses every request."""
    try:
        routes = [Route.build(index, *row) for index, row in enumerate(rows)]
    except TemplateError as exc:
        return RouteTable((), broken=f"A stored route is not valid: {exc}")
    return RouteTable.lenient(routes)


def match(tenant_config: Any, method: str, raw_path: str) -> Outcome:
    """The route of a tenant for a request's method and raw path (query ignored), and why.

    ``raw_path`` is text as the client sent it; a WSGI ``PATH_INFO`` is latin-1, so a caller with
    one re-decodes its bytes as UTF-8 first (non-ASCII characters are matched as UTF-8 escapes).
    """
    return tenant_config.routes.match(method, raw_path)
