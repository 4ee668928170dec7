"""Request and response bodies of the agents API: agent configs, runs, streams.

Agent configs are validated by the same rules as the admin
(agents/validation.py `agent_config_errors`), so a config the API accepts is
one the admin would accept, and the other way round.
"""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema_field
from rest_framework import serializers

from agents.choices import OVERRIDABLE_FIELDS
from agents.models import AgentConfig, Run, RunStatus
from agents.validation import agent_config_errors

AGENT_FIELDS = [
    "name",
    "description",
    "provider",
    "model",
    "base_url",
    "api_key_env",
    "temperature",
    "max_tokens",
    "system_prompt",
    "persistent",
    "stream",
    "chunk_size",
    "buffer_chunks",
    "busy_policy",
    "allowed_overrides",
    "extra_params",
    "tools",
    "approval_required",
    "mcp_servers",
    "max_tool_steps",
    "tool_timeout_seconds",
    "input_timeout_seconds",
    "enabled",
    "input_price_per_million",
    "output_price_per_million",
]


class AgentConfigSerializer(serializers.ModelSerializer):
    """An agent config. `api_key_env` names an environment variable; keys are
    never stored or returned."""

    allowed_overrides = serializers.ListField(
        child=serializers.ChoiceField(choices=list(OVERRIDABLE_FIELDS)),
        required=False,
        help_text="Fields a thread may override.",
    )
    extra_params = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        help_text="Provider-specific parameters, e.g. tokens_per_second for echo.",
    )

    tools = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        help_text="Tools the agent may call: registered names (calculate, clock, "
        "ask_thread ...) or <server>.<tool> of an MCP server (<server>.* for all).",
    )
    approval_required = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        help_text="Tools that run only once a writer of the thread approves.",
    )
    mcp_servers = serializers.ListField(
        child=serializers.DictField(child=serializers.JSONField()),
        required=False,
        help_text='MCP servers: {"name", "url", "headers_env": {header: ENV_VAR}} '
        '(or "command"/"args"/"env" for stdio, where the server allows it).',
    )

    class Meta:
        model = AgentConfig
        fields = [*AGENT_FIELDS, "version", "created_at", "updated_at"]
        read_only_fields = ["version", "created_at", "updated_at"]

    def validate(self, attrs: dict) -> dict:
        candidate = AgentConfig()
        if self.instance is not None:
            for field in AGENT_FIELDS:
                setattr(candidate, field, getattr(self.instance, field))
            candidate.pk = self.instance.pk
        for field, value in attrs.items():
            setattr(candidate, field, value)
        errors = agent_config_errors(candidate)
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class RunCancelSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        help_text="Why: kept with the run and shown in its `state_complete`.",
    )


class RunSerializer(serializers.ModelSerializer):
    """An agent run: one reply to one user message."""

    thread = serializers.UUIDField(source="thread_id", read_only=True)
    agent = serializers.SlugRelatedField(slug_field="name", read_only=True)
    requested_by = serializers.SlugRelatedField(
        slug_field="username",
        read_only=True,
        allow_null=True,
        help_text="Who posted the message (null once that user is deleted).",
    )
    prompt = serializers.UUIDField(
        source="prompt_id",
        read_only=True,
        allow_null=True,
        help_text="The id of the user message this run answers.",
    )
    stream_url = serializers.SerializerMethodField(
        help_text="The run's events as Server-Sent Events."
    )
    usage = serializers.DictField(
        child=serializers.JSONField(),
        read_only=True,
        help_text="Token counts as the provider reported them: input_tokens, output_tokens.",
    )

    class Meta:
        model = Run
        fields = [
            "id",
            "thread",
            "agent",
            "requested_by",
            "prompt",
            "status",
            "cancel_requested",
            "cancel_reason",
            "created_at",
            "started_at",
            "finished_at",
            "usage",
            "error_code",
            "error",
            "agent_version",
            "stream_url",
        ]
        read_only_fields = fields

    def get_stream_url(self, run: Run) -> str:
        return f"/api/runs/{run.id}/stream/"


class StreamSerializer(RunSerializer):
    """An active run as the staff overview shows it."""

    thread_title = serializers.CharField(source="thread.title", read_only=True)
    clients = serializers.SerializerMethodField(
        help_text="Sockets and SSE streams open on the run's thread, on every web process."
    )
    age_seconds = serializers.SerializerMethodField(
        help_text="Seconds since the run was queued."
    )
    running_seconds = serializers.SerializerMethodField(
        help_text="Seconds since a worker started it; null while queued."
    )

    class Meta(RunSerializer.Meta):
        fields = [
            *RunSerializer.Meta.fields,
            "thread_title",
            "clients",
            "age_seconds",
            "running_seconds",
        ]
        read_only_fields = fields

    def get_clients(self, run: Run) -> int:
        return (self.context.get("clients") or {}).get(str(run.thread_id), 0)

    def get_age_seconds(self, run: Run) -> float:
        return round((timezone.now() - run.created_at).total_seconds(), 3)

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_running_seconds(self, run: Run) -> float | None:
        if run.started_at is None:
            return None
        return round((timezone.now() - run.started_at).total_seconds(), 3)


class RunFilterSerializer(serializers.Serializer):
    """Query parameters of run lists."""

    status = serializers.ChoiceField(choices=RunStatus.choices, required=False)
    agent = serializers.SlugField(required=False, max_length=64)
    thread = serializers.UUIDField(required=False)


RUN_STATUS_FILTER = OpenApiParameter(
    "status",
    OpenApiTypes.STR,
    enum=RunStatus.values,
    description="Only runs with this status.",
)
