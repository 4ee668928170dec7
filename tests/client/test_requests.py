"""A request whose connection is lost before its reply: the client sends it
again on the new connection, unless the replay shows the server had it, so a
message is posted once (a loopback server cuts the connection right after it
reads the message)."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from parley_client import ParleyClient, RetryPolicy

from tests.client.fake_thread import ThreadLog, envelope


class CutAfterMessage:
    """Connection 1 reads a `message` and dies without replying, having stored
    it (`applied`) or not; later connections replay and answer normally."""

    def __init__(self, *, applied: bool) -> None:
        self.log = ThreadLog(["posted ", "once"])
        self.applied = applied
        self.messages_seen: list[str] = []
        self.connections = 0
        self.stored = False

    async def serve(self, ws) -> None:
        self.connections += 1
        t = self.log.thread_id
        await ws.send(
            json.dumps(
                envelope(
                    t,
                    type="status",
                    content={"state": "connected", "role": "owner", "user": "owner"},
                )
            )
        )
        if "last_event_id" not in ws.request.path:
            await ws.send(json.dumps(self.log.snapshot(0)))
        elif self.stored:
            await ws.send(json.dumps(self.message_event()))  # the replay
        async for text in ws:
            frame = json.loads(text)
            if frame["type"] == "ping":
                await ws.send(
                    json.dumps(envelope(t, type="pong", request_id=frame["request_id"]))
                )
            elif frame["type"] == "message":
                self.messages_seen.append(frame["request_id"])
                if self.connections == 1:
                    self.stored = self.applied
                    self.request_id = frame["request_id"]
                    ws.transport.abort()
                    return
                self.stored, self.request_id = True, frame["request_id"]
                await ws.send(json.dumps(self.message_event()))

    def message_event(self) -> dict:
        return {**self.log.events[0], "request_id": self.request_id}


@pytest.mark.parametrize("applied", [False, True])
async def test_a_message_cut_off_before_its_reply_is_posted_exactly_once(applied):
    server = CutAfterMessage(applied=applied)
    async with websockets.serve(server.serve, "127.0.0.1", 0) as listening:
        port = listening.sockets[0].getsockname()[1]
        async with ParleyClient(
            f"http://127.0.0.1:{port}",
            server.log.thread_id,
            token="t",
            retry=RetryPolicy(initial_delay=0.01, give_up_after=10),
        ) as client:
            reply = await asyncio.wait_for(client.post("say it"), 10)

    assert reply.run_id == server.log.run_id
    assert client.reconnects == 1
    # Stored before the cut: the replay answered it. Not stored: sent again,
    # with the same request_id.
    expected = 1 if applied else 2
    assert len(server.messages_seen) == expected
    assert len(set(server.messages_seen)) == 1
