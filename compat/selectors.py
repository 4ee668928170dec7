"""Reads for the OpenAI-compatible endpoint: agents as models, a run's outcome."""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.models import ACTIVE_RUN_STATUSES, FINAL_RUN_STATUSES, AgentConfig, Run
from chat.models import Message, MessageRole


def model_list() -> list[AgentConfig]:
    """The models a caller may name: every enabled agent."""
    return list(AgentConfig.objects.filter(enabled=True).order_by("name"))


def model_get(*, name: str) -> AgentConfig | None:
    """The enabled agent called `name`, else None."""
    return AgentConfig.objects.filter(name=name, enabled=True).first()


@dataclass(frozen=True)
class RunOutcome:
    status: str
    text: str
    usage: dict = field(default_factory=dict)
    error_code: str = ""
    error: str = ""


def run_outcome(*, run_id: str) -> RunOutcome | None:
    """How the run ended (its stored reply), or None while it has not."""
    run = (
        Run.objects.filter(pk=run_id)
        .values("status", "usage", "error_code", "error")
        .first()
    )
    if run is None or run["status"] not in FINAL_RUN_STATUSES:
        return None
    text = (
        Message.objects.filter(run_id=run_id, role=MessageRole.ASSISTANT)
        .values_list("text", flat=True)
        .first()
    )
    return RunOutcome(
        status=run["status"],
        text=text or "",
        usage=run["usage"] or {},
        error_code=run["error_code"],
        error=run["error"],
    )


def run_active_get(*, thread_id: str) -> Run | None:
    """The thread's run in flight (queued or running), newest first."""
    return (
        Run.objects.filter(thread_id=thread_id, status__in=ACTIVE_RUN_STATUSES)
        .order_by("-created_at")
        .first()
    )
