"""Running one tool call the model asked for: arguments parsed and checked,
a timeout, a bounded output, secrets kept out, every failure an error result.

Nothing a tool does ends the run: a tool that raises, times out, returns
something too large or is unknown gives the model an error it can read (and
perhaps recover from). Only cancelling the run stops a tool mid-call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from agents.tools.registry import Tool, ToolArgumentsError, ToolContext

logger = logging.getLogger(__name__)

MAX_OUTPUT_BYTES = 64 * 1024
MAX_ERROR_CHARS = 1000
REDACTED = "[redacted]"


@dataclass(frozen=True)
class ToolOutcome:
    """What goes back to the model: `output`, or `error` when the call failed."""

    output: str | None = None
    error: str | None = None

    @property
    def text(self) -> str:
        return self.output if self.error is None else f"Error: {self.error}"


def parse_arguments(text: str) -> dict[str, Any] | str:
    """The model's arguments as an object, or the raw text when they are not one."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_value(value: Any, secrets: list[str]) -> Any:
    """`value` (JSON-like) with every secret replaced."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {key: redact_value(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_value(item, secrets) for item in value]
    return value


def output_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    return json.dumps(result, ensure_ascii=False, default=str)


async def run_tool(
    tool: Tool | None,
    *,
    name: str,
    arguments: dict[str, Any] | str,
    context: ToolContext,
    timeout: float | None,
    secrets: list[str],
) -> ToolOutcome:
    """Call `tool` (None: the model named a tool the agent does not have)."""
    if tool is None:
        return ToolOutcome(error=f"There is no tool named {name!r} for this agent.")
    if isinstance(arguments, str):
        return ToolOutcome(
            error="The arguments are not a JSON object: " + arguments[:200]
        )
    try:
        if timeout is None:
            result = await tool.call(arguments, context)
        else:
            result = await asyncio.wait_for(tool.call(arguments, context), timeout)
    except TimeoutError:
        return ToolOutcome(error=f"The tool did not finish within {timeout:g} s.")
    except ToolArgumentsError as error:
        return ToolOutcome(error=redact(f"Invalid arguments: {error}", secrets))
    except asyncio.CancelledError:
        raise
    except Exception as error:
        logger.info("tool %s raised %s", name, type(error).__name__)
        message = str(error)[:MAX_ERROR_CHARS] or type(error).__name__
        if not getattr(error, "shown_as_is", False):
            message = f"{type(error).__name__}: {message}"
        return ToolOutcome(error=redact(message, secrets))
    text = redact(output_text(result), secrets)
    size = len(text.encode())
    if size > MAX_OUTPUT_BYTES:
        return ToolOutcome(
            error=f"The tool's output was too large ({size} bytes; at most "
            f"{MAX_OUTPUT_BYTES})."
        )
    return ToolOutcome(output=text)
