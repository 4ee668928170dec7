"""Agents written in Python: a small base class, registered in code.

An agent is a class with an async generator `run(context)` that yields what
the thread should see:

- `str`: reply text (streamed to the thread as it comes);
- `StateUpdate(kind, data)`: a `state` frame of a kind realtime/protocol.py knows;
- `Ask("question")`: a question to the thread; the generator gets the answer
  back as the value of the `yield` (None when nobody answered in time).

and may `await context.call_tool(name, **arguments)` (a registered tool, run
by the worker like a model's call: frames, approvals, timeouts; returns the
output text, raises ToolCallFailed with the error) and `await
context.complete(agent_name, prompt)` (the whole reply of another agent's
model, e.g. an `openai` agent config, as text).

    from agents.python_agents import Ask, PythonAgent, python_agent

    @python_agent
    class Greeter(PythonAgent):
        name = "greeter"
        description = "Says hello to whoever answers."

        async def run(self, context):
            who = yield Ask("Who is there?")
            yield f"Hello, {who or 'nobody'}!"

Registering: `@python_agent` in a `python_agents` module (or package) of any
installed app, or a class path in the setting PARLEY_PYTHON_AGENTS (a list,
written by developers, never typed into a form); agents/apps.py imports them
when Django starts. An agent config selects one
with provider `python` and `model` = the agent's `name`; the admin and the API
accept only registered names. The tools it may call are its class's `tools`
plus the config's `tools`. agents/python_agents/weather.py is an example.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from agents.providers.base import ChatMessage, StateUpdate


@dataclass(frozen=True)
class Ask:
    """Yielded by an agent: ask the thread; the answer comes back from `yield`."""

    question: str
    timeout: float | None = None  # None: the agent config's input_timeout_seconds


class ToolCallFailed(Exception):
    """A tool the agent called gave an error (its text is the message)."""


@dataclass
class AgentContext:
    """What a Python agent knows and can do during one run."""

    messages: list[ChatMessage]  # the history, oldest first; the last is the prompt
    input_timeout: float
    extra_params: dict[str, Any] = field(default_factory=dict)
    _call_tool: Any = field(repr=False, default=None)
    _complete: Any = field(repr=False, default=None)

    @property
    def prompt(self) -> str:
        return self.messages[-1].content if self.messages else ""

    async def call_tool(self, name: str, **arguments: Any) -> str:
        result = await self._call_tool(name, arguments)
        if result.is_error:
            raise ToolCallFailed(result.content.removeprefix("Error: "))
        return result.content

    async def complete(self, agent_name: str, prompt: str) -> str:
        return await self._complete(agent_name, prompt)


class PythonAgent:
    """Subclass, set `name`, write `run`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    tools: ClassVar[tuple[str, ...]] = ()

    def run(self, context: AgentContext) -> AsyncIterator[str | StateUpdate | Ask]:
        raise NotImplementedError


_registry: dict[str, type[PythonAgent]] = {}


def python_agent(cls: type[PythonAgent]) -> type[PythonAgent]:
    """Register an agent class under its `name`."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__qualname__} needs a `name`.")
    existing = _registry.get(name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ValueError(f"A Python agent named {name!r} is registered already.")
    _registry[name] = cls
    return cls


def get_python_agent(name: str) -> type[PythonAgent] | None:
    return _registry.get(name)


def python_agent_names() -> list[str]:
    return sorted(_registry)
