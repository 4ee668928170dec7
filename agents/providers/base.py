"""The provider interface: one agent call as an async iterator of events.

A provider turns a :class:`ProviderRequest` into a stream of
:class:`TextDelta`, :class:`StateUpdate` and :class:`Usage` events, and raises
:class:`ProviderError` with an :class:`AgentErrorCode` when the call fails.
The worker (``agents/runtime.py``) coalesces text, publishes frames, persists
the reply and handles cancellation by cancelling the task that iterates.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from agents.errors import AgentErrorCode


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["user", "assistant"]
    content: str


# Asks the thread's participants a question; returns the answer, or None when
# nobody answered within `timeout` seconds.
AskHuman = Callable[[str, float], Awaitable[str | None]]


async def _nobody_answers(question: str, timeout: float) -> str | None:
    return None


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


ProviderEvent = TextDelta | StateUpdate | Usage


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
