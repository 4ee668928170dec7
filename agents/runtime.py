"""The agent runtime of one worker process.

It executes many runs at once (one asyncio task each, bounded by
PARLEY_WORKER_CONCURRENCY), streams their replies (agents/streaming.py) from
what agents/prompts.py sends the model, runs their tool calls, keeps a lease
on every run it holds, checkpoints the text so far of its runs to the database (PARLEY_CHECKPOINT_SECONDS,
for the embedded mode, whose event log dies with the process), stores the
questions its runs ask the thread, sweeps runs whose worker died, answers
cancel and input messages sent to its own control channel, and shuts down
gracefully.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import json
import logging
from functools import partial

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from agents import services
from agents.errors import AgentErrorCode
from agents.models import Run, RunInputStatus, RunStatus, ToolStepStatus
from agents.prompts import request_for, wire_name
from agents.providers.base import (
    ChatMessage,
    ProviderError,
    ProviderRequest,
    StateUpdate,
    TextDelta,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)
from agents.streaming import ChunkStream, publish_with_retry
from agents.teams import (
    HANDOFF_TOOL,
    Team,
    selector_pick,
    selector_request,
    team_of,
)
from agents.tools import Tool, ToolContext, get_tool
from agents.tools.runner import (
    MAX_OUTPUT_BYTES,
    ToolOutcome,
    parse_arguments,
    redact_value,
    run_tool,
)
from ops import metrics
from ops.logs import log_context_start
from realtime.batches import ServiceBatches
from realtime.eventlog import Chunk, get_event_log
from realtime.events import call_service
from realtime.protocol import (
    InputRequestContent,
    InputRequestFrame,
    StateFrame,
    ToolCallData,
    agent_name_json,
    response_event_json,
    state_content,
)
from realtime.retry import Backoff
from usage.metering import BUDGET_STOP, BudgetCrossed, UsageMeter
from usage.services import run_finish_and_charge

logger = logging.getLogger(__name__)


def _claims_and_prepare(
    *, items: list[str], worker_channel: str
) -> list[tuple[Run, tuple[ProviderRequest, object] | Exception] | None]:
    """Claim a batch of runs (realtime/batches.py) and build each one's provider
    request (or the error building it raised, which fails the run like a
    provider error would); None for a run not claimed."""
    claimed = services.runs_claim(run_ids=items, worker_channel=worker_channel)
    outcomes = []
    for run_id in items:
        run = claimed.get(run_id)
        if run is None:
            outcomes.append(None)
            continue
        try:
            outcomes.append((run, request_for(run)))
        except Exception as error:
            outcomes.append((run, error))
    return outcomes


class WorkerRuntime:
    def __init__(self) -> None:
        self.channel_name: str | None = None
        self.tasks: dict[str, asyncio.Task] = {}
        self.cancel_reasons: dict[str, str] = {}
        self.accepting = True
        self._slots: asyncio.Semaphore | None = None
        self._inputs: dict[str, dict[str, asyncio.Future]] = {}
        self._input_ids = itertools.count(1)
        self._background: list[asyncio.Task] = []
        self._started = False
        # Checkpoints: the stream of every run in flight, the chunk count each
        # last wrote, and the runs that asked the thread something.
        self._streams: dict[str, ChunkStream] = {}
        self._checkpointed: dict[str, int] = {}
        self._asked: set[str] = set()
        self._used_tools: set[str] = set()
        # Agent teams: whom a run's `handoff` tool passed the floor to.
        self._handoffs: dict[str, str] = {}
        # Claims that arrive while the service threads are busy go together.
        self._claims: ServiceBatches | None = None
        self._notices: set[asyncio.Task] = set()  # notices on their way

    # --- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._slots = asyncio.Semaphore(settings.PARLEY_WORKER_CONCURRENCY)
        layer = get_channel_layer()
        self.channel_name = await layer.new_channel("agents.worker.")
        self._claims = ServiceBatches(
            partial(_claims_and_prepare, worker_channel=self.channel_name),
            concurrency=settings.PARLEY_SERVICE_THREADS,
        )
        loop = asyncio.get_running_loop()
        self._background = [
            loop.create_task(self._listen_control(layer)),
            loop.create_task(self._keep_leases()),
            loop.create_task(self._sweep_forever()),
        ]
        if settings.PARLEY_CHECKPOINT_SECONDS > 0:
            self._background.append(
                loop.create_task(
                    self._checkpoint_forever(settings.PARLEY_CHECKPOINT_SECONDS)
                )
            )
            _checkpoint_at_exit_once()
        logger.info("agent worker %s started", self.channel_name)

    def flush_window(self) -> float:
        """Seconds a token may wait to share a chunk: PARLEY_FLUSH_WINDOW_MS
        while the worker is lightly loaded, stretching with the number of runs
        in flight up to PARLEY_FLUSH_WINDOW_MAX_MS. Every chunk costs the same
        to publish and deliver whatever it holds, so under load fewer, fuller
        chunks keep latency bounded where one chunk per token would not."""
        base = settings.PARLEY_FLUSH_WINDOW_MS
        stretch = len(self.tasks) / settings.PARLEY_FLUSH_WINDOW_RUNS
        return (
            min(settings.PARLEY_FLUSH_WINDOW_MAX_MS, max(base, base * stretch)) / 1000
        )

    async def reserve_slot(self) -> None:
        """Wait for a free slot and hold it for a run about to be submitted."""
        await self._slots.acquire()

    async def reserve_free_slots(self, wanted: int) -> int:
        """Hold up to `wanted` more slots that are free now; how many were
        taken. (Acquiring a semaphore that is not locked does not wait.)"""
        taken = 0
        while taken < wanted and not self._slots.locked():
            await self._slots.acquire()
            taken += 1
        return taken

    def release_slot(self) -> None:
        self._slots.release()

    async def submit(self, run_id: str, *, slot_reserved: bool = False) -> None:
        """Start the run in a task of its own, in a free slot (waiting for one
        unless the caller reserved it)."""
        if not self.accepting or run_id in self.tasks:
            if slot_reserved:
                self.release_slot()
            if not self.accepting:
                # Hand it back for another worker; the sweeper catches it otherwise.
                await services.send_to_channel(
                    services.AGENT_RUNS_CHANNEL, {"type": "run.start", "run_id": run_id}
                )
            return
        if not slot_reserved:
            await self._slots.acquire()
        task = asyncio.get_running_loop().create_task(self.execute(run_id))
        self.tasks[run_id] = task
        metrics.worker_run_began()

        def done(_task: asyncio.Task) -> None:
            metrics.worker_run_ended()
            self.tasks.pop(run_id, None)
            self.cancel_reasons.pop(run_id, None)
            self._slots.release()

        task.add_done_callback(done)

    async def shutdown(self, grace: float) -> None:
        """Stop taking runs, let running ones finish for `grace` seconds, then fail them."""
        self.accepting = False
        if settings.PARLEY_CHECKPOINT_SECONDS > 0:
            # Should the process be killed during the grace period.
            try:
                await self.checkpoint()
            except Exception:
                logger.exception("writing checkpoints at shutdown failed")
        running = list(self.tasks.values())
        if running:
            logger.info("waiting up to %.0f s for %d runs", grace, len(running))
            await asyncio.wait(running, timeout=grace)
        for run_id in list(self.tasks):
            self.cancel(run_id, reason="shutdown")
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()), timeout=10)
        for task in self._background:
            task.cancel()

    # --- one run -----------------------------------------------------------
    async def execute(self, run_id: str) -> None:
        # One database hop from `run.start` to calling the provider, shared
        # with the other runs handed over meanwhile.
        claimed = await self._claims.submit(run_id)
        if claimed is None:
            return
        run, prepared = claimed
        thread_id = run.thread_id
        log_context_start(
            run_id=run_id, thread_id=thread_id, user_id=run.requested_by_id
        )
        agent = run.agent
        agent_json = agent_name_json(agent.name)  # once per run, not per chunk

        async def publish_chunk(index: int, text: str, text_before: str) -> None:
            if index == 0:
                metrics.first_response(run)
            frame = response_event_json(
                thread_id=thread_id,
                run_id=run.id,
                stream_index=index,
                text=text,
                agent_json=agent_json,
            )
            chunk = Chunk(
                run_id=str(run.id),
                stream_index=index,
                text=text,
                text_before=text_before,
            )
            await publish_with_retry(thread_id, frame, chunk=chunk)

        stream = ChunkStream(
            publish_chunk,
            chunk_size=agent.chunk_size,
            window=self.flush_window,
            buffered=agent.buffer_chunks,
            mode=run.thread.config.get("stream_mode", "tokens"),
        )
        self._streams[run_id] = stream
        try:
            await self._run_stream(run_id, run, prepared, stream)
        finally:
            self._streams.pop(run_id, None)
            self._checkpointed.pop(run_id, None)
            self._asked.discard(run_id)
            self._used_tools.discard(run_id)
            self._handoffs.pop(run_id, None)

    async def _run_stream(
        self, run_id: str, run: Run, prepared, stream: ChunkStream
    ) -> None:
        """Stream the provider's reply into `stream`, then finish the run."""
        agent = run.agent
        usage: dict = {}
        meter = UsageMeter.for_run(run)  # tokens and cost so far (usage/)
        status, error_code, error = RunStatus.COMPLETED, "", ""
        try:
            if isinstance(prepared, Exception):
                raise prepared
            request, provider = prepared
            request.ask_human = lambda question, timeout: self.ask_human(
                run, question, timeout
            )
            # An agent that names a key variable needs the key, whatever its
            # base_url; one naming none is left to the provider (a keyless local
            # server gets a placeholder, the default endpoint fails).
            if provider.needs_api_key and agent.api_key_env and not request.api_key:
                raise ProviderError(
                    AgentErrorCode.PROVIDER_KEY_MISSING,
                    f"No API key: set the environment variable {agent.api_key_env} "
                    "for the worker.",
                )
            tools = await self._tools_for(run)
            request.tools = [
                ToolSpec(wire, tool.description, tool.parameters)
                for wire, (_name, tool) in tools.items()
            ]
            room = settings.PARLEY_MAX_REPLY_CHARS
            # Characters of reply text so far and tool steps taken, over every
            # model call (a Python agent's tool calls count as steps too).
            reply = _ReplyProgress()

            async def call_tool(name: str, arguments: dict) -> ToolResult:
                if reply.step >= agent.max_tool_steps:
                    raise ProviderError(
                        AgentErrorCode.TOOL_STEPS_EXCEEDED,
                        f"The agent called more than {agent.max_tool_steps} tools "
                        "(max_tool_steps); the reply was stopped.",
                    )
                call = ToolCall(
                    id=f"call_{reply.step}",
                    name=wire_name(name),
                    arguments=json.dumps(arguments),
                )
                reply.step += 1
                (result,) = await self._run_tool_calls(
                    run,
                    request,
                    reply.step - 1,
                    [call],
                    tools,
                    stream,
                    text_offset=reply.written,
                )
                return result

            request.call_tool = call_tool
            while True:
                calls: list[ToolCall] = []
                step_text: list[str] = []
                async for event in provider.stream(request):
                    if isinstance(event, TextDelta):
                        text = event.text
                        if reply.step and not step_text and text and reply.written:
                            text = "\n\n" + text  # a new turn of the model
                        # Frames above 1 MiB cannot be sent through daphne: bound replies.
                        stream.add(text[:room])
                        if meter.add(text):
                            raise BudgetCrossed
                        step_text.append(text)
                        reply.written += min(len(text), max(room, 0))
                        room -= len(text)
                        if room < 0:
                            raise ProviderError(
                                AgentErrorCode.REPLY_TOO_LONG,
                                f"The reply was cut at {settings.PARLEY_MAX_REPLY_CHARS} characters.",
                            )
                    elif isinstance(event, ToolCall):
                        calls.append(event)
                    elif isinstance(event, StateUpdate):
                        await self._publish_state(run, event.kind, event.data, stream)
                    elif isinstance(event, Usage):
                        usage = _add_usage(usage, event.as_dict())
                        if meter.report(usage):
                            raise BudgetCrossed
                        await self._publish_state(run, "usage", usage, stream)
                if not calls:
                    break
                if reply.step >= agent.max_tool_steps:
                    raise ProviderError(
                        AgentErrorCode.TOOL_STEPS_EXCEEDED,
                        f"The agent still asked for tools after {agent.max_tool_steps} "
                        "tool steps (max_tool_steps); the reply was stopped.",
                    )
                results = await self._run_tool_calls(
                    run,
                    request,
                    reply.step,
                    calls,
                    tools,
                    stream,
                    text_offset=reply.written,
                )
                request.messages = [
                    *request.messages,
                    ChatMessage(
                        "assistant", "".join(step_text).strip(), tool_calls=tuple(calls)
                    ),
                    ChatMessage("tool", "", tool_results=tuple(results)),
                ]
                reply.step += 1
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()
            if self.cancel_reasons.get(run_id) == "shutdown":
                status, error_code = (
                    RunStatus.FAILED,
                    AgentErrorCode.WORKER_SHUTDOWN.value,
                )
                error = "The worker shut down before the reply finished."
            else:
                status = RunStatus.CANCELLED
        except BudgetCrossed:  # a hard budget ran out mid-reply: stopped, text kept
            status, error_code = RunStatus.CANCELLED, BUDGET_STOP
            error = meter.stop_message()
        except ProviderError as failure:
            status, error_code, error = (
                RunStatus.FAILED,
                failure.code.value,
                failure.message,
            )
        except Exception:
            logger.exception("run %s failed", run_id)
            status, error_code = RunStatus.FAILED, AgentErrorCode.INTERNAL_ERROR.value
            error = "The agent failed unexpectedly."
        finally:
            self._inputs.pop(run_id, None)
            # From here on the run is finishing: a cancel arriving now must not
            # interrupt saving it (it would stay `running` until swept).
            self.cancel_reasons.setdefault(run_id, "finishing")
        await stream.close()
        team = team_of(run.thread.config)
        team_choice = await self._team_choice(run, team, status, stream.text)
        await call_service(
            run_finish_and_charge,  # agents.services.run_finish + the usage record
            run=run,
            meter=meter,
            status=status,
            text=stream.text,
            chunks=stream.chunks,
            usage=usage,
            error_code=error_code,
            error=error,
            close_inputs=run_id in self._asked,
            close_tool_steps=run_id in self._used_tools,
            agent_name=agent.name,
            team_choice=team_choice,
            in_team=team is not None,
        )

    async def _team_choice(
        self, run: Run, team: Team | None, status: RunStatus, text: str
    ) -> str | None:
        """Whom a finished team turn hands the floor to, where the turn
        decides it (agents/teams.py): the `handoff` tool's target, or the
        selector model's pick (asked here, before the run finishes). None:
        no team, no choice, or the chain ends anyway."""
        if team is None or status != RunStatus.COMPLETED:
            return None
        if team.policy == "handoff":
            return self._handoffs.get(str(run.id))
        if team.policy != "selector":
            return None
        try:
            asking = await call_service(selector_request, run=run, team=team, text=text)
        except Exception:
            logger.exception("run %s: could not ask the team's selector", run.id)
            return None
        if asking is None:
            return None
        request, provider, candidates = asking
        chosen, said = await selector_pick(request, provider, candidates)
        return chosen or said[:100]

    async def _publish_state(
        self, run: Run, kind: str, data: dict, stream: ChunkStream
    ) -> None:
        if not run.thread.config.get("progressive_updates", True):
            return  # the thread asked for the final state_complete only
        try:
            content = state_content(kind, data)
        except ValueError:  # a provider's bug: the reply goes on without it
            logger.exception("run %s: dropped a state update of kind %r", run.id, kind)
            return
        # Keep order: text flushed before the state update must be published first.
        await stream.drain()
        await publish_with_retry(
            run.thread_id,
            StateFrame(
                content=content,
                thread_id=run.thread_id,
                run_id=run.id,
                agent=run.agent.name,
            ),
        )

    def _notice_soon(self, run: Run, stream: ChunkStream, code: str, message: str):
        """Tell the thread something it should know while the run goes on
        (`state` kind `notice`); it does not end the run."""
        task = asyncio.get_running_loop().create_task(
            self._publish_state(
                run, "notice", {"code": code, "message": message}, stream
            )
        )
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    # --- tools ---------------------------------------------------------------
    async def _tools_for(self, run: Run) -> dict[str, tuple[str, Tool]]:
        """The tools the run's agent may call: model-facing name -> (name, tool)."""
        tools: dict[str, tuple[str, Tool]] = {}
        names = list(run.agent.tools or [])
        if run.agent.provider == "python":
            from agents.python_agents import get_python_agent

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
            from agents.tools.mcp import mcp_tools_for

            for name, tool in (await mcp_tools_for(run.agent)).items():
                tools[wire_name(name)] = (name, tool)
        return tools

    async def _run_tool_calls(
        self,
        run: Run,
        request: ProviderRequest,
        step: int,
        calls: list[ToolCall],
        tools: dict[str, tuple[str, Tool]],
        stream: ChunkStream,
        *,
        text_offset: int,
    ) -> list[ToolResult]:
        """Run one model call's tool calls, independent ones at once; each
        `tool_call` frame goes out before any runs, each `tool_result` as its
        call ends. Their results, in the order of the calls."""
        run_id = str(run.id)
        agent = run.agent
        secrets = [key for key in (request.api_key,) if key]
        for _name, tool in tools.values():
            secrets += tool.extra.get("secrets", [])
        entries = []
        for call in calls:
            name = tools[call.name][0] if call.name in tools else call.name
            if len(call.arguments) > MAX_OUTPUT_BYTES:  # never a frame too large
                arguments = call.arguments[:1000] + " … (cut: too long)"
            else:
                arguments = redact_value(parse_arguments(call.arguments), secrets)
            entries.append({"id": call.id, "name": name, "arguments": arguments})
        self._used_tools.add(run_id)
        await call_service(
            services.run_tool_steps_open,
            run_id=run_id,
            step=step,
            text_offset=text_offset,
            calls=entries,
        )
        for entry in entries:
            await self._publish_state(run, "tool_call", entry, stream)
        context = ToolContext(
            run_id=run_id,
            thread_id=str(run.thread_id),
            ask=lambda question: self.ask_human(
                run, question, agent.input_timeout_seconds
            ),
        )
        approvals = set(agent.approval_required or [])

        async def one(position: int, call: ToolCall, entry: dict) -> ToolResult:
            tool = tools.get(call.name, (None, None))[1]
            name = entry["name"]
            outcome = None
            status = ToolStepStatus.COMPLETED
            if tool is not None and (
                name in approvals or f"{name.split('.', 1)[0]}.*" in approvals
            ):
                approved = await self.ask_approval(
                    run, entry, agent.input_timeout_seconds
                )
                if approved is not True:
                    status = ToolStepStatus.DENIED
                    outcome = ToolOutcome(
                        error="A person in the thread denied this tool call."
                        if approved is False
                        else "Nobody approved this tool call in time; it did not run."
                    )
            if outcome is None:
                waits_for_people = tool is not None and tool.waits_for_people
                slow = None
                if not waits_for_people:
                    # A tool that takes a while: the thread hears so, once.
                    slow = asyncio.get_running_loop().call_later(
                        settings.PARLEY_SLOW_TOOL_NOTICE_SECONDS,
                        lambda: self._notice_soon(
                            run,
                            stream,
                            "tool_slow",
                            f"The tool {name} is taking a while; the reply goes on "
                            "once it answers.",
                        ),
                    )
                try:
                    outcome = await run_tool(
                        tool,
                        name=name,
                        arguments=entry["arguments"],
                        context=context,
                        timeout=None
                        if waits_for_people
                        else agent.tool_timeout_seconds,
                        secrets=secrets,
                    )
                finally:
                    if slow is not None:
                        slow.cancel()
                if outcome.error is not None:
                    status = ToolStepStatus.FAILED
                elif name == HANDOFF_TOOL and isinstance(entry["arguments"], dict):
                    self._handoffs[run_id] = str(entry["arguments"].get("to", ""))
            await call_service(
                services.run_tool_step_close,
                run_id=run_id,
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
            await self._publish_state(run, "tool_result", data, stream)
            return ToolResult(
                call_id=call.id,
                name=call.name,
                content=outcome.text,
                is_error=outcome.error is not None,
            )

        async with asyncio.TaskGroup() as group:
            running = [
                group.create_task(one(position, call, entry))
                for position, (call, entry) in enumerate(
                    zip(calls, entries, strict=True)
                )
            ]
        return [task.result() for task in running]

    async def ask_approval(self, run: Run, entry: dict, timeout: float) -> bool | None:
        """Ask the thread's writers to approve a tool call: True, False, or None
        when nobody answered within `timeout` s (the call does not run)."""
        arguments = entry["arguments"]
        shown = arguments if isinstance(arguments, str) else json.dumps(arguments)
        answer = await self._ask(
            run,
            f"Allow the tool {entry['name']} with {shown[:500]}?",
            timeout,
            kind="approval",
            tool_call=ToolCallData(**entry),
        )
        return answer if answer is None else bool(answer)

    async def ask_human(self, run: Run, question: str, timeout: float) -> str | None:
        """Ask the thread; the answer, or None when nobody answers in `timeout` s."""
        return await self._ask(run, question, timeout)

    async def _ask(
        self,
        run: Run,
        question: str,
        timeout: float,
        *,
        kind: str = "question",
        tool_call: ToolCallData | None = None,
    ):
        """Ask the thread (a question, or an approval of `tool_call`); the
        answer (text, or True/False), or None when nobody answers in time.

        The question is stored before it is published (snapshots show it open,
        the history keeps it) and closed with how it ended."""
        run_id = str(run.id)
        input_id = f"{run_id}:{next(self._input_ids)}"
        future = asyncio.get_running_loop().create_future()
        self._inputs.setdefault(run_id, {})[input_id] = future
        self._asked.add(run_id)  # the run's finish closes it, whatever happens
        try:
            await call_service(
                services.run_input_open,
                run_id=run_id,
                input_id=input_id,
                question=question,
                timeout=timeout,
                kind=kind,
                tool_call=tool_call.model_dump() if tool_call else None,
            )
            await publish_with_retry(
                run.thread_id,
                InputRequestFrame(
                    content=InputRequestContent(
                        input_id=input_id,
                        kind=kind,
                        question=question,
                        timeout=timeout,
                        tool_call=tool_call,
                    ),
                    thread_id=run.thread_id,
                    run_id=run.id,
                    agent=run.agent.name,
                ),
            )
            try:
                result, by = await asyncio.wait_for(future, timeout)
                if isinstance(result, bool):  # an approval
                    shown = "approved" if result else "denied"
                else:
                    shown = result
                state_kind = "input_received"
                data = {"input_id": input_id, "by": by, "answer": shown}
                closed = {
                    "status": RunInputStatus.ANSWERED,
                    "answer": shown,
                    "username": by,
                }
            except TimeoutError:
                state_kind, data, result = "input_timeout", {"input_id": input_id}, None
                closed = {"status": RunInputStatus.TIMED_OUT}
        finally:
            self._inputs.get(run_id, {}).pop(input_id, None)
        try:
            await call_service(services.run_input_close, input_id=input_id, **closed)
        except Exception:  # the agent has its answer; the history may miss it
            logger.exception("recording the outcome of input %s failed", input_id)
        await publish_with_retry(
            run.thread_id,
            StateFrame(
                content=state_content(state_kind, data),
                thread_id=run.thread_id,
                run_id=run.id,
                agent=run.agent.name,
            ),
        )
        return result

    # --- checkpoints ---------------------------------------------------------
    def _changed_checkpoints(self) -> list[tuple[str, str, int]]:
        """(run_id, text, chunks) of the runs that published chunks since their
        last checkpoint."""
        return [
            (run_id, *stream.published)
            for run_id, stream in self._streams.items()
            if stream.chunks > self._checkpointed.get(run_id, 0)
        ]

    async def checkpoint(self) -> int:
        """Write the text so far of the runs whose text changed since their last
        checkpoint, in one batch; returns how many were written."""
        changed = self._changed_checkpoints()
        if not changed:
            return 0
        written = await call_service(services.run_checkpoint, checkpoints=changed)
        for run_id, _text, chunks in changed:
            if run_id in self._streams:  # not finished meanwhile
                self._checkpointed[run_id] = chunks
        return written

    async def _checkpoint_forever(self, interval: float) -> None:
        # One batch per interval, whatever the number of runs and chunks: the
        # streaming path itself never writes to the database.
        while True:
            await asyncio.sleep(interval)
            try:
                await self.checkpoint()
            except Exception:
                logger.exception("writing checkpoints failed")

    # --- control -----------------------------------------------------------
    def cancel(self, run_id: str, reason: str = "cancel") -> None:
        """Stop a run once: cancelling its task closes the provider's stream."""
        task = self.tasks.get(run_id)
        if task is not None and not task.done() and run_id not in self.cancel_reasons:
            self.cancel_reasons[run_id] = reason
            task.cancel()

    def answer(
        self, run_id: str, input_id: str | None, text: str | bool, username: str
    ) -> bool:
        """Hand an answer (text, or True/False for an approval) to the waiting run."""
        pending = self._inputs.get(run_id) or {}
        if input_id is None and pending:
            input_id = next(iter(pending))
        future = pending.get(input_id)
        if future is None or future.done():
            return False
        future.set_result((text, username))
        return True

    async def _listen_control(self, layer) -> None:
        backoff = Backoff(0.1)
        while True:
            try:
                message = await layer.receive(self.channel_name)
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning("control channel: %s", error)
                await backoff.wait()
                continue
            if message.get("type") == "run.cancel":
                self.cancel(message["run_id"])
            elif message.get("type") == "run.input":
                approve = message.get("approve")
                self.answer(
                    message["run_id"],
                    message.get("input_id"),
                    message.get("text") if approve is None else bool(approve),
                    message.get("username", ""),
                )

    async def _keep_leases(self) -> None:
        interval = max(settings.PARLEY_LEASE_SECONDS / 3, 0.5)
        while True:
            await asyncio.sleep(interval)
            try:
                to_cancel = await database_sync_to_async(services.run_renew_leases)(
                    worker_channel=self.channel_name, run_ids=list(self.tasks)
                )
                for run_id in to_cancel:
                    self.cancel(run_id)
            except Exception:
                logger.exception("renewing leases failed")

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                logger.exception("sweeping stale runs failed")
            await asyncio.sleep(settings.PARLEY_SWEEP_INTERVAL_SECONDS)

    async def sweep(self) -> list[Run]:
        partial: dict[str, tuple[str, int]] = {}
        stale = await database_sync_to_async(_stale_runs)()
        log = get_event_log()
        for run_id, thread_id in stale:
            try:
                state = await log.thread_state(str(thread_id))
                progress = state.runs.get(run_id)
                partial[run_id] = (
                    (progress.text, progress.next_stream_index) if progress else None
                )
            except Exception:
                partial[run_id] = None
        # Where the log has nothing (embedded mode after a restart: it died with
        # the worker), run_sweep takes the run's last checkpoint.
        return await call_service(
            services.run_sweep,
            read_partial_text=lambda run: partial.get(str(run.id)),
        )


class _ReplyProgress:
    """How far a reply has come: its text's length, the tool steps taken."""

    def __init__(self) -> None:
        self.written = 0
        self.step = 0


def _add_usage(total: dict, more: dict) -> dict:
    """Usage over the model calls of one reply: the counts added up."""
    added = dict(total)
    for key, value in more.items():
        added[key] = added.get(key, 0) + value
    return added


def _stale_runs() -> list[tuple[str, str]]:
    from django.utils import timezone

    return [
        (str(pk), str(thread_id))
        for pk, thread_id in Run.objects.filter(
            status=RunStatus.RUNNING, lease_expires_at__lt=timezone.now()
        ).values_list("pk", "thread_id")
    ]


_runtime: WorkerRuntime | None = None


def get_runtime() -> WorkerRuntime:
    global _runtime
    if _runtime is None:
        _runtime = WorkerRuntime()
    return _runtime


def reset_runtime() -> None:
    global _runtime
    _runtime = None


_exit_hook_registered = False


def _checkpoint_at_exit_once() -> None:
    """A last checkpoint when the process exits normally: the embedded worker
    lives in daphne, which stops its event loop on SIGTERM without telling the
    application, so `shutdown` never runs there."""
    global _exit_hook_registered
    if not _exit_hook_registered:
        _exit_hook_registered = True
        atexit.register(_checkpoint_at_exit)


def _checkpoint_at_exit() -> None:
    runtime = _runtime
    if runtime is None:
        return
    changed = runtime._changed_checkpoints()
    if not changed:
        return
    try:
        services.run_checkpoint(checkpoints=changed)
        logger.info("wrote the text of %d runs at exit", len(changed))
    except Exception:
        logger.exception("writing checkpoints at exit failed")
