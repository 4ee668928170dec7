"""A run's tool calls: which tools its agent may call, and running the calls
one model call asked for.

The tools are those the agent config names, a Python agent's own, the
`handoff` tool for the agents of a `handoff` team and its MCP servers' tools
(agents/tools/ has the registry, the built-ins, the runner and MCP). Each call
is stored as a step (agents/services.py), announced with a `tool_call` frame
before any runs and answered with a `tool_result` frame as it ends; a tool the
agent lists in `approval_required` waits for a writer's approval first
(agents/questions.py), and a slow one makes the thread hear so, once.
"""

from __future__ import annotations

import asyncio

from django.conf import settings

from agents import services
from agents.models import Run, ToolStepStatus
from agents.prompts import wire_name
from agents.providers.base import ProviderRequest, ToolCall, ToolResult, ToolSpec
from agents.python_agents import get_python_agent
from agents.questions import Questions
from agents.streaming import ChunkStream, publish_state
from agents.teams import HANDOFF_TOOL, team_of
from agents.tools import Tool, ToolContext, get_tool
from agents.tools.mcp import mcp_tools_for
from agents.tools.runner import (
    MAX_OUTPUT_BYTES,
    ToolOutcome,
    parse_arguments,
    redact_value,
    run_tool,
)
from realtime.events import call_service

# Notices on their way (kept: tasks are weakly held).
_notices: set[asyncio.Task] = set()


async def tools_for(run: Run) -> dict[str, tuple[str, Tool]]:
    """The tools the run's agent may call: model-facing name -> (name, tool)."""
    tools: dict[str, tuple[str, Tool]] = {}
    names = list(run.agent.tools or [])
    if run.agent.provider == "python":
        written_in_python = get_python_agent(run.agent.model)
        names += list(getattr(written_in_python, "tools", ()) or ())
    team = team_of(run.thread.config)
    if team is not None and team.policy == "handoff":
        names.append(HANDOFF_TOOL)  # how the team's agents pass the floor
    for name in names:
        tool = get_tool(name)
        if tool is not None:
            tools[wire_name(name)] = (name, tool)
    if run.agent.mcp_servers:
        for name, tool in (await mcp_tools_for(run.agent)).items():
            tools[wire_name(name)] = (name, tool)
    return tools


class ToolCalls:
    """The tool calls of one run. Keeps whether it made any (its finish
    closes steps left pending) and whom its `handoff` passed the floor to."""

    def __init__(
        self,
        run: Run,
        request: ProviderRequest,
        stream: ChunkStream,
        *,
        tools: dict[str, tuple[str, Tool]],
        questions: Questions,
    ) -> None:
        self.run = run
        self.stream = stream
        self.tools = tools
        self.questions = questions
        self.used = False
        self.handoff_to: str | None = None
        # Kept out of every argument and result the thread sees.
        self.secrets = [key for key in (request.api_key,) if key]
        for _name, tool in tools.values():
            self.secrets += tool.extra.get("secrets", [])
        self.context = ToolContext(
            run_id=str(run.id),
            thread_id=str(run.thread_id),
            ask=lambda question: questions.ask(
                run, question, run.agent.input_timeout_seconds
            ),
        )

    def specs(self) -> list[ToolSpec]:
        """The tools as the model is offered them."""
        return [
            ToolSpec(wire, tool.description, tool.parameters)
            for wire, (_name, tool) in self.tools.items()
        ]

    async def run_calls(
        self, step: int, calls: list[ToolCall], *, text_offset: int
    ) -> list[ToolResult]:
        """Run one model call's tool calls, independent ones at once; each
        `tool_call` frame goes out before any runs, each `tool_result` as its
        call ends. Their results, in the order of the calls."""
        entries = []
        for call in calls:
            name = self.tools[call.name][0] if call.name in self.tools else call.name
            if len(call.arguments) > MAX_OUTPUT_BYTES:  # never a frame too large
                arguments = call.arguments[:1000] + " … (cut: too long)"
            else:
                arguments = redact_value(parse_arguments(call.arguments), self.secrets)
            entries.append({"id": call.id, "name": name, "arguments": arguments})
        self.used = True
        await call_service(
            services.run_tool_steps_open,
            run_id=str(self.run.id),
            step=step,
            text_offset=text_offset,
            calls=entries,
        )
        for entry in entries:
            await publish_state(self.run, "tool_call", entry, self.stream)
        async with asyncio.TaskGroup() as group:
            running = [
                group.create_task(self._run_one(step, position, call, entry))
                for position, (call, entry) in enumerate(
                    zip(calls, entries, strict=True)
                )
            ]
        return [task.result() for task in running]

    async def _run_one(
        self, step: int, position: int, call: ToolCall, entry: dict
    ) -> ToolResult:
        """One call: approved first if it must be, run, stored, announced."""
        agent = self.run.agent
        tool = self.tools.get(call.name, (None, None))[1]
        name = entry["name"]
        outcome = None
        status = ToolStepStatus.COMPLETED
        approvals = agent.approval_required or []
        if tool is not None and (
            name in approvals or f"{name.split('.', 1)[0]}.*" in approvals
        ):
            approved = await self.questions.ask_approval(
                self.run, entry, agent.input_timeout_seconds
            )
            if approved is not True:
                status = ToolStepStatus.DENIED
                outcome = ToolOutcome(
                    error="A person in the thread denied this tool call."
                    if approved is False
                    else "Nobody approved this tool call in time; it did not run."
                )
        if outcome is None:
            outcome = await self._call(tool, name, entry["arguments"])
            if outcome.error is not None:
                status = ToolStepStatus.FAILED
            elif name == HANDOFF_TOOL and isinstance(entry["arguments"], dict):
                self.handoff_to = str(entry["arguments"].get("to", ""))
        await call_service(
            services.run_tool_step_close,
            run_id=str(self.run.id),
            step=step,
            position=position,
            status=status,
            output=outcome.output or "",
            error=outcome.error or "",
        )
        data = {"id": call.id, "name": name}
        if outcome.error is None:
            data["output"] = outcome.output
        else:
            data["error"] = outcome.error
        await publish_state(self.run, "tool_result", data, self.stream)
        return ToolResult(
            call_id=call.id,
            name=call.name,
            content=outcome.text,
            is_error=outcome.error is not None,
        )

    async def _call(self, tool: Tool | None, name: str, arguments) -> ToolOutcome:
        """Run the tool within the agent's tool timeout (a tool that waits for
        people, within their input timeout); a slow one is announced once."""
        waits_for_people = tool is not None and tool.waits_for_people
        slow = None
        if not waits_for_people:
            slow = asyncio.get_running_loop().call_later(
                settings.PARLEY_SLOW_TOOL_NOTICE_SECONDS,
                lambda: self._notice_soon(
                    "tool_slow",
                    f"The tool {name} is taking a while; the reply goes on "
                    "once it answers.",
                ),
            )
        try:
            return await run_tool(
                tool,
                name=name,
                arguments=arguments,
                context=self.context,
                timeout=None
                if waits_for_people
                else self.run.agent.tool_timeout_seconds,
                secrets=self.secrets,
            )
        finally:
            if slow is not None:
                slow.cancel()

    def _notice_soon(self, code: str, message: str) -> None:
        """Tell the thread something it should know while the run goes on
        (`state` kind `notice`); it does not end the run."""
        task = asyncio.get_running_loop().create_task(
            publish_state(
                self.run, "notice", {"code": code, "message": message}, self.stream
            )
        )
        _notices.add(task)
        task.add_done_callback(_notices.discard)
