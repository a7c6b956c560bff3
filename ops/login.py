"""Admin login protection: the client address django-axes counts by, and unlocking a pair.

Failed logins are counted per username and client address together (the pair), in the shared
store; a superuser unlocks a pair on the admin page ``/admin/login-lockouts/`` or with
``manage.py axes_reset_ip_username <address> <username>``.
"""

import ipaddress
import logging

from axes.helpers import get_cache, get_client_cache_keys, get_cool_off, get_failure_limit
from axes.models import AccessAttempt
from axes.utils import reset
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_http_methods

logger = logging.getLogger(__name__)


def client_address(request: HttpRequest, calling_proxy: bool = False) -> str | None:
    """The client's address: the one the outermost trusted proxy saw, else the peer's.

    ``calling_proxy``: the peer is itself a proxy we trust (a forward-auth decision's caller,
    which presented the proxy secret), one more hop than TRUSTED_PROXY_COUNT.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    peer = canonical_address(remote) or remote or None
    hops = settings.TRUSTED_PROXY_COUNT + calling_proxy
    if hops < 1:
        return peer
    # Each trusted proxy appends what it saw; entries left of theirs are the client's to invent.
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
    if len(forwarded) < hops:
        return peer
    return canonical_address(forwarded[-hops]) or peer


def canonical_address(text: str) -> str | None:
    """An IP address in one spelling (IPv4-mapped IPv6 as IPv4), or None if ``text`` is none."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return str(getattr(address, "ipv4_mapped", None) or address)


def failures_of(username: str, address: str) -> int:
    """The failed logins counted against this pair in its cool-off window."""
    keys = get_client_cache_keys(AccessAttempt(username=username, ip_address=address))
    return max((get_cache().get(key, 0) for key in keys), default=0)


def unlock(username: str, address: str) -> int:
    """Forget the pair's failures, unlocking it at once; how many failures it had."""
    failures = failures_of(username, address)
    reset(ip=address, username=username)
    return failures


class UnlockForm(forms.Form):
    """A username and the address it was locked out from, as the lockout page names them."""

    username = forms.CharField(max_length=150)
    address = forms.GenericIPAddressField(label="Client address", unpack_ipv4=True)

    def clean_address(self) -> str:
        """The address spelled as ``client_address`` spells it, so the pair's key matches."""
        return canonical_address(self.cleaned_data["address"])


@require_http_methods(["GET", "POST"])
def login_lockouts_view(request: HttpRequest) -> HttpResponse:
    """Superusers only: the lockout policy, and a form that unlocks a username at an address."""
    if not request.user.is_superuser:
        raise PermissionDenied
    form = UnlockForm(request.POST if request.method == "POST" else None)
    if form.is_valid():
        username, address = form.cleaned_data["username"], form.cleaned_data["address"]
        failures = unlock(username, address)
        logger.warning("admin login unlocked", extra={"username": username, "address": address})
        messages.success(request, unlocked_message(username, address, failures))
        return HttpResponseRedirect(request.path)
    context = {
        **admin.site.each_context(request),
        "title": "Login lockouts",
        "form": form,
        "failure_limit": get_failure_limit(request, None),
        "cooloff": get_cool_off(request),
    }
    return TemplateResponse(request, "admin/login_lockouts.html", context)


def unlocked_message(username: str, address: str, failures: int) -> str:
    """What the superuser is told after an unlock."""
    if not failures:
        return f"No failed logins were counted for {username} at {address}; nothing to unlock."
    return f"Unlocked {username} at {address} ({failures} failed login(s) forgotten)."
