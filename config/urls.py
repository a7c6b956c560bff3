"""Root routes: admin, and the API by hostname or under a /t/<slug>/ prefix."""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from ops.login import login_lockouts_view
from tenants.decision import decision

urlpatterns = [
    # Forward auth; Envoy's ext_authz appends the original path (path_prefix). First: a gateway
    # asks on every upstream call, and no other pattern can match it.
    re_path(r"^authz/decision(?:/.*)?$", decision, name="decision"),
    # Before the admin's own routes; admin_view: staff login, CSRF, never cached.
    path(
        "admin/login-lockouts/",
        admin.site.admin_view(login_lockouts_view),
        name="login_lockouts",
    ),
    path("admin/", admin.site.urls),
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/", include("messages.urls")),
    path("t/<slug:tenant_slug>/api/", include("messages.urls")),
]

# Under /api/ an unrouted path (such as /api/messages/1/2) answers the API's JSON error body.
handler404 = "tenants.views.not_found"
