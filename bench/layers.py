"""What each layer of an API request costs, in CPU per request (issue 21).

Sets up the redis mode's services and tenants as ``bench/inprocess.py`` does, then calls the WSGI
application from this process with one layer taken out at a time (a middleware left out of
MIDDLEWARE, or one step of ours replaced by a no-op) and prints, per scenario, the CPU
microseconds per request with everything in, and what each layer's absence saves. Rounds
interleave the variants; each figure is the best of ``--rounds``. The request log line is
written as deployed (``LOG_LEVEL=INFO``, JSON) to /dev/null.

    .venv/bin/python -m bench.layers [--tenants 10] [--requests 300] [--rounds 30] [--markdown]
"""

import argparse
import contextlib
import logging.config
import os
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any
from unittest import mock

from bench.bench import add_tenants
from bench.fixtures import Tokens, public_path, say, scoped_path, slug
from bench.inprocess import caller, cpu_microseconds
from bench.stack import Stack, start_platform

Variant = Callable[[], contextlib.AbstractContextManager]


def scenarios(tokens: Tokens) -> dict[str, tuple[int, list]]:
    """The measured requests: the open endpoint, a repeated token, and DRF with and without."""
    return {
        "public": (200, [(public_path(0), "")]),
        "scoped_repeat": (200, [(scoped_path(0), tokens.bearer(0))]),
        "bare_drf": (200, [(f"/t/{slug(0)}/api/bench-drf", "")]),
        "bare_django": (200, [(f"/t/{slug(0)}/api/bench-django", "")]),
    }


@contextlib.contextmanager
def nothing() -> Iterator[None]:
    """Everything in, as deployed."""
    yield


SESSIONS = "django.contrib.sessions.middleware.SessionMiddleware"
# They refuse to run without sessions: taking sessions out takes them out too.
NEED_SESSIONS = (
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
)


def without_middleware(*dotted: str) -> Variant:
    """MIDDLEWARE less these entries."""

    @contextlib.contextmanager
    def variant() -> Iterator[None]:
        from django.conf import settings
        from django.test.utils import override_settings

        with override_settings(MIDDLEWARE=[m for m in settings.MIDDLEWARE if m not in dotted]):
            yield

    return variant


def middleware_variants() -> dict[str, Variant]:
    """Each middleware left out (sessions with the two that need them)."""
    from django.conf import settings

    found = {}
    for dotted in settings.MIDDLEWARE:
        name = f"middleware {dotted.rsplit('.', 1)[1]}"
        if dotted == SESSIONS:
            found[f"{name} (+ auth, messages)"] = without_middleware(dotted, *NEED_SESSIONS)
        else:
            found[name] = without_middleware(dotted)
    return found


def patched(target: str, replacement: Any) -> Variant:
    """One attribute replaced (a step of ours made a no-op)."""
    return lambda: mock.patch(target, replacement)


@contextlib.contextmanager
def no_log_line() -> Iterator[None]:
    """The request log line filtered out by level, as LOG_LEVEL=WARNING does."""
    request_logger = logging.getLogger("ops.middleware")
    request_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        request_logger.setLevel(logging.NOTSET)


@contextlib.contextmanager
def no_rate_limits() -> Iterator[None]:
    """The limiter asked nothing: no early check, no count."""
    from tenants.views import limiter

    with (
        mock.patch.object(limiter, "known_over", lambda limits: None),
        mock.patch.object(limiter, "count", lambda limits: None),
    ):
        yield


@contextlib.contextmanager
def tenant_given() -> Iterator[None]:
    """The tenant handed over without looking it up."""
    from tenants.directory import directory

    tenant = directory.by_slug(slug(0))
    with mock.patch("tenants.views.resolve_tenant", lambda request, slug: tenant):
        yield


@contextlib.contextmanager
def no_negotiation() -> Iterator[None]:
    """Content negotiation skipped: JSON chosen outright."""
    from rest_framework.renderers import JSONRenderer
    from rest_framework.views import APIView

    chosen = (JSONRenderer(), JSONRenderer.media_type)
    with mock.patch.object(APIView, "perform_content_negotiation", lambda *a, **k: chosen):
        yield


# Issue 21's cuts, undone: what API requests ran before.
DJANGO_WEB_MIDDLEWARE = {
    "ops.middleware.WebSessionMiddleware": SESSIONS,
    "ops.middleware.WebAuthenticationMiddleware": NEED_SESSIONS[0],
    "ops.middleware.WebMessageMiddleware": NEED_SESSIONS[1],
}
BACK = "back: "  # a variant that adds a layer: its row is what it adds, not what it saves


@contextlib.contextmanager
def django_web_middleware() -> Iterator[None]:
    """Django's session, login and message middleware for every path, API included."""
    from django.conf import settings
    from django.test.utils import override_settings

    every_path = [DJANGO_WEB_MIDDLEWARE.get(m, m) for m in settings.MIDDLEWARE]
    with override_settings(MIDDLEWARE=every_path):
        yield


