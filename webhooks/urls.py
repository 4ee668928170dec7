"""Webhook routes, included under /api/ by config/api_urls.py (docs/api.md)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from webhooks.api import (
    DeliveryRedeliverView,
    DeliveryView,
    RunWebhookView,
    ThreadWebhookView,
    WebhookViewSet,
)

router = SimpleRouter(trailing_slash=True)
router.register("webhooks", WebhookViewSet, basename="webhook")

urlpatterns = [
    # Before the router's `webhooks/{id}/`: "deliveries" is no webhook id.
    path(
        "webhooks/deliveries/<uuid:id>/",
        DeliveryView.as_view(),
        name="api-webhook-delivery",
    ),
    path(
        "webhooks/deliveries/<uuid:id>/redeliver/",
        DeliveryRedeliverView.as_view(),
        name="api-webhook-redeliver",
    ),
    path(
        "threads/<uuid:id>/webhook/",
        ThreadWebhookView.as_view(),
        name="api-thread-webhook",
    ),
    path("runs/<uuid:id>/webhook/", RunWebhookView.as_view(), name="api-run-webhook"),
    *router.urls,
]
