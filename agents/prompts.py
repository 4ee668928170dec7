"""What a run sends its model: the thread's history within the agent's budget
(tool calls and results rebuilt into each provider's turns) and the provider
request built from the agent config and the thread's overrides."""

from __future__ import annotations

import json
import os

from django.conf import settings
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Coalesce

from agents.models import Run, RunToolStep, ToolStepStatus
from agents.providers import get_provider
from agents.providers.base import (
    ChatMessage,
    ProviderRequest,
    ToolCall,
    ToolResult,
)
from agents.teams import team_of
from agents.validation import effective_config
from chat.mentions import prompt_text
from chat.models import Message, MessageRole

# History is read newest first, this many messages per query, until the budget is spent.
HISTORY_PAGE = 100


def _in_pages(queryset, size: int):
    """The rows of an ordered queryset, read `size` at a time with LIMIT/OFFSET:
    a new thread's history is one short query, where `.iterator()` would open a
    server-side cursor on PostgreSQL (three round trips) for every run."""
    offset = 0
    while True:
        rows = list(queryset[offset : offset + size])
        yield from rows
        if len(rows) < size:
            return
        offset += size


def history_for(run: Run, *, persistent: bool) -> list[ChatMessage]:
    """The prompt, preceded (for persistent agents) by as much history as fits
    PARLEY_HISTORY_MAX_CHARS, newest kept first."""
    prompt = prompt_text(run.prompt.text) if run.prompt_id else ""
    messages = [ChatMessage("user", prompt)]
    if not persistent:
        return messages
    budget = settings.PARLEY_HISTORY_MAX_CHARS - len(prompt)
    asked_at = run.prompt.created_at if run.prompt_id else run.created_at
    # A message queued behind a running reply was stored before that reply:
    # take the replies of earlier runs too, and order by turn (the run a message
    # belongs to), a prompt before its reply. Newest first, as the budget is.
    earlier = (
        Message.objects.filter(thread_id=run.thread_id)
        .filter(
            Q(created_at__lt=asked_at)
            | Q(role=MessageRole.ASSISTANT, run__created_at__lt=run.created_at)
        )
        .exclude(pk=run.prompt_id)
        .annotate(turn=Coalesce("run__created_at", "created_at"))
        .order_by("-turn", "role", "-created_at")  # "assistant" < "user"
    )
    # Whether each reply's run called tools, in the same query: a thread
    # without tool calls pays no extra query for them.
    earlier = earlier.annotate(
        called_tools=Exists(RunToolStep.objects.filter(run_id=OuterRef("run_id")))
    ).values_list("role", "text", "run_id", "called_tools")
    for role, text, turns in _with_tool_turns(_in_pages(earlier, HISTORY_PAGE)):
        if not text and not turns:
            continue  # a reply that failed before its first chunk
        size = len(text) + sum(_turn_size(turn) for turn in turns)
        if size > budget:
            break
        budget -= size
        if turns:
            messages.extend(reversed(turns))  # newest first, as `messages` is here
        else:
            messages.append(ChatMessage(role, text))
    messages.reverse()
    # Providers expect alternating turns starting with the user.
    while len(messages) > 1 and messages[0].role != "user":
        messages.pop(0)
    return messages


def _with_tool_turns(rows):
    """(role, text, turns) per history row: `turns` splits a reply whose run
    called tools back into the model's turns (text and calls, results, ...,
    the final text), [] for any other row. One query per page of rows."""
    page: list[tuple] = []
    for row in rows:
        page.append(row)
        if len(page) == HISTORY_PAGE:
            yield from _page_with_tool_turns(page)
            page = []
    yield from _page_with_tool_turns(page)


def _page_with_tool_turns(page: list[tuple]):
    run_ids = {
        run_id
        for role, _text, run_id, called_tools in page
        if role == "assistant" and called_tools
    }
    steps: dict = {}
    if run_ids:
        for tool_step in RunToolStep.objects.filter(run_id__in=run_ids).order_by(
            "step", "position"
        ):
            steps.setdefault(tool_step.run_id, []).append(tool_step)
    for role, text, run_id, _called_tools in page:
        run_steps = steps.get(run_id) if role == "assistant" else None
        yield role, text, tool_turns(text, run_steps) if run_steps else []


def tool_turns(text: str, tool_steps: list[RunToolStep]) -> list[ChatMessage]:
    """A reply with tool calls as the model's turns, oldest first."""
    turns: list[ChatMessage] = []
    by_step: dict[int, list[RunToolStep]] = {}
    for tool_step in tool_steps:
        by_step.setdefault(tool_step.step, []).append(tool_step)
    offset = 0
    for number in sorted(by_step):
        calls = by_step[number]
        end = max(offset, min(calls[0].text_offset, len(text)))
        turns.append(
            ChatMessage(
                "assistant",
                text[offset:end].strip(),
                tool_calls=tuple(
                    ToolCall(
                        id=call.call_id,
                        name=wire_name(call.name),
                        arguments=call.arguments
                        if isinstance(call.arguments, str)
                        else json.dumps(call.arguments),
                    )
                    for call in calls
                ),
            )
        )
        turns.append(
            ChatMessage(
                "tool",
                "",
                tool_results=tuple(
                    ToolResult(
                        call_id=call.call_id,
                        name=wire_name(call.name),
                        content=call.output
                        if call.status == ToolStepStatus.COMPLETED
                        else f"Error: {call.error or call.status}",
                        is_error=call.status != ToolStepStatus.COMPLETED,
                    )
                    for call in calls
                ),
            )
        )
        offset = end
    final = text[offset:].strip()
    if final:
        turns.append(ChatMessage("assistant", final))
    return turns


