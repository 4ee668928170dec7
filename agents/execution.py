"""Executing one run in the worker, from its claim to its finish.

The worker claims runs in batches (`claims_and_prepare`: a lease on each, and
the provider request agents/prompts.py builds). `execute_run` then streams the
model's reply into the run's `ChunkStream` (agents/streaming.py) in the tool
loop (`_tool_loop`): a model call, the tools it asked for
(agents/tool_calls.py), the next model call with their results, until one
answers without tools. Along the way it keeps the reply within
PARLEY_MAX_REPLY_CHARS, the agent's max_tool_steps and the hard budgets
(usage/metering.py) and passes state updates and usage on to the thread.
Whatever ended it (done, cancel, shutdown, budget, provider error, a bug)
becomes the run's final status, stored with the text and the charge
(usage/services.py `run_finish_and_charge`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial

from django.conf import settings
from django.db import InterfaceError, OperationalError

from agents import services
from agents.errors import AgentErrorCode
from agents.models import Run, RunStatus
from agents.next_speaker import next_speaker
from agents.prompts import request_for, wire_name
from agents.providers.base import (
    ChatMessage,
    ProviderError,
    ProviderRequest,
    StateUpdate,
    TextDelta,
    ToolCall,
    ToolResult,
    Usage,
)
from agents.questions import Questions
from agents.streaming import ChunkStream, publish_state
from agents.teams import team_of
from agents.tool_calls import ToolCalls, tools_for
from realtime.events import call_service
from realtime.retry import Backoff
from usage.metering import BUDGET_STOP, BudgetCrossed, UsageMeter
from usage.services import run_finish_and_charge

logger = logging.getLogger(__name__)


def claims_and_prepare(
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


class _Reply:
    """How far a reply has come, over every model call: its text's length,
    the tool steps taken (a Python agent's tool calls count too), the usage
    reported, and its tool calls once the tools are known."""

    def __init__(self) -> None:
        self.written = 0
        self.step = 0
        self.usage: dict = {}
        self.tool_calls: ToolCalls | None = None


async def execute_run(
    run: Run,
    prepared: tuple[ProviderRequest, object] | Exception,
    stream: ChunkStream,
    *,
    questions: Questions,
    cancel_reasons: dict[str, str],
) -> None:
    """Stream the provider's reply into `stream`, then finish the run.
    `cancel_reasons` is the worker's: why a cancelled run was cancelled."""
    run_id = str(run.id)
    reply = _Reply()
    meter = UsageMeter.for_run(run)  # tokens and cost so far (usage/)
    status, error_code, error = RunStatus.COMPLETED, "", ""
    try:
        if isinstance(prepared, Exception):
            raise prepared
        request, provider = prepared
        await _tool_loop(run, request, provider, stream, reply, meter, questions)
    except asyncio.CancelledError:
        asyncio.current_task().uncancel()
        if cancel_reasons.get(run_id) == "shutdown":
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
        asked = questions.end(run_id)
        # From here on the run is finishing: a cancel arriving now must not
        # interrupt saving it (it would stay `running` until swept).
        cancel_reasons.setdefault(run_id, "finishing")
    await stream.close()
    team = team_of(run.thread.config)
    tool_calls = reply.tool_calls
    team_choice = await next_speaker(
        run,
        team,
        status,
        stream.text,
        handoff_to=tool_calls.handoff_to if tool_calls else None,
    )
    await finish_retried(
        partial(
            call_service,
            run_finish_and_charge,  # agents.services.run_finish + the usage record
            run=run,
            meter=meter,
            status=status,
            text=stream.text,
            chunks=stream.chunks,
            usage=reply.usage,
            error_code=error_code,
            error=error,
            close_inputs=asked,
            close_tool_steps=tool_calls is not None and tool_calls.used,
            agent_name=run.agent.name,
            team_choice=team_choice,
            in_team=team is not None,
        ),
        run_id=run_id,
    )


async def finish_retried(finish: Callable[[], Awaitable], *, run_id: str) -> None:
    """Await `finish()` (the run's finishing transaction), again while the
    database is away (a restart: OperationalError, InterfaceError), for up to
    PARLEY_LEASE_SECONDS: the whole reply is here and ends with its status,
    rather than being swept as `worker_lost` once its lease lapses. A failed
    attempt rolled back, and the next one runs on a new connection."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.PARLEY_LEASE_SECONDS
    backoff = Backoff(0.2, maximum=2.0)
    while True:
        try:
            await finish()
            return
        except (OperationalError, InterfaceError):
            if loop.time() >= deadline:
                raise
            logger.warning(
                "finishing run %s: the database is unreachable; trying again", run_id
            )
            await backoff.wait()


async def _tool_loop(
    run: Run,
    request: ProviderRequest,
    provider,
    stream: ChunkStream,
    reply: _Reply,
    meter: UsageMeter,
    questions: Questions,
) -> None:
    """Call the model, run the tools it asks for and call it again with their
    results, until it answers without tools; raises what ends the reply early."""
    agent = run.agent
    request.ask_human = lambda question, timeout: questions.ask(run, question, timeout)
    # An agent that names a key variable needs the key, whatever its
    # base_url; one naming none is left to the provider (a keyless local
    # server gets a placeholder, the default endpoint fails).
    if provider.needs_api_key and agent.api_key_env and not request.api_key:
        raise ProviderError(
            AgentErrorCode.PROVIDER_KEY_MISSING,
            f"No API key: set the environment variable {agent.api_key_env} "
            "for the worker.",
        )
    tool_calls = reply.tool_calls = ToolCalls(
        run, request, stream, tools=await tools_for(run), questions=questions
    )
    request.tools = tool_calls.specs()
    room = settings.PARLEY_MAX_REPLY_CHARS

    async def call_tool(name: str, arguments: dict) -> ToolResult:
        """A tool call of a Python agent (agents/python_agents/)."""
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
        (result,) = await tool_calls.run_calls(
            reply.step - 1, [call], text_offset=reply.written
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
                await publish_state(run, event.kind, event.data, stream)
            elif isinstance(event, Usage):
                reply.usage = _add_usage(reply.usage, event.as_dict())
                if meter.report(reply.usage):
                    raise BudgetCrossed
                await publish_state(run, "usage", reply.usage, stream)
        if not calls:
            return
        if reply.step >= agent.max_tool_steps:
            raise ProviderError(
                AgentErrorCode.TOOL_STEPS_EXCEEDED,
                f"The agent still asked for tools after {agent.max_tool_steps} "
                "tool steps (max_tool_steps); the reply was stopped.",
            )
        results = await tool_calls.run_calls(
            reply.step, calls, text_offset=reply.written
        )
        request.messages = [
            *request.messages,
            ChatMessage(
                "assistant", "".join(step_text).strip(), tool_calls=tuple(calls)
            ),
            ChatMessage("tool", "", tool_results=tuple(results)),
        ]
        reply.step += 1


def _add_usage(total: dict, more: dict) -> dict:
    """Usage over the model calls of one reply: the counts added up."""
    added = dict(total)
    for key, value in more.items():
        added[key] = added.get(key, 0) + value
    return added
