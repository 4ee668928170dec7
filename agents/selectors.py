"""Reads about runs for the history and snapshots: the tool steps of runs.

`chat/selectors.py` adds these to messages (`tool_steps` of an assistant
message: every tool call its run made, with its result) and to the runs of a
snapshot (the steps so far of a run in flight).
"""

from __future__ import annotations

from agents.models import RunToolStep, ToolStepStatus


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
