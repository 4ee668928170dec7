"""Admin for agent configs and runs.

Agent configs are validated by `AgentConfig.clean()` (agents/validation.py), the
same rules the API applies. Saving or opening an agent whose API key variable
is missing in this process shows a warning; the "Send a test prompt" action
calls the provider directly and shows its first chunk or its error.
"""

from __future__ import annotations

import asyncio
import os

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin, messages
from django.db import models
from django.db.models import F
from django.utils import timezone
from django.utils.html import format_html

from agents.errors import AgentErrorCode
from agents.models import AgentConfig, Run
from agents.providers import get_provider
from agents.providers.base import ChatMessage, ProviderError, ProviderRequest, TextDelta
from agents.validation import agent_config_warnings
from realtime.errors import ServiceError

TEST_PROMPT = "This is a connection test. Reply with one short sentence."
TEST_TIMEOUT_SECONDS = 15.0
TEST_MAX_AGENTS = 5
TEST_CHUNK_PREVIEW_CHARS = 200
# Saving or opening an agent with MCP servers checks each answers within this.
MCP_PROBE_TIMEOUT_SECONDS = 3.0


def probe_request_for(agent: AgentConfig) -> ProviderRequest:
    api_key = os.environ.get(agent.api_key_env) if agent.api_key_env else None
    return ProviderRequest(
        model=agent.model,
        messages=[ChatMessage(role="user", content=TEST_PROMPT)],
        system_prompt=agent.system_prompt,
        temperature=agent.temperature,
        max_tokens=min(agent.max_tokens, 64),
        stream=agent.stream,
        extra_params=dict(agent.extra_params or {}),
        api_key=api_key or None,
        base_url=agent.base_url or None,
        timeout=TEST_TIMEOUT_SECONDS,
        max_retries=0,
    )


async def first_chunk(
    agent: AgentConfig, *, timeout: float = TEST_TIMEOUT_SECONDS
) -> str:
    """The provider's first piece of text for the test prompt ("" if it sent none).

    Raises ProviderError, TimeoutError or whatever the provider raised.
    """
    provider = get_provider(agent.provider)
    events = provider.stream(probe_request_for(agent))

    async def read() -> str:
        async for event in events:
            if isinstance(event, TextDelta) and event.text:
                return event.text
        return ""

    try:
        return await asyncio.wait_for(read(), timeout)
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception:  # the answer (or error) is what matters here
                pass


# Fields added with tools (issue 15): a form posted without them (a script
# written before) keeps working, each taking its default.
TOOL_FIELDS = (
    "tools",
    "approval_required",
    "mcp_servers",
    "max_tool_steps",
    "tool_timeout_seconds",
    "input_timeout_seconds",
    # Prices (issue 19): likewise, 0 when not posted.
    "input_price_per_million",
    "output_price_per_million",
)


class AgentConfigForm(forms.ModelForm):
    # The admin adds the other fields (its fieldsets) to this base form.
    class Meta:
        model = AgentConfig
        fields = list(TOOL_FIELDS)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in TOOL_FIELDS:
            if name in self.fields:
                self.fields[name].required = False

    def clean(self) -> dict:
        cleaned = super().clean()
        for name in TOOL_FIELDS:
            if name in self.fields and cleaned.get(name) in (None, ""):
                cleaned[name] = AgentConfig._meta.get_field(name).get_default()
        return cleaned