@contextlib.contextmanager
def library_cors() -> Iterator[None]:
    """django-cors-headers' own middleware, which builds request.headers to look for Origin."""
    from django.conf import settings
    from django.test.utils import override_settings

    ours, theirs = "tenants.cors.TenantCorsMiddleware", "corsheaders.middleware.CorsMiddleware"
    with override_settings(MIDDLEWARE=[theirs if m == ours else m for m in settings.MIDDLEWARE]):
        yield


@contextlib.contextmanager
def drf_negotiation() -> Iterator[None]:
    """DRF's own content negotiation, parsing every Accept."""
    from rest_framework.negotiation import DefaultContentNegotiation
    from rest_framework.views import APIView

    with mock.patch.object(APIView, "content_negotiation_class", DefaultContentNegotiation):
        yield


def variants() -> dict[str, Variant]:
    """Each layer's absence, by the name of the layer."""
    return {
        "everything": nothing,
        **middleware_variants(),
        "request log line (INFO, JSON)": no_log_line,
        "metrics (count_request)": patched("ops.middleware.count_request", lambda *a: None),
        "traffic counting": patched(
            "ops.middleware.traffic_counter", SimpleNamespace(record=lambda *a: None)
        ),
        "rate-limit bookkeeping": no_rate_limits,
        "tenant resolution": tenant_given,
        "content negotiation": no_negotiation,
        f"{BACK}Django's web middleware on API paths": django_web_middleware,
        f"{BACK}DRF's negotiation": drf_negotiation,
        f"{BACK}django-cors-headers' middleware": library_cors,
        "JSON rendering": patched(
            "rest_framework.renderers.JSONRenderer.render", lambda *a, **k: b"{}"
        ),
    }


def application() -> Callable:
    """A WSGI application built now, with the middleware settings of this moment."""
    from django.core.handlers.wsgi import WSGIHandler

    return WSGIHandler()


def measure(tokens: Tokens, requests: int, rounds: int) -> dict[str, dict[str, float]]:
    """Best CPU µs per request of each scenario under each variant, over interleaved rounds."""
    requests_of = scenarios(tokens)
    best: dict[str, dict[str, float]] = {}
    for number in range(rounds):
        say(f"round {number + 1} of {rounds}")
        for name, variant in variants().items():
            with variant():
                app = application()
                for scenario, (expect, lines) in requests_of.items():
                    call = caller(app, expect)
                    cpu_microseconds(call, lines, 50)  # warm: this handler's first requests
                    cost = cpu_microseconds(call, lines, requests)
                    row = best.setdefault(name, {})
                    row[scenario] = min(cost, row.get(scenario, cost))
    return best


def table(best: dict[str, dict[str, float]], markdown: bool) -> str:
    """Everything in, then what each layer's absence saves, per scenario (µs per request)."""
    full = best["everything"]
    names = list(full)
    lines = []
    if markdown:
        lines += ["| layer | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    lines.append(row("everything in (µs/request)", [full[n] for n in names], markdown))
    lines.append(
        row(
            "DRF's own dispatch (bare_drf - bare_django)",
            [full["bare_drf"] - full["bare_django"]],
            markdown,
        )
    )
    for name, costs in best.items():
        if name.startswith(BACK):
            lines.append(row(f"{name} adds", [costs[n] - full[n] for n in names], markdown))
        elif name != "everything":
            lines.append(row(f"{name} saves", [full[n] - costs[n] for n in names], markdown))
    return "\n".join(lines)


def row(title: str, values: list[float], markdown: bool) -> str:
    """One line of the table."""
    if markdown:
        return f"| {title} | " + " | ".join(f"{value:.1f}" for value in values) + " |"
    return f"{title:52s}" + "".join(f"{value:14.1f}" for value in values)


@contextlib.contextmanager
def stderr_discarded() -> Iterator[None]:
    """The log lines go where they would, but to /dev/null: their cost counts, not their text."""
    saved = os.dup(2)
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main() -> None:
    """Set up, measure every variant, print the table, tear down."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()
    with Stack() as stack:
        plat = start_platform(stack, "redis")
        add_tenants(plat, args.tenants)
        tokens = Tokens(stack.workdir / "keys", plat.issuer_url)
        from django.conf import settings

        from ops.logging import logging_config

        settings.ROOT_URLCONF = "bench.layer_urls"
        logging.config.dictConfig(logging_config("INFO", json_lines=True))
        with (
            stderr_discarded()
            if not os.environ.get("BENCH_SHOW_LOGS")
            else contextlib.nullcontext()
        ):
            best = measure(tokens, args.requests, args.rounds)
        print("CPU µs per request with everything in, then what each layer's absence saves")
        print(row("", [], False) + "".join(f"{name:>14s}" for name in best["everything"]))
        print(table(best, args.markdown))


if __name__ == "__main__":
    main()