def _turn_size(turn: ChatMessage) -> int:
    return (
        len(turn.content)
        + sum(len(call.arguments) for call in turn.tool_calls)
        + sum(len(result.content) for result in turn.tool_results)
    )


def wire_name(name: str) -> str:
    """A tool's name as the model sees it: the APIs allow no dots in names, so
    an MCP tool `<server>.<tool>` is offered as `<server>__<tool>`."""
    return name.replace(".", "__")


def _api_key(agent) -> str | None:
    """The agent's provider key, from the environment variable it names."""
    return os.environ.get(agent.api_key_env) if agent.api_key_env else None


def request_for(run: Run) -> tuple[ProviderRequest, object]:
    """The provider request of the run, from its own agent's config. The
    thread's overrides (model, temperature, ...) are those of its default
    agent: another agent of the thread answers with its config as it is."""
    agent = run.agent
    overrides = run.thread.config if run.agent_id == run.thread.agent_id else {}
    config = effective_config(agent, overrides)
    api_key = _api_key(agent)
    in_team = run.prompt_id is not None and team_of(run.thread.config) is not None
    history = team_history_for if in_team else history_for
    request = ProviderRequest(
        model=config["model"],
        messages=history(run, persistent=agent.persistent),
        system_prompt=config["system_prompt"],
        temperature=config["temperature"],
        max_tokens=config["max_tokens"],
        stream=config["stream"],
        extra_params=dict(agent.extra_params or {}),
        api_key=api_key or None,
        base_url=agent.base_url or None,
        timeout=settings.PARLEY_PROVIDER_TIMEOUT_SECONDS,
        max_retries=settings.PARLEY_PROVIDER_MAX_RETRIES,
        input_timeout=agent.input_timeout_seconds,
    )
    return request, get_provider(agent.provider)


def team_history_for(run: Run, *, persistent: bool) -> list[ChatMessage]:
    """What a turn of an agent team sends its model (agents/teams.py): the
    conversation up to this turn in the order it happened, the message that
    started the chain and the earlier turns' replies included, newest kept
    first within PARLEY_HISTORY_MAX_CHARS. The agent's own replies are
    `assistant` turns; the other agents' are `user` turns that start with
    their name (`coder: ...`), so the model knows who said what. A
    non-persistent agent gets the last message alone."""
    rows = (
        Message.objects.filter(thread_id=run.thread_id)
        .filter(
            Q(created_at__lte=run.prompt.created_at)
            | Q(role=MessageRole.ASSISTANT, run__created_at__lt=run.created_at)
        )
        .annotate(turn=Coalesce("run__created_at", "created_at"))
        .order_by("-turn", "role", "-created_at")  # newest first; "assistant" < "user"
        .values_list("role", "text", "agent__name")
    )
    budget = settings.PARLEY_HISTORY_MAX_CHARS
    messages: list[ChatMessage] = []
    for role, text, agent_name in _in_pages(rows, HISTORY_PAGE):
        if not text:
            continue  # a reply that failed before its first chunk
        if role == MessageRole.USER:
            message = ChatMessage("user", prompt_text(text))
        elif agent_name == run.agent.name:
            message = ChatMessage("assistant", text)
        else:
            message = ChatMessage("user", f"{agent_name or 'agent'}: {text}")
        if messages and len(message.content) > budget:
            break
        budget -= len(message.content)
        messages.append(message)
        if not persistent:
            break
    messages.reverse()
    while len(messages) > 1 and messages[0].role != "user":
        messages.pop(0)
    if not messages or messages[-1].role != "user":
        # The agent spoke last (a team of one): it is asked to go on.
        messages.append(ChatMessage("user", "Continue."))
    return messages


def provider_request_for(agent, *, question: str) -> tuple[ProviderRequest, object]:
    """A one-message request to `agent`'s model (its own config, no thread
    overrides, no history): how a team's selector is asked who speaks next."""
    config = effective_config(agent, {})
    api_key = _api_key(agent)
    request = ProviderRequest(
        model=config["model"],
        messages=[ChatMessage("user", question)],
        system_prompt=config["system_prompt"],
        temperature=config["temperature"],
        max_tokens=config["max_tokens"],
        stream=config["stream"],
        extra_params=dict(agent.extra_params or {}),
        api_key=api_key or None,
        base_url=agent.base_url or None,
        timeout=settings.PARLEY_PROVIDER_TIMEOUT_SECONDS,
        max_retries=settings.PARLEY_PROVIDER_MAX_RETRIES,
    )
    return request, get_provider(agent.provider)
