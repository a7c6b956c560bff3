"""API routes; mounted at /api/ and at /t/<slug>/api/."""

from django.urls import path

from messages import views

urlpatterns = [
    path("public", views.PublicMessage.as_view(), name="public"),
    path("private", views.PrivateMessage.as_view(), name="private"),
    path("private-scoped", views.PrivateScopedMessage.as_view(), name="private-scoped"),
    path("messages", views.MessageList.as_view(), name="message-list"),
    path("messages/<str:message_id>", views.MessageDetail.as_view(), name="message-detail"),
]
