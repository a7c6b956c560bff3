"""The operator's admin: tenants with their parts inline, key set health, issuer checks, roles.

Superusers manage every tenant. Tenant operators (staff users listed on a tenant) see and edit
only their tenants, cannot change a tenant's slug or hosts, and cannot create or delete tenants.
"""

import time
from datetime import UTC, datetime
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters

from authz.conf import authz_settings
from authz.diagnostics import check_issuer
from authz.endpoints import all_endpoints
from authz.jwks import KeySetHealth, KeySetRecord, key_set_health, read_records
from authz.store import claim, derived_key, internal_key, shared_store
from authz.tasks import refresh_key_set
from ops.admin_actions import CheckedSelectionMixin
from tenants.debugger import (
    Answer,
    CannotDebug,
    debug,
    debug_route,
    default_url,
    protected_endpoints,
)
from tenants.directory import directory
from tenants.forms import (
    AudienceForm,
    CorsOriginForm,
    HostForm,
    IssuerForm,
    IssuerFormSet,
    RequiredInlineFormSet,
    RouteForm,
    RouteFormSet,
    ScopeRuleForm,
    TenantForm,
    TokenDebugForm,
)
from tenants.models import (
    Route,
    ScopeRule,
    Tenant,
    TenantAudience,
    TenantCorsOrigin,
    TenantHost,
    TenantIssuer,
)
from tenants.routes import MAX_ROUTES, METHODS, RouteTable, stored_table
from tenants.traffic import (
    RATE_LIMITED,
    REPLAY,
    TenantTraffic,
    refusal_shares,
    tenant_traffic,
)
from tenants.validation import MAX_ISSUERS

REFRESH_WAIT_SECONDS = 3.0


def operates(request: HttpRequest, tenant: Tenant | None) -> bool:
    """Whether the user may configure this tenant (any of theirs, when none is given)."""
    user = request.user
    if user.is_superuser:
        return True
    if not (user.is_active and user.is_staff):
        return False
    tenants = user.operated_tenants.all()
    return tenants.filter(pk=tenant.pk).exists() if tenant else tenants.exists()


def health_of(tenant: Tenant) -> list[tuple[TenantIssuer, KeySetHealth]]:
    """Each listed issuer of a saved tenant with the health of its key set: one store read."""
    issuers = list(tenant.issuers.all())
    records = read_records(sorted({issuer.jwks_url for issuer in issuers}))
    return [(issuer, key_set_health(records.get(issuer.jwks_url))) for issuer in issuers]


