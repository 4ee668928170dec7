"""Webhooks in the Django admin: webhooks (never their secrets), deliveries
with every attempt, and a "Redeliver" action."""

from django.contrib import admin, messages
from django.db import models

from webhooks import services
from webhooks.models import Webhook, WebhookAttempt, WebhookDelivery


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ("url", "owner", "thread", "created_at")
    search_fields = ("url", "owner__username", "description")
    raw_id_fields = ("owner", "thread")
    readonly_fields = ("created_at", "updated_at")
    exclude = ("secret",)
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    readonly_fields = (
        "number",
        "started_at",
        "duration_ms",
        "status_code",
        "error_code",
        "error",
        "response_excerpt",
    )

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "event",
        "status",
        "attempts",
        "last_status_code",
        "last_error_code",
        "webhook",
        "created_at",
        "delivered_at",
    )
    list_filter = ("status", "event")
    search_fields = ("id", "webhook__url", "run__id")
    readonly_fields = [field.name for field in WebhookDelivery._meta.fields]
    inlines = [WebhookAttemptInline]
    actions = ["redeliver"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Redeliver the selected deliveries")
    def redeliver(self, request, queryset):
        count = 0
        for delivery in queryset:
            services.delivery_redeliver(delivery=delivery)
            count += 1
        self.message_user(
            request, f"{count} deliveries will be sent again.", messages.SUCCESS
        )
