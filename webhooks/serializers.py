"""Request and response bodies of the webhooks API (docs/api.md, "Webhooks").

Serializers only validate and shape JSON; writes go through webhooks/services.py.
"""

from __future__ import annotations

import json

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from webhooks.models import (
    DeliveryStatus,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
)


class WebhookInputSerializer(serializers.Serializer):
    # A plain string: webhooks/targets.py checks it and names what is wrong
    # with its own codes (webhook_url_invalid, webhook_host_not_allowed, ...).
    url = serializers.CharField(max_length=2000)
    description = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default=""
    )


class WebhookSerializer(serializers.ModelSerializer):
    thread = serializers.UUIDField(
        source="thread_id",
        allow_null=True,
        read_only=True,
        help_text="The thread whose every run it gets; null: only runs that name it.",
    )

    class Meta:
        model = Webhook
        fields = ["id", "url", "description", "thread", "created_at", "updated_at"]
        read_only_fields = fields


class WebhookCreatedSerializer(WebhookSerializer):
    secret = serializers.CharField(
        read_only=True,
        help_text="Signs every delivery (`X-Parley-Signature`); shown this once.",
    )

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class RunWebhookInputSerializer(serializers.Serializer):
    webhook = serializers.UUIDField(help_text="One of your webhooks.")


class RunWebhookSerializer(serializers.Serializer):
    run = serializers.UUIDField(source="run_id")
    webhook = WebhookSerializer()
    created_at = serializers.DateTimeField()


class WebhookAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = [
            "number",
            "started_at",
            "duration_ms",
            "status_code",
            "error_code",
            "error",
            "response_excerpt",
        ]
        read_only_fields = fields


class WebhookDeliverySerializer(serializers.ModelSerializer):
    run = serializers.UUIDField(source="run_id", allow_null=True, read_only=True)
    webhook = serializers.UUIDField(source="webhook_id", read_only=True)
    event = serializers.ChoiceField(choices=WebhookEvent.choices, read_only=True)
    status = serializers.ChoiceField(choices=DeliveryStatus.choices, read_only=True)
    payload = serializers.SerializerMethodField()
    attempt_log = WebhookAttemptSerializer(many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "webhook",
            "run",
            "event",
            "status",
            "attempts",
            "attempts_left",
            "next_attempt_at",
            "last_status_code",
            "last_error_code",
            "last_error",
            "created_at",
            "delivered_at",
            "payload",
            "attempt_log",
        ]
        read_only_fields = fields

    @extend_schema_field(
        {
            "type": "object",
            "additionalProperties": True,
            "description": "The body sent.",
        }
    )
    def get_payload(self, delivery: WebhookDelivery) -> dict:
        return json.loads(delivery.body)
