"""A real MCP server on loopback, written with the `mcp` SDK's server side
(MCPServer over Streamable HTTP, served by uvicorn in a background thread).

    with FakeMCPServer() as server:
        ...  # an agent's mcp_servers: [{"name": "math", "url": server.url}]
        server.stop()  # the server goes away mid-run

Tools: `add(a, b)`, `shout(text)`, `whoami()` (the Authorization header the
request carried, to check secrets from the environment arrive).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Self

import uvicorn
from mcp.server.mcpserver import Context, MCPServer


def build_server() -> MCPServer:
    server = MCPServer("parley-test-mcp")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def shout(text: str) -> str:
        """The text in capitals."""
        return text.upper()

    @server.tool()
    def whoami(ctx: Context) -> str:
        """The Authorization header of the request."""
        request = ctx.request_context.request
        return request.headers.get("authorization", "(none)") if request else "(none)"

    return server


class FakeMCPServer:
    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        app = build_server().streamable_http_app()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the MCP server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
