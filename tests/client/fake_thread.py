"""A thread's event log as Parley keeps it, and a loopback WebSocket server that
serves it the way docs/protocol.md says a Parley web process does: `connected`,
then a replay after `?last_event_id=N` (or a snapshot), then the live stream;
`resume` null answered with a `resynced` snapshot; `ping` with `pong`.

The server misbehaves on purpose where a real deployment may: it cuts
connections (the network, a killed daphne), forgets its log (a Redis restart:
the next connection gets `resynced`), repeats events the client already has,
and drops a chunk (a gap the client must notice). The property tests in
test_resume.py drive it with random plans; everything sent is a frame the
server's own models (realtime/protocol.py) accept.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import websockets
from websockets.asyncio.server import ServerConnection

from realtime.protocol import parse_server_frame

TIMESTAMP = "2026-12-03T07:00:00.000000Z"


def envelope(thread_id: str, **fields) -> dict:
    frame = {
        "content": None,
        "thread_id": thread_id,
        "run_id": None,
        "stream_index": None,
        "event_id": None,
        "request_id": None,
        "timestamp": TIMESTAMP,
    }
    frame.update(fields)
    return frame


@dataclass
class ThreadLog:
    """One run's events, ids 1..n: the user message, queued, running, the
    chunks, a usage state, state_complete."""

    chunks: list[str]
    thread_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    reply_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        t, r = self.thread_id, self.run_id
        events = [
            envelope(
                t,
                type="message",
                run_id=r,
                content={
                    "id": self.message_id,
                    "role": "user",
                    "text": self.prompt,
                    "author": {"username": "owner"},
                    "agent": None,
                    "run_id": r,
                    "status": None,
                    "error": None,
                    "created_at": TIMESTAMP,
                },
            ),
            envelope(
                t,
                type="status",
                run_id=r,
                content={"state": "queued", "run_id": r, "position": 0},
            ),
            envelope(
                t, type="status", run_id=r, content={"state": "running", "run_id": r}
            ),
        ]
        for index, chunk in enumerate(self.chunks):
            events.append(
                envelope(
                    t, type="response", run_id=r, stream_index=index, content=chunk
                )
            )
        events.append(
            envelope(
                t,
                type="state",
                run_id=r,
                content={"kind": "usage", "data": {"output_tokens": len(self.chunks)}},
            )
        )
        events.append(
            envelope(
                t,
                type="state_complete",
                run_id=r,
                content={
                    "text": self.reply,
                    "status": "completed",
                    "usage": {},
                    "error": None,
                    "message_id": self.reply_id,
                    "chunks": len(self.chunks),
                },
            )
        )
        for event_id, event in enumerate(events, start=1):
            event["event_id"] = event_id
        self.events = events

    @property
    def prompt(self) -> str:
        return "say it"

    @property
    def reply(self) -> str:
        return "".join(self.chunks)

    def snapshot(self, produced: int, state: str = "snapshot", lag: int = 0) -> dict:
        """The thread after its first `produced` events, as a snapshot says it.
        `lag`: the snapshot's `last_event_id` is that many events behind what
        its text holds (a snapshot read while events come in: the events after
        `last_event_id` follow it, and overlap its text)."""
        lag = min(lag, produced)
        messages, runs = [], []
        if produced >= 1:
            messages.append(
                {**self.events[0]["content"], "inputs": []},
            )
        chunks_sent = max(0, min(produced - 3, len(self.chunks)))
        finished = produced >= len(self.events)
        if finished:
            messages.append(
                {
                    "id": self.reply_id,
                    "role": "assistant",
                    "text": self.reply,
                    "author": None,
                    "agent": "echo",
                    "run_id": self.run_id,
                    "status": "completed",
                    "error": None,
                    "created_at": TIMESTAMP,
                    "inputs": [],
                }
            )
        elif produced >= 1:
            runs.append(
                {
                    "run_id": self.run_id,
                    "status": "running" if produced >= 3 else "queued",
                    "text": "".join(self.chunks[:chunks_sent]),
                    "next_stream_index": chunks_sent,
                    "input_requests": [],
                }
            )
        return envelope(
            self.thread_id,
            type="status",
            content={
                "state": state,
                "last_event_id": produced - lag,
                "messages": messages,
                "runs": runs,
                "presence": [],
            },
        )


@dataclass(frozen=True)
class Plan:
    """What the server does on one connection.

    `start`: `replay` (as asked), `resync` (the log was lost: a snapshot),
    `repeat` (replays `repeat` events the client already had, first).
    `cut_after`: live events sent before the connection is cut (None: never).
    `drop`: skip the live event at this position once (a chunk gap).
    `lag`: every snapshot is this many events behind its own text (above)."""

    start: str = "replay"
    repeat: int = 0
    cut_after: int | None = None
    drop: int | None = None
    lag: int = 0


class LoopbackThreadServer:
    """Serves one ThreadLog on 127.0.0.1, connection i following plans[i]
    (the last plan for any further connection)."""

    def __init__(self, log: ThreadLog, plans: list[Plan], *, pace: float = 0.0):
        self.log = log
        self.plans = plans or [Plan()]
        self.pace = pace
        self.produced = 0
        self.connections = 0
        self.resumes_asked = 0
        self.resume_ids: list[int | None] = []
        self.server = None
        self.sent: list[str] = []

    async def __aenter__(self) -> LoopbackThreadServer:
        self.server = await websockets.serve(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _send(self, ws: ServerConnection, frame: dict) -> None:
        text = json.dumps(frame)
        parse_server_frame(text)  # what a real server would send
        self.sent.append(text)
        await ws.send(text)

    async def _send_snapshot(self, ws: ServerConnection, state: str, lag: int) -> None:
        """A snapshot, then the events after its last_event_id (as a web
        process sends the live events it held while reading the snapshot)."""
        snapshot = self.log.snapshot(self.produced, state, lag)
        await self._send(ws, snapshot)
        last = snapshot["content"]["last_event_id"]
        for event in self.log.events[last : self.produced]:
            await self._send(ws, event)

    async def _serve(self, ws: ServerConnection) -> None:
        plan = self.plans[min(self.connections, len(self.plans) - 1)]
        self.connections += 1
        query = parse_qs(urlsplit(ws.request.path).query)
        asked = query.get("last_event_id", [None])[0]
        last_event_id = int(asked) if asked is not None else None
        self.resume_ids.append(last_event_id)
        await self._send(
            ws,
            envelope(
                self.log.thread_id,
                type="status",
                content={"state": "connected", "role": "owner", "user": "owner"},
            ),
        )
        wants_snapshot = asyncio.Event()
        reader = asyncio.ensure_future(self._read(ws, wants_snapshot))
        try:
            if last_event_id is None:
                await self._send_snapshot(ws, "snapshot", plan.lag)
            elif plan.start == "resync" or last_event_id > self.produced:
                await self._send_snapshot(ws, "resynced", plan.lag)
            else:
                start = max(0, last_event_id - plan.repeat)
                for event in self.log.events[start : self.produced]:
                    await self._send(ws, event)
            sent_live = 0
            while True:
                if wants_snapshot.is_set():
                    wants_snapshot.clear()
                    await self._send_snapshot(ws, "resynced", plan.lag)
                if reader.done():
                    return  # the client went away
                if self.produced >= len(self.log.events):
                    await asyncio.sleep(0.01)
                    continue
                if plan.cut_after is not None and sent_live >= plan.cut_after:
                    ws.transport.abort()  # the network is gone: no close frame
                    return
                event = self.log.events[self.produced]
                self.produced += 1
                if plan.drop is not None and sent_live == plan.drop:
                    plan = Plan(plan.start, plan.repeat, plan.cut_after, None, plan.lag)
                    if event["type"] == "response":
                        sent_live += 1
                        continue  # a chunk this socket never gets
                await self._send(ws, event)
                sent_live += 1
                await asyncio.sleep(self.pace)
        except websockets.ConnectionClosed:
            return
        finally:
            reader.cancel()

    async def _read(self, ws: ServerConnection, wants_snapshot: asyncio.Event) -> None:
        async for text in ws:
            frame = json.loads(text)
            if frame["type"] == "ping":
                await self._send(
                    ws,
                    envelope(
                        self.log.thread_id,
                        type="pong",
                        request_id=frame.get("request_id"),
                    ),
                )
            elif frame["type"] == "resume":
                self.resumes_asked += 1
                wants_snapshot.set()
