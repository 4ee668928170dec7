"""MCP servers as tool sources, through the official `mcp` SDK (client side).

An agent's `mcp_servers` lists servers:

    [{"name": "files", "url": "http://127.0.0.1:9000/mcp",
      "headers_env": {"Authorization": "FILES_MCP_AUTHORIZATION"}}]

Streamable HTTP by `url`; stdio by `command` (with `args`, `env`) only where
the setting PARLEY_MCP_ALLOW_STDIO is on, since it starts processes on the
worker. Header values (and stdio `env` values) come from the environment
variables the config names, read when the run starts; they are never stored
and are kept out of tool results.

At the start of a run that has servers, each server's tools are listed (one
connection each, at once, bounded by MCP_CONNECT_TIMEOUT_SECONDS) and those the
agent's `tools` names (`<server>.<tool>`, or `<server>.*` for all) are offered
to the model. A server that cannot be reached then fails the run with
`tool_unavailable`. A call opens its own connection, bounded by the agent's
`tool_timeout_seconds`; a server gone by then is an error result for that call
(the model may retry), never a hang.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx2
from django.conf import settings

from agents.errors import AgentErrorCode
from agents.providers.base import ProviderError
from agents.tools.registry import Tool

MCP_CONNECT_TIMEOUT_SECONDS = 10.0


class ToolUnavailable(Exception):
    """An MCP server could not be reached or answered with a failure."""

    shown_as_is = True  # the model reads the message without the class name


def _secrets_from_env(mapping: dict[str, str], server: str) -> dict[str, str]:
    values = {}
    for key, variable in (mapping or {}).items():
        value = os.environ.get(variable)
        if value is None:
            raise ToolUnavailable(
                f"MCP server {server!r}: the environment variable {variable} is not "
                "set for the worker."
            )
        values[key] = value
    return values


class MCPServerConfig:
    """One entry of an agent's `mcp_servers`, with its secrets from the env."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.name: str = entry["name"]
        self.url: str | None = entry.get("url")
        self.command: str | None = entry.get("command")
        self.args: list[str] = list(entry.get("args") or [])
        self.headers = _secrets_from_env(entry.get("headers_env") or {}, self.name)
        self.env = _secrets_from_env(entry.get("env") or {}, self.name)

    @property
    def secrets(self) -> list[str]:
        return [
            value for value in (*self.headers.values(), *self.env.values()) if value
        ]

    def client(self, timeout: float):
        from mcp import Client, StdioServerParameters
        from mcp.client.streamable_http import streamable_http_client

        if self.command is not None:
            if not settings.PARLEY_MCP_ALLOW_STDIO:
                raise ToolUnavailable(
                    f"MCP server {self.name!r}: stdio servers are not allowed here "
                    "(PARLEY_MCP_ALLOW_STDIO)."
                )
            return Client(
                StdioServerParameters(
                    command=self.command, args=self.args, env=self.env or None
                ),
                read_timeout_seconds=timeout,
            )
        http_client = httpx2.AsyncClient(
            headers=self.headers,
            timeout=httpx2.Timeout(timeout, connect=min(timeout, 5.0)),
        )
        return _ClosingClient(
            Client(
                streamable_http_client(self.url, http_client=http_client),
                read_timeout_seconds=timeout,
            ),
            http_client,
        )


class _ClosingClient:
    """An MCP client that closes the HTTP client it was given when it ends."""

    def __init__(self, client, http_client: httpx2.AsyncClient) -> None:
        self._client = client
        self._http_client = http_client

    async def __aenter__(self):
        try:
            return await self._client.__aenter__()
        except BaseException:
            await self._http_client.aclose()
            raise

    async def __aexit__(self, *exc_info) -> None:
        try:
            await self._client.__aexit__(*exc_info)
        finally:
            await self._http_client.aclose()


def _wanted(server: str, tool_name: str, names: set[str]) -> bool:
    return f"{server}.{tool_name}" in names or f"{server}.*" in names


async def _list_tools(server: MCPServerConfig, timeout: float) -> list[Any]:
    async with server.client(timeout) as client:
        listed, cursor = [], None
        while True:
            page = await client.list_tools(cursor=cursor)
            listed += page.tools
            cursor = page.next_cursor
            if not cursor:
                return listed


