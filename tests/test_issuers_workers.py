"""A tenant with two issuers through two gunicorn workers, in both modes.

The development issuer serves any name under its URL: "canonical" and "custom" stand for a
tenant's canonical Auth0 domain and its custom domain, "elsewhere" for an issuer it does not list.
"""

import time

import jwt
import requests

from tests.processes import Stack
from tests.test_control_plane import (  # noqa: F401 - stack: the module's processes
    COOLDOWN,
    OK,
    PROPAGATION,
    answered,
    assert_every,
    fresh_tokens,
    stack,
)

AUDIENCE = "https://api.dual.test"
PRIVATE = "/t/{slug}/api/private"


def import_dual(stack: Stack, slug: str) -> tuple[str, str]:  # noqa: F811
    """A tenant listing two issuer names of its own; their names."""
    canonical, custom = f"{slug}-canonical", f"{slug}-custom"
    issuers = [{"issuer": stack.issuer_url(canonical)}, {"issuer": stack.issuer_url(custom)}]
    stack.import_tenants(
        {"slug": slug, "name": slug.title(), "issuers": issuers, "audiences": [AUDIENCE]}
    )
    return canonical, custom


def key_set_fetches(stack: Stack) -> int:  # noqa: F811
    """Every key set request the development issuer answered, whatever the issuer name."""
    stats = requests.get(f"{stack.issuer}/_stats", timeout=10).json()
    return sum(n for what, n in stats.items() if what.endswith("/jwks.json"))


def test_tokens_of_both_issuers_are_accepted_and_a_third_refused_without_a_fetch(
    stack: Stack,  # noqa: F811
) -> None:
    canonical, custom = import_dual(stack, "dual")
    path = PRIVATE.format(slug="dual")
    for name in (canonical, custom):
        stack.web.until(OK, path, token=fresh_tokens(stack, name, AUDIENCE), within=PROPAGATION)
    elsewhere = fresh_tokens(stack, "dual-elsewhere", AUDIENCE)
    unknown_kid = fresh_tokens(stack, "dual-elsewhere", AUDIENCE)
    time.sleep(COOLDOWN + 1.2)  # no cooldown of the first fetches could hide a fetch
    fetches = key_set_fetches(stack)

    answers = stack.web.everyone(path, token=elsewhere)
    answers += stack.web.everyone(path, token=lambda: forged_kid(unknown_kid()))

    assert_every(answers, answered(401, "invalid_issuer"))
    assert key_set_fetches(stack) == fetches
    assert stack.jwks_fetches("dual-elsewhere") == 0


def forged_kid(token: str) -> str:
    """The token with a key id no issuer publishes (its signature no longer matters)."""
    _header, payload, signature = token.split(".")
    other = jwt.utils.base64url_encode(b'{"alg":"RS256","kid":"never-published"}').decode()
    return f"{other}.{payload}.{signature}"


def test_rotation_at_one_issuer_reaches_every_worker_while_the_others_tokens_keep_working(
    stack: Stack,  # noqa: F811
) -> None:
    canonical, custom = import_dual(stack, "rotating")
    path = PRIVATE.format(slug="rotating")
    held = stack.token(canonical, AUDIENCE)
    stack.web.until(OK, path, token=held, within=PROPAGATION)
    stack.web.until(OK, path, token=fresh_tokens(stack, custom, AUDIENCE), within=PROPAGATION)
    time.sleep(COOLDOWN + 1.2)  # the first fetches' cooldowns are over
    canonical_fetches = stack.jwks_fetches(canonical)

    rotated = stack.rotate(custom)
    after = fresh_tokens(stack, custom, AUDIENCE)

    assert jwt.get_unverified_header(after())["kid"] == rotated["kid"]
    stack.web.until(OK, path, token=after, within=PROPAGATION)
    assert_every(stack.web.everyone(path, token=held), OK)
    assert_every(stack.web.everyone(path, token=fresh_tokens(stack, canonical, AUDIENCE)), OK)
    assert stack.jwks_fetches(canonical) == canonical_fetches
