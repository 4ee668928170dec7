"""Reads of the agents app: the tool steps of runs, a thread's agents and team.

`chat/selectors.py` adds the tool steps to messages (`tool_steps` of an
assistant message: every tool call its run made, with its result) and to the
runs of a snapshot (the steps so far of a run in flight). The team reads serve
the turns of an agent team (agents/teams.py has its rules).
"""

from __future__ import annotations

from agents.models import RunToolStep, ToolStepStatus
from agents.teams import Team, team_of
from chat.models import Thread, ThreadAgent


def _timestamp(moment) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def tool_step_content(tool_step: RunToolStep) -> dict:
    """One tool call as the history shows it: the call (`id`, `name`,
    `arguments`), how it ended (`status`: pending, completed, failed, denied,
    cancelled) and its `output` or `error` (null while pending)."""
    completed = tool_step.status == ToolStepStatus.COMPLETED
    ended = tool_step.status != ToolStepStatus.PENDING
    return {
        "id": tool_step.call_id,
        "name": tool_step.name,
        "arguments": tool_step.arguments,
        "status": tool_step.status,
        "output": tool_step.output if completed else None,
        "error": (tool_step.error or tool_step.status)
        if ended and not completed
        else None,
        "started_at": _timestamp(tool_step.started_at),
        "finished_at": _timestamp(tool_step.finished_at),
    }


def tool_steps_by_run(*, run_ids) -> dict[str, list[dict]]:
    """`tool_step_content` of each of these runs' tool calls, in the order the
    model made them (one query)."""
    run_ids = {str(run_id) for run_id in run_ids if run_id}
    if not run_ids:
        return {}
    steps: dict[str, list[dict]] = {}
    for tool_step in RunToolStep.objects.filter(run_id__in=run_ids).order_by(
        "run_id", "step", "position"
    ):
        steps.setdefault(str(tool_step.run_id), []).append(tool_step_content(tool_step))
    return steps


def thread_agent_names(*, thread_id) -> list[str]:
    """The names of the thread's agents, the default first (one query)."""
    default = Thread.objects.filter(pk=thread_id).values_list("agent__name", flat=True)
    others = (
        ThreadAgent.objects.filter(thread_id=thread_id)
        .order_by("position")
        .values_list("agent__name", flat=True)
    )
    return [*default, *others]


def team_for_thread(*, thread_id) -> tuple[Team | None, list[str]]:
    """The thread's team and its agents' names; (None, []) without a team."""
    config = Thread.objects.filter(pk=thread_id).values_list("config", flat=True)
    team = team_of(config.first())
    if team is None:
        return None, []
    return team, thread_agent_names(thread_id=thread_id)