@admin.register(AgentConfig)
class AgentConfigAdmin(admin.ModelAdmin):
    form = AgentConfigForm
    list_display = ("name", "provider", "model", "enabled", "busy_policy", "updated_at")
    list_filter = ("provider", "enabled", "busy_policy")
    list_editable = ("enabled",)
    search_fields = ("name", "description", "model")
    readonly_fields = ("version", "created_at", "updated_at")
    actions = ["send_test_prompt"]
    fieldsets = (
        (None, {"fields": ("name", "description", "enabled")}),
        (
            "Provider",
            {
                "fields": ("provider", "model", "base_url", "api_key_env"),
                "description": "Keys are never stored: api_key_env names the environment "
                "variable that holds the key in the worker processes.",
            },
        ),
        (
            "Generation",
            {
                "fields": (
                    "system_prompt",
                    "temperature",
                    "max_tokens",
                    "persistent",
                    "stream",
                )
            },
        ),
        (
            "Streaming and concurrency",
            {"fields": ("chunk_size", "buffer_chunks", "busy_policy")},
        ),
        (
            "Tools",
            {
                "fields": (
                    "tools",
                    "approval_required",
                    "mcp_servers",
                    "max_tool_steps",
                    "tool_timeout_seconds",
                    "input_timeout_seconds",
                ),
                "description": "Registered tools: calculate, clock, ask_thread and "
                "those of installed apps; MCP tools as <server>.<tool>. Secrets of "
                "MCP servers stay in environment variables named in headers_env.",
            },
        ),
        (
            "Prices",
            {
                "fields": ("input_price_per_million", "output_price_per_million"),
                "description": "Per million tokens, in your billing currency: each "
                "run's cost in usage and budgets.",
            },
        ),
        ("Advanced", {"fields": ("allowed_overrides", "extra_params")}),
        (
            "History",
            {
                "fields": ("version", "created_at", "updated_at"),
                "description": "version goes up with every change that shapes "
                "replies; each reply records the version that wrote it.",
            },
        ),
    )

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if isinstance(db_field, models.URLField):
            kwargs.setdefault("assume_scheme", "https")  # Django 6's default, today
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def _warn(self, request, agent: AgentConfig) -> None:
        for warning in agent_config_warnings(agent):
            messages.warning(request, f"{agent.name}: {warning}")
        if agent.mcp_servers:
            from agents.tools.mcp import mcp_server_problems

            for problem in async_to_sync(mcp_server_problems)(
                agent, timeout=MCP_PROBE_TIMEOUT_SECONDS
            ):
                messages.warning(request, f"{agent.name}: {problem}")

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        self._warn(request, obj)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if request.method == "GET":
            agent = self.get_object(request, object_id)
            if agent is not None:
                self._warn(request, agent)
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(description="Send a test prompt")
    def send_test_prompt(self, request, queryset) -> None:
        agents = list(queryset[: TEST_MAX_AGENTS + 1])
        if len(agents) > TEST_MAX_AGENTS:
            messages.error(
                request, f"Select at most {TEST_MAX_AGENTS} agents to test at once."
            )
            return
        for agent in agents:
            self._warn(request, agent)
            try:
                text = async_to_sync(first_chunk)(agent)
            except ProviderError as error:
                messages.error(
                    request, f"{agent.name}: {error.code.value}: {error.message}"
                )
            except TimeoutError:
                messages.error(
                    request,
                    f"{agent.name}: {AgentErrorCode.PROVIDER_TIMEOUT.value}: no text within "
                    f"{TEST_TIMEOUT_SECONDS:g} s.",
                )
            except Exception as error:  # shown to staff, who need to know what broke
                messages.error(
                    request, f"{agent.name}: {type(error).__name__}: {str(error)[:300]}"
                )
            else:
                if text:
                    preview = text[:TEST_CHUNK_PREVIEW_CHARS]
                    messages.success(
                        request, f"{agent.name} answered; first chunk: {preview!r}"
                    )
                else:
                    messages.warning(
                        request, f"{agent.name} answered without any text."
                    )


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "thread",
        "agent",
        "status",
        "requested_by",
        "created_at",
        "queued_for",
        "duration",
        "tokens",
        "error_code",
    )
    list_filter = ("status", "agent", "error_code")
    search_fields = ("id", "thread__title", "requested_by__username", "error")
    date_hierarchy = "created_at"
    list_select_related = ("thread", "agent", "requested_by")
    ordering = ("-created_at",)
    actions = ["cancel_runs"]
    fields = (
        "id",
        "thread",
        "agent",
        "requested_by",
        "prompt_text",
        "status",
        "cancel_requested",
        "created_at",
        "started_at",
        "finished_at",
        "queued_for",
        "duration",
        "usage",
        "error_code",
        "error",
        "worker_channel",
        "lease_expires_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="prompt")
    def prompt_text(self, run: Run) -> str:
        return run.prompt.text if run.prompt_id and run.prompt else ""

    @admin.display(description="queued for", ordering=F("started_at") - F("created_at"))
    def queued_for(self, run: Run) -> str:
        if run.started_at is None:
            return (
                "—"
                if run.finished_at
                else _seconds(timezone.now() - run.created_at) + " …"
            )
        return _seconds(run.started_at - run.created_at)

    @admin.display(description="duration", ordering=F("finished_at") - F("started_at"))
    def duration(self, run: Run) -> str:
        if run.started_at is None:
            return "—"
        end = run.finished_at or timezone.now()
        return _seconds(end - run.started_at) + ("" if run.finished_at else " …")

    @admin.display(description="tokens in/out")
    def tokens(self, run: Run) -> str:
        usage = run.usage or {}
        if not usage:
            return "—"
        return format_html(
            "{} / {}", usage.get("input_tokens", "?"), usage.get("output_tokens", "?")
        )

    @admin.action(description="Cancel selected runs")
    def cancel_runs(self, request, queryset) -> None:
        from agents.services import run_cancel
        from audit.services import audit_run_cancel

        cancelled = 0
        for run in queryset:
            try:
                audit_run_cancel(actor=request.user, run=run_cancel(run=run))
                cancelled += 1
            except ServiceError as error:
                messages.warning(request, f"run {run.id}: {error.message}")
        if cancelled:
            messages.success(
                request, f"Cancelled (or asked to stop) {cancelled} run(s)."
            )


def _seconds(delta) -> str:
    return f"{delta.total_seconds():.2f} s"
