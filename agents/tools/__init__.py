"""Tools agents may call: one registry for Python functions and MCP servers.

`@tool` registers a Python function (agents/tools/registry.py); Parley's own
are in agents/tools/builtin.py; agents/tools/runner.py runs a model's calls
with timeouts and bounds; agents/tools/mcp.py brings in MCP servers' tools.
"""

from agents.tools.registry import (
    Tool,
    ToolArgumentsError,
    ToolContext,
    get_tool,
    make_tool,
    tool,
    tool_names,
    unregister,
)

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
