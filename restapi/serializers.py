"""The one error body every REST endpoint answers with, for the OpenAPI schema."""

from __future__ import annotations

from rest_framework import serializers


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(
        help_text="Stable snake_case code, e.g. thread_not_found."
    )
    message = serializers.CharField(help_text="Human-readable explanation.")
    details = serializers.JSONField(
        required=False,
        help_text="Validation errors per field (only for validation_error).",
    )


class ErrorSerializer(serializers.Serializer):
    """The one error shape: {"error": {"code": "...", "message": "..."}}."""

    error = ErrorDetailSerializer()
