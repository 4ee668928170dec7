"""The tool registry: Python functions an agent may call, by name.

Register a function with the `@tool` decorator in any installed app's `tools`
module (`<app>/tools.py`, which agents/apps.py imports when Django starts):

    from agents.tools import tool

    @tool
    def get_weather(city: str, unit: str = "C") -> str:
        '''The current weather in a city.

        Args:
            city: The city's name, e.g. Oslo.
            unit: C or F.
        '''

The JSON schema offered to the model comes from the type hints (pydantic) and the
docstring: its first paragraph is the description, an `Args:` section describes
the parameters. Sync and async functions both work; a sync one runs in a thread.
A parameter annotated `ToolContext` is not offered to the model: the runtime
passes the run's context (the thread, a way to ask it a question).
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, get_args, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}\Z")


@dataclass
class ToolContext:
    """What a tool may know and do about the run calling it (never a key)."""

    run_id: str
    thread_id: str
    # Asks the thread a question; the answer, or None when nobody answered.
    ask: Callable[[str], Awaitable[str | None]]


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    function: Callable[..., Any]
    # None: the function takes the arguments object as it is (an MCP tool,
    # whose server checks them against its own schema).
    arguments_model: type[BaseModel] | None
    context_parameter: str | None = None
    # Waits for people (ask_thread): bounded by the input timeout, not the tool one.
    waits_for_people: bool = False
    source: str = "python"
    extra: dict[str, Any] = field(default_factory=dict)

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        """Validate `arguments` and call the function (ToolArgumentsError if invalid)."""
        if self.arguments_model is None:
            return await self.function(arguments)
        try:
            parsed = self.arguments_model.model_validate(arguments)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "arguments"
            raise ToolArgumentsError(f"{where}: {first['msg']}") from None
        kwargs = {name: getattr(parsed, name) for name in type(parsed).model_fields}
        if self.context_parameter:
            kwargs[self.context_parameter] = context
        if inspect.iscoroutinefunction(self.function):
            return await self.function(**kwargs)
        return await asyncio.to_thread(self.function, **kwargs)


class ToolArgumentsError(ValueError):
    """The model's arguments do not fit the tool's schema."""


_registry: dict[str, Tool] = {}


def _docstring_parts(doc: str) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description}) from a Google-style docstring."""
    doc = inspect.cleandoc(doc or "")
    sections = re.split(r"\n\s*(?:Args|Arguments|Parameters):\s*\n", doc, maxsplit=1)
    description = " ".join(sections[0].split("\n\n")[0].split())
    params: dict[str, str] = {}
    if len(sections) == 2:
        current = None
        for line in sections[1].splitlines():
            match = re.match(r"\s*(\w+)\s*(?:\([^)]*\))?:\s*(.*)", line)
            if match and (current is None or not line.startswith("        ")):
                current = match.group(1)
                params[current] = match.group(2).strip()
            elif current and line.strip():
                params[current] = f"{params[current]} {line.strip()}".strip()
            elif not line.strip() and params:
                current = None
    return description, params


def make_tool(
    function: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    waits_for_people: bool = False,
) -> Tool:
    """A Tool from a function: its schema from the hints and the docstring."""
    name = name or function.__name__
    if not NAME.match(name):
        raise ValueError(f"Tool name {name!r}: letters, digits, _ and -, at most 64.")
    doc_description, doc_params = _docstring_parts(function.__doc__ or "")
    hints = get_type_hints(function)
    fields: dict[str, Any] = {}
    context_parameter = None
    for parameter in inspect.signature(function).parameters.values():
        annotation = hints.get(parameter.name, Any)
        if annotation is ToolContext or ToolContext in get_args(annotation):
            context_parameter = parameter.name
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ValueError(f"Tool {name!r}: *args and **kwargs cannot be described.")
        default = (
            ... if parameter.default is inspect.Parameter.empty else parameter.default
        )
        fields[parameter.name] = (
            annotation,
            Field(default, description=doc_params.get(parameter.name)),
        )
    model = create_model(
        f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return Tool(
        name=name,
        description=description or doc_description or name,
        parameters=schema,
        function=function,
        arguments_model=model,
        context_parameter=context_parameter,
        waits_for_people=waits_for_people,
    )


def tool(
    function: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    waits_for_people: bool = False,
):
    """Register a function as a tool (`@tool` or `@tool(name=...)`)."""

    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        made = make_tool(
            function,
            name=name,
            description=description,
            waits_for_people=waits_for_people,
        )
        existing = _registry.get(made.name)
        if existing is not None and existing.function is not function:
            if (existing.function.__module__, existing.function.__qualname__) != (
                function.__module__,
                function.__qualname__,
            ):
                raise ValueError(f"A tool named {made.name!r} is registered already.")
        _registry[made.name] = made
        return function

    return register(function) if function is not None else register


def unregister(name: str) -> None:
    """Remove a tool (tests register throwaway ones)."""
    _registry.pop(name, None)


def get_tool(name: str) -> Tool | None:
    return _registry.get(name)


def tool_names() -> list[str]:
    return sorted(_registry)


__all__ = [
    "Tool",
    "ToolArgumentsError",
    "ToolContext",
    "get_tool",
    "make_tool",
    "tool",
    "tool_names",
    "unregister",
]
