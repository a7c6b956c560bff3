"""Root routes: admin, and the API by hostname or under a /t/<slug>/ prefix."""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from ops.login import login_lockouts_view
from tenants.decision import decision

urlpatterns = [
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
    # Forward auth; Envoy's ext_authz appends the original path (path_prefix).
    re_path(r"^authz/decision(?:/.*)?$", decision, name="decision"),
]

# Under /api/ an unrouted path (such as /api/messages/1/2) answers the API's JSON error body.
handler404 = "tenants.views.not_found"