def _result_text(result: Any) -> str:
    texts = [
        block.text
        for block in result.content or []
        if getattr(block, "type", None) == "text"
    ]
    if texts:
        return "\n".join(texts)
    if result.structured_content is not None:
        import json

        return json.dumps(result.structured_content, ensure_ascii=False)
    return ""


def _make_mcp_tool(server: MCPServerConfig, listed: Any, timeout: float) -> Tool:
    async def call(arguments: dict[str, Any]) -> str:
        try:
            async with server.client(timeout) as client:
                result = await client.call_tool(listed.name, arguments)
        except ToolUnavailable:
            raise
        except Exception as error:  # the server went away, refused, broke
            raise ToolUnavailable(
                f"{AgentErrorCode.TOOL_UNAVAILABLE.value}: the MCP server "
                f"{server.name!r} failed ({type(error).__name__})."
            ) from None
        text = _result_text(result)
        if result.is_error:
            raise ToolUnavailable(text or "The MCP tool reported an error.")
        return text

    schema = dict(listed.input_schema or {"type": "object", "properties": {}})
    return Tool(
        name=f"{server.name}.{listed.name}",
        description=listed.description or listed.name,
        parameters=schema,
        function=call,
        arguments_model=None,
        source="mcp",
        extra={"secrets": server.secrets},
    )


async def mcp_tools_for(agent) -> dict[str, Tool]:
    """`<server>.<tool>` -> Tool for the MCP tools the agent may call; a server
    that cannot be listed raises ProviderError `tool_unavailable`."""
    names = set(agent.tools or [])
    timeout = float(agent.tool_timeout_seconds)
    try:
        servers = [MCPServerConfig(entry) for entry in agent.mcp_servers or []]
    except ToolUnavailable as error:
        raise ProviderError(AgentErrorCode.TOOL_UNAVAILABLE, str(error)) from None
    servers = [
        server
        for server in servers
        if any(name.split(".", 1)[0] == server.name for name in names)
    ]

    async def listed(server: MCPServerConfig) -> list[Any]:
        try:
            return await asyncio.wait_for(
                _list_tools(server, timeout), MCP_CONNECT_TIMEOUT_SECONDS
            )
        except ToolUnavailable as error:
            raise ProviderError(AgentErrorCode.TOOL_UNAVAILABLE, str(error)) from None
        except Exception as error:
            raise ProviderError(
                AgentErrorCode.TOOL_UNAVAILABLE,
                f"The MCP server {server.name!r} could not be reached "
                f"({type(error).__name__}); check its URL and that it runs.",
            ) from None

    listings = await asyncio.gather(*(listed(server) for server in servers))
    tools: dict[str, Tool] = {}
    for server, listing in zip(servers, listings, strict=True):
        for item in listing:
            if _wanted(server.name, item.name, names):
                made = _make_mcp_tool(server, item, timeout)
                tools[made.name] = made
    return tools


async def mcp_server_problems(
    agent, *, timeout: float = MCP_CONNECT_TIMEOUT_SECONDS
) -> list[str]:
    """For the admin: the agent's servers that cannot be listed now, and the
    tools it names that its servers do not have (all servers at once)."""
    names = set(agent.tools or [])

    async def problems_of(entry: dict) -> list[str]:
        try:
            server = MCPServerConfig(entry)
            listing = await asyncio.wait_for(_list_tools(server, timeout), timeout)
        except Exception as error:
            detail = (
                str(error)
                if isinstance(error, ToolUnavailable)
                else type(error).__name__
            )
            return [f"MCP server {entry.get('name')!r} is unreachable: {detail}"]
        offered = {item.name for item in listing}
        return [
            f"MCP server {server.name!r} has no tool {name.split('.', 1)[1]!r}."
            for name in sorted(names)
            if name.startswith(f"{server.name}.")
            and not name.endswith(".*")
            and name.split(".", 1)[1] not in offered
        ]

    found = await asyncio.gather(
        *(problems_of(entry) for entry in agent.mcp_servers or [])
    )
    return [problem for problems in found for problem in problems]
