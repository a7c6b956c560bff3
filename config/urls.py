"""Root routes: admin, and the API by hostname or under a /t/<slug>/ prefix."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("messages.urls")),
    path("t/<slug:tenant_slug>/api/", include("messages.urls")),
]
