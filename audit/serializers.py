"""The audit API's shapes: an event, and the list's filters."""

from rest_framework import serializers

from audit.models import AuditAction, AuditEvent


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(
        source="actor_username", allow_blank=True, help_text="Username; '' for none."
    )

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "actor",
            "actor_id",
            "ip",
            "action",
            "target_type",
            "target_id",
            "target_repr",
            "thread_id",
            "changes",
            "details",
        ]
        read_only_fields = fields


class AuditFilterSerializer(serializers.Serializer):
    actor = serializers.CharField(
        required=False, max_length=150, help_text="Only events by this username."
    )
    action = serializers.ChoiceField(
        choices=AuditAction.choices, required=False, help_text="Only this action."
    )
    thread = serializers.UUIDField(
        required=False, help_text="Only events about this thread (id)."
    )
    since = serializers.DateTimeField(
        required=False, help_text="Only events at or after this time (ISO 8601)."
    )
    until = serializers.DateTimeField(
        required=False, help_text="Only events before this time (ISO 8601)."
    )

    def validate(self, data):
        if "since" in data and "until" in data and data["since"] >= data["until"]:
            raise serializers.ValidationError(
                {"until": "until must be later than since."}
            )
        return data
