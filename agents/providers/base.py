"""The provider interface: one agent call as an async iterator of events.

A provider turns a :class:`ProviderRequest` into a stream of
:class:`TextDelta`, :class:`StateUpdate`, :class:`ToolCall` and :class:`Usage`
events, and raises
:class:`ProviderError` with an :class:`AgentErrorCode` when the call fails.
The worker (``agents/execution.py``, ``agents/streaming.py``) coalesces text, publishes frames, persists
the reply and handles cancellation by cancelling the task that iterates.

One `stream()` is one model call. Tools: `request.tools` lists what the model
may call; a provider yields one complete :class:`ToolCall` per call the model
made, after the call's last argument fragment, and the worker's tool loop
(agents/execution.py) runs them and calls the provider again with the calls and
their results appended to `request.messages` (an assistant message with
`tool_calls`, then a `tool` message with `tool_results`), each provider putting
them in its own wire format.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from agents.errors import AgentErrorCode


@dataclass(frozen=True)
class ToolCall:
    """A complete tool call the model made; `arguments` is its JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolResult:
    """What a tool call gave back, as the model reads it."""

    call_id: str
    name: str
    content: str
    is_error: bool = False


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: `parameters` is a JSON schema (an object)."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ChatMessage:
    """One turn. `assistant` turns may carry the tool calls the model made;
    a `tool` turn carries their results (content empty)."""

    role: Literal["user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()


# Asks the thread's participants a question; returns the answer, or None when
# nobody answered within `timeout` seconds.
AskHuman = Callable[[str, float], Awaitable[str | None]]


async def _nobody_answers(question: str, timeout: float) -> str | None:
    return None


# Runs a tool through the runtime (frames, storage, approvals, bounds), for
# providers that call tools themselves (agents written in Python).
CallTool = Callable[[str, dict[str, Any]], Awaitable["ToolResult"]]


async def _no_tools(name: str, arguments: dict[str, Any]) -> ToolResult:
    return ToolResult(call_id="", name=name, content="No tools here.", is_error=True)


@dataclass
class ProviderRequest:
    model: str
    messages: list[ChatMessage]  # oldest first; the last one is the new prompt
    system_prompt: str = ""
    temperature: float = 0.7
    max_tokens: int = 1024
    stream: bool = True
    extra_params: dict[str, Any] = field(default_factory=dict)
    api_key: str | None = None
    base_url: str | None = None
    timeout: float = 60.0
    max_retries: int = 2
    ask_human: AskHuman = _nobody_answers
    tools: list[ToolSpec] = field(default_factory=list)
    call_tool: CallTool = _no_tools
    input_timeout: float = 120.0  # how long questions the agent asks may wait


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class StateUpdate:
    """Something the agent does besides text: a tool call, progress, usage so far."""

    kind: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None

    def as_dict(self) -> dict[str, int]:
        return {
            key: value
            for key, value in (
                ("input_tokens", self.input_tokens),
                ("output_tokens", self.output_tokens),
            )
            if value is not None
        }


ProviderEvent = TextDelta | StateUpdate | ToolCall | Usage


class ProviderError(Exception):
    """A failed provider call; `message` is safe to show users (no keys, no bodies)."""

    def __init__(self, code: AgentErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Provider(abc.ABC):
    name: ClassVar[str]
    # Whether the provider needs an API key (from the env var the agent names).
    needs_api_key: ClassVar[bool] = True

    @abc.abstractmethod
    def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        """Yield events for one call. Cancelling the iterating task must close
        the upstream connection promptly."""

    def config_problems(self, agent: Any) -> dict[str, str]:
        """Field -> problem, for admin and API validation of an agent config."""
        return {}