class OperatedInline(admin.TabularInline):
    """Rows of a tenant: editable by whoever operates the tenant."""

    extra = 0

    def has_view_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return operates(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return operates(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return operates(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return operates(request, obj)


class HostInline(OperatedInline):
    """Hostnames that serve the tenant: only superusers change them (they route traffic)."""

    model = TenantHost
    form = HostForm

    def has_add_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return request.user.is_superuser


class IssuerInline(OperatedInline):
    """The issuers whose tokens the tenant takes, each by its exact iss; at least one."""

    model = TenantIssuer
    form = IssuerForm
    formset = IssuerFormSet
    min_num = 1
    max_num = MAX_ISSUERS
    verbose_name_plural = (
        "issuers (an Auth0 domain is enough; the overrides serve custom domains and other "
        "OIDC issuers; a token is checked against the one its iss names)"
    )


class AudienceInline(OperatedInline):
    """API identifiers accepted in ``aud``; at least one."""

    model = TenantAudience
    form = AudienceForm
    formset = RequiredInlineFormSet
    min_num = 1


class ScopeRuleInline(OperatedInline):
    """Per-endpoint scopes, replacing the endpoint's default."""

    model = ScopeRule
    form = ScopeRuleForm
    verbose_name_plural = "scope rules (an endpoint without a rule demands its default)"


class CorsOriginInline(OperatedInline):
    """Browser origins allowed to call the tenant's API."""

    model = TenantCorsOrigin
    form = CorsOriginForm


class RouteInline(OperatedInline):
    """The tenant's own API paths and what each demands; the most specific route wins."""

    model = Route
    form = RouteForm
    formset = RouteFormSet
    max_num = MAX_ROUTES
    verbose_name_plural = "routes (a request no route matches is refused: no_route)"


class HealthFilter(admin.SimpleListFilter):
    """Filter tenants by the health of their stored key sets: any issuer's in that state."""

    title = "key set health"
    parameter_name = "health"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [
            ("ok", "OK"),
            ("degraded", "Last fetch failed"),
            ("empty", "Issuer publishes no key"),
            ("stale", "Stale"),
            ("missing", "No keys"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if not self.value():
            return queryset
        issuers = list(TenantIssuer.objects.filter(tenant__in=queryset))
        records = read_records(sorted({issuer.jwks_url for issuer in issuers}))
        matching = {
            issuer.tenant_id
            for issuer in issuers
            if key_set_health(records.get(issuer.jwks_url)).status == self.value()
        }
        return queryset.filter(pk__in=matching)


class RefusingFilter(admin.SimpleListFilter):
    """Tenants refusing more than a share of their requests in the last hour."""

    title = "refused in the last hour"
    parameter_name = "refusing"
    SHARES = {"10": 0.10, "25": 0.25, "50": 0.50}

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [(value, f"more than {value}%") for value in self.SHARES]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        share = self.SHARES.get(self.value() or "")
        if share is None:
            return queryset
        refusing = [
            slug
            for slug, (total, refused) in refusal_shares().items()
            if total and refused / total > share
        ]
        return queryset.filter(slug__in=refusing)


@admin.register(Tenant)
class TenantAdmin(CheckedSelectionMixin, admin.ModelAdmin):
    """Tenants and their parts on one page, with the key set panel and issuer actions."""

    form = TenantForm
    change_form_template = "admin/tenants/tenant/change_form.html"
    list_display = (
        "slug",
        "name",
        "active",
        "issuer_list",
        "audience_list",
        "host_list",
        "key_set",
        "refused_last_hour",
    )
    list_filter = ("active", HealthFilter, RefusingFilter)
    search_fields = (
        "slug",
        "name",
        "issuers__domain",
        "issuers__issuer_override",
        "hosts__hostname",
    )
    actions = ("refresh_keys_action",)
    inlines = (
        IssuerInline,
        AudienceInline,
        HostInline,
        ScopeRuleInline,
        CorsOriginInline,
        RouteInline,
    )
    filter_horizontal = ("operators",)

    def get_fieldsets(self, request: HttpRequest, obj: Tenant | None = None) -> list[tuple]:
        """In the order an operator thinks: who, which issuer, then the fine print."""
        advanced = [
            "algorithms",
            "leeway",
            "scope_claims",
            "token_profile",
            "organizations",
            "dpop",
            "dpop_algorithms",
            "dpop_nonce",
            "provision_users",
            "admin_scope",
        ]
        if request.user.is_superuser:
            advanced.append("operators")
        return [
            ("Identity", {"fields": ["slug", "name", "active"]}),
            (
                "Rate limits",
                {
                    "fields": ["rate_limit_per_tenant", "rate_limit_per_subject"],
                    "description": "Blank: the platform's default. How often they were hit is "
                    "in the traffic panel below (rate-limited requests).",
                },
            ),
            ("Advanced", {"fields": advanced, "classes": ["collapse"]}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Tenant | None = None) -> list[str]:
        return [] if request.user.is_superuser else ["slug"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request).prefetch_related("issuers", "audiences", "hosts")
        if request.user.is_superuser:
            return queryset
        return queryset.filter(operators=request.user)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return operates(request, None)

    def has_view_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return operates(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return operates(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return request.user.is_superuser

    @admin.display(description="issuers")
    def issuer_list(self, tenant: Tenant) -> str:
        return ", ".join(issuer.issuer for issuer in tenant.issuers.all())

    @admin.display(description="audiences")
    def audience_list(self, tenant: Tenant) -> str:
        return ", ".join(a.audience for a in tenant.audiences.all())

    @admin.display(description="hosts")
    def host_list(self, tenant: Tenant) -> str:
        return ", ".join(h.hostname for h in tenant.hosts.all())

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        """The page's tenants, each with its key set record and last hour's traffic: one store
        read each for the whole page."""
        changelist = super().get_changelist_instance(request)
        tenants = changelist.result_list
        urls = {issuer.jwks_url for tenant in tenants for issuer in tenant.issuers.all()}
        records = read_records(sorted(urls))
        shares = refusal_shares(tenant.slug for tenant in tenants)
        for tenant in tenants:
            tenant.key_set_records = [records.get(i.jwks_url) for i in tenant.issuers.all()]
            tenant.last_hour = shares.get(tenant.slug, (0, 0))
        return changelist

    @admin.display(description="refused (last hour)")
    def refused_last_hour(self, tenant: Tenant) -> str:
        total, refused = getattr(tenant, "last_hour", (0, 0))
        if not total:
            return "no requests"
        return f"{refused / total:.0%} of {total}"

    @admin.display(description="key sets")
    def key_set(self, tenant: Tenant) -> str:
        if hasattr(tenant, "key_set_records"):
            healths = [key_set_health(record) for record in tenant.key_set_records]
        else:
            healths = [health for _, health in health_of(tenant)]
        return "; ".join(_health_summary(health) for health in healths)

    @admin.action(description="Refresh keys now")
    def refresh_keys_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        for tenant in queryset:
            self.message_user(request, _refresh_and_report(tenant), messages.INFO)

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/refresh-keys/",
                wrap(self.refresh_keys_view),
                name="tenants_tenant_refresh_keys",
            ),
            path(
                "<path:object_id>/check-issuer/",
                wrap(self.check_issuer_view),
                name="tenants_tenant_check_issuer",
            ),
            path(
                "<path:object_id>/debug-token/",
                wrap(self.debug_token_view),
                name="tenants_tenant_debug_token",
            ),
            *super().get_urls(),
        ]

    def refresh_keys_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST: queue a refresh of this tenant's key set and report how it went."""
        tenant = self._operated_tenant_or_404(request, object_id)
        if request.method == "POST":
            self.message_user(request, _refresh_and_report(tenant), messages.INFO)
        return HttpResponseRedirect(_change_url(tenant))

    def check_issuer_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST: fetch discovery and the key set now; say what was found or what is wrong."""
        tenant = self._operated_tenant_or_404(request, object_id)
        if request.method == "POST" and not _may_check_issuer(tenant):
            wait = authz_settings.CHECK_ISSUER_COOLDOWN
            self.message_user(
                request,
                f"The issuer of {tenant.slug} was checked less than {wait:g} s ago; "
                "try again in a moment.",
                messages.WARNING,
            )
        elif request.method == "POST":
            for issuer in tenant.issuers.all():
                report = check_issuer(issuer)
                for fact in report.facts:
                    self.message_user(request, fact, messages.SUCCESS)
                for problem in report.problems:
                    self.message_user(request, problem, messages.ERROR)
        return HttpResponseRedirect(_change_url(tenant))

    @method_decorator(sensitive_post_parameters("token", "proof"))
    @method_decorator(never_cache)
    def debug_token_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: the debugger's form; POST: the API's answer to the pasted token, check by check."""
        tenant = self._operated_tenant_or_404(request, object_id)
        endpoints = protected_endpoints()
        posted = request.POST if request.method == "POST" else None
        form = TokenDebugForm(posted, endpoints=endpoints)
        answer, problem = None, None
        if request.method == "POST" and form.is_valid():
            if _may_debug(request.user.pk):
                answer, problem = _debug(tenant, form.cleaned_data, endpoints, request.get_host())
            else:
                problem = (
                    f"At most {DEBUG_RUNS_PER_MINUTE} tokens a minute per operator; "
                    "try again in a moment."
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": tenant,
            "title": f"Debug a token for {tenant.slug}",
            "issuers": [issuer.issuer for issuer in tenant.issuers.all()],
            "form": form,
            "answer": answer,
            "problem": problem,
        }
        return TemplateResponse(request, "admin/tenants/tenant/debug_token.html", context)

    def _operated_tenant_or_404(self, request: HttpRequest, object_id: str) -> Tenant:
        # The admin's own lookup: an id that is not a number is "no such tenant", not a 500.
        tenant = self.get_object(request, object_id)
        if tenant is None:
            raise Http404("No such tenant.")
        return tenant

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        """Add the key set panel, the endpoint defaults and the propagation delay to the page."""
        extra = {
            **(extra_context or {}),
            "endpoints": all_endpoints(),
            "recheck_seconds": authz_settings.CONFIG_RECHECK_INTERVAL,
            "traffic_flush_seconds": authz_settings.TRAFFIC_FLUSH_INTERVAL,
        }
        tenant = self.get_object(request, object_id) if object_id else None
        if tenant is not None:
            extra["key_sets"] = [
                {"issuer": issuer.issuer, "jwks_url": issuer.jwks_url, **key_set_panel(health)}
                for issuer, health in health_of(tenant)
            ]
            extra["proofs"] = proof_panel(tenant)
            extra["traffic"] = traffic_panel(tenant_traffic(tenant.slug))
            extra["route_trial"] = route_trial(tenant, request.GET)
        return super().changeform_view(request, object_id, form_url, extra)


# Django's own user and group admins (operators are users), with the same guard on actions.
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class OperatorUserAdmin(CheckedSelectionMixin, UserAdmin):
    """Django's user admin; an action on a garbage selection is refused, not a 500."""


@admin.register(Group)
class OperatorGroupAdmin(CheckedSelectionMixin, GroupAdmin):
    """Django's group admin; an action on a garbage selection is refused, not a 500."""


def route_trial(tenant: Tenant, query: Any) -> dict[str, Any]:
    """The "try a request" box: the saved route a method and path hit, and why (or no_route)."""
    method = str(query.get("try_method", "GET")).upper()
    path = str(query.get("try_path", ""))[:MAX_TRIAL_PATH]
    trial: dict[str, Any] = {"methods": METHODS, "method": method, "path": path}
    if not path:
        return trial
    outcome, notes = _served_routes(tenant).explain(method, path)
    route = outcome.route
    trial.update(
        tried=True,
        code=outcome.code or "matched",
        reason=outcome.reason,
        notes=notes,
        route=route.label if route else "",
        params=dict(outcome.params),
        demands=_demands(route) if route else "",
    )
    return trial


MAX_TRIAL_PATH = 8192


def _served_routes(tenant: Tenant) -> RouteTable:
    """The routes as this server compiled them (what it answers now), else the saved ones."""
    config = directory.by_slug(tenant.slug) if tenant.active else None
    if config is not None:
        return config.routes
    return stored_table(tenant.routes.values_list("methods", "path", "public", "scopes"))


def _demands(route: Any) -> str:
    if route.public:
        return "public: no token is looked at"
    if not route.scopes:
        return "any valid token of the tenant"
    return "a token with " + " or ".join(f"all of: {a}" for a in route.scope_alternatives)


def _when(timestamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp else None


def key_set_panel(health: KeySetHealth) -> dict[str, Any]:
    """What the key set panel shows: status, each key, fetch time, version, last error."""
    record = health.record
    return {
        "status": health.status,
        "label": health.label,
        "keys": [
            {"kid": key["kid"], "alg": key.get("alg", "(any for its type)"), "kty": key["kty"]}
            for key in (record.keys if record else ())
        ],
        "fetched_at": _when(record.fetched_at) if record else None,
        "version": record.version if record else "",
        "last_error": record.last_error if record else None,
        "error_at": _when(record.error_at) if record else None,
    }


def proof_panel(tenant: Tenant) -> dict[str, Any]:
    """What the key set panel says about DPoP: the schemes taken and the proof algorithms."""
    return {
        "mode": tenant.get_dpop_display(),
        "algorithms": list(tenant.dpop_algorithms) if tenant.dpop != "disabled" else [],
        "nonce": tenant.dpop_nonce and tenant.dpop != "disabled",
    }


def _change_url(tenant: Tenant) -> str:
    return reverse("admin:tenants_tenant_change", args=[tenant.pk])


def _may_check_issuer(tenant: Tenant) -> bool:
    """One "Check issuer" per tenant per cooldown, across every process."""
    key = derived_key("check-issuer", str(tenant.pk))
    return claim(key, authz_settings.CHECK_ISSUER_COOLDOWN)


def _health_summary(health: KeySetHealth) -> str:
    if health.record is None or not health.record.keys:
        return health.label
    return f"{health.label} · {len(health.record.keys)} key(s)"


def _refresh_and_report(tenant: Tenant) -> str:
    """Queue the refresh of every issuer's key set; wait briefly, together, for the stored
    records to change, then report each."""
    urls = sorted(tenant.jwks_urls)
    before = read_records(urls)
    for url in urls:
        refresh_key_set.delay(url)
    deadline = time.monotonic() + REFRESH_WAIT_SECONDS
    records = read_records(urls)
    while _unchanged(before, records, urls) and time.monotonic() < deadline:
        time.sleep(0.2)
        records = read_records(urls)
    label = {url: tenant.slug if len(urls) == 1 else f"{tenant.slug} ({url})" for url in urls}
    return " ".join(_refresh_report(label[url], before.get(url), records.get(url)) for url in urls)


def _unchanged(before: dict, after: dict, urls: list[str]) -> bool:
    """Whether some key set has not been written since ``before`` was read."""
    return any(after.get(url) == before.get(url) for url in urls)


def _refresh_report(label: str, before: KeySetRecord | None, record: KeySetRecord | None) -> str:
    """One sentence on one key set's refresh."""
    if record == before:
        return f"{label}: refresh queued; the worker has not reported yet (reload in a moment)."
    if record.last_error and (record.error_at or 0) >= (record.fetched_at or 0):
        return f"{label}: refresh failed: {record.last_error}"
    kids = ", ".join(key["kid"] for key in record.keys)
    return f"{label}: refreshed, {len(record.keys)} key(s): {kids}."


CHART_HEIGHT = 60  # pixels of the tallest hour's bar
BAR_WIDTH = 12


def traffic_panel(traffic: TenantTraffic) -> dict[str, Any]:
    """What the traffic panel shows: the last hour and day, top refusals, an hourly chart."""
    return {
        "hour": _totals(traffic, traffic.hour),
        "day": _totals(traffic, traffic.day),
        "by_outcome": sorted(
            ((status, code, count) for (status, code), count in traffic.hour.items()),
            key=lambda row: (-row[2], row[0], row[1]),
        ),
        "top_refusals": traffic.top_refusals(),
        "replays": traffic.of_code(REPLAY),
        "rate_limited": traffic.of_code(RATE_LIMITED),
        "bars": _bars(traffic.hourly),
        "chart_width": BAR_WIDTH * max(len(traffic.hourly), 1),
        "chart_height": CHART_HEIGHT,
    }


def _totals(traffic: TenantTraffic, counts: Any) -> dict[str, Any]:
    total, refused = sum(counts.values()), traffic.refused(counts)
    return {
        "total": total,
        "refused": refused,
        "percent": f"{refused / total:.0%}" if total else "",
    }


def _bars(hourly: list[tuple[int, int, int]]) -> list[dict[str, Any]]:
    """One stacked bar per hour: served below, refused above, scaled to the busiest hour."""
    tallest = max((ok + refused for _, ok, refused in hourly), default=0) or 1
    bars = []
    for index, (start, ok, refused) in enumerate(hourly):
        ok_height = round(ok / tallest * CHART_HEIGHT)
        refused_height = round(refused / tallest * CHART_HEIGHT)
        bars.append(
            {
                "x": index * BAR_WIDTH,
                "ok_y": CHART_HEIGHT - ok_height,
                "ok_height": ok_height,
                "refused_y": CHART_HEIGHT - ok_height - refused_height,
                "refused_height": refused_height,
                "label": f"{datetime.fromtimestamp(start, UTC):%H:00} UTC: {ok} served, "
                f"{refused} refused",
            }
        )
    return bars


DEBUG_RUNS_PER_MINUTE = 20


def _may_debug(user_id: int) -> bool:
    """At most DEBUG_RUNS_PER_MINUTE debugger runs per operator per minute, in every process."""
    key = internal_key(f"token-debugger-{user_id}-{int(time.time() // 60)}")
    store = shared_store()
    store.add(key, 0, timeout=120)
    return store.incr(key) <= DEBUG_RUNS_PER_MINUTE


def _debug(
    tenant: Tenant, data: dict[str, str], endpoints: dict[str, tuple[str, str]], host: str
) -> tuple[Answer | None, str | None]:
    if data.get("route_path"):
        return _debug_route(tenant, data, host)
    method, path = endpoints[data["endpoint"]]
    url = data["url"] or default_url(tenant, path, host)
    try:
        return debug(tenant, data["token"], data["proof"], method, url), None
    except CannotDebug as exc:
        return None, str(exc)


def _debug_route(
    tenant: Tenant, data: dict[str, str], host: str
) -> tuple[Answer | None, str | None]:
    method, path = data["route_method"] or "GET", data["route_path"]
    url = data["url"] or default_url(tenant, path.partition("?")[0], host)
    try:
        return debug_route(tenant, data["token"], data["proof"], method, path, url), None
    except CannotDebug as exc:
        return None, str(exc)
