"""Resuming WebSocket clients and the steady streaming load they carry.

``ChaosSocket`` is one client (the ``websockets`` library) that follows
docs/protocol.md: it reconnects by itself with ``?last_event_id=N`` (to its home
daphne, else the other one), asks for a snapshot on a chunk gap, and feeds
every frame to a ``ThreadView`` (chaos/ledger.py). Each connection is recorded
(when it was asked for, when ``connected`` came, whether it was resynced, how it
closed), so scenarios can time recoveries. ``drop`` cuts the TCP connection
without a close handshake and keeps the client away for a while: a random
disconnect.

``Load`` keeps ``threads`` threads streaming back to back: each thread has an
owner socket and an observer socket on different daphnes; the owner sends a
numbered prompt (``t0 t1 ...``) with a ``client_id`` and resends it with the same
id until the ``message`` event names its run (so a message lost to a fault is
neither lost nor doubled), waits for the run's end, pauses a little, repeats.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass, field

import websockets
from websockets.asyncio.client import connect

from chaos.ledger import ThreadView, numbered_prompt

RESUME_NULL = {"type": "resume", "content": {"last_event_id": None}}


def now() -> float:
    return time.monotonic()


@dataclass
class Connection:
    asked_at: float
    port: int
    connected_at: float | None = None
    resynced: bool = False
    snapshot: bool = False
    closed_at: float | None = None
    close_code: int | None = None
    dropped: bool = False  # cut by the harness
    # thread events published while away: the newest event id any socket of
    # the thread had seen when this one connected, minus its own last one
    missed: int | None = None
    catch_up_to: int = 0
    caught_up_at: float | None = None  # the last of those applied


class ChaosSocket:
    def __init__(
        self, name: str, thread_id: str, token: str, ports: list[int], home: int
    ) -> None:
        self.name, self.thread_id, self.token = name, thread_id, token
        self.ports, self.home = ports, home
        self.thread_latest = [0]  # shared by the thread's sockets (Load)
        self.view = ThreadView()
        self.connections: list[Connection] = []
        self.failed_connects = 0
        self.ws = None
        self.up = asyncio.Event()
        self.stopping = False
        self.away_until = 0.0
        self.pending_resync = False
        self.acks: dict[str, str] = {}  # client_id -> run_id
        self.task: asyncio.Task | None = None

    @property
    def current(self) -> Connection | None:
        return self.connections[-1] if self.connections else None

    @property
    def port(self) -> int | None:
        live = self.current
        return live.port if live and live.closed_at is None else None

    def url(self, port: int) -> str:
        url = f"ws://127.0.0.1:{port}/ws/threads/{self.thread_id}/"
        if self.view.last_event_id is not None:
            url += f"?last_event_id={self.view.last_event_id}"
        return url

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        attempt = 0
        while not self.stopping:
            wait = self.away_until - now()
            if wait > 0:
                await asyncio.sleep(wait)
            port = self.ports[(self.home + attempt) % len(self.ports)]
            record = Connection(asked_at=now(), port=port)
            try:
                ws = await connect(
                    self.url(port),
                    additional_headers={"Authorization": f"Token {self.token}"},
                    open_timeout=10,
                    max_size=None,
                    ping_interval=None,
                )
            except (OSError, TimeoutError, websockets.WebSocketException):
                self.failed_connects += 1
                attempt += 1
                await asyncio.sleep(min(2.0, 0.05 * 2 ** min(attempt, 6)))
                continue
            attempt = 0
            self.connections.append(record)
            self.ws = ws
            try:
                async for text in ws:
                    self.receive(record, json.loads(text))
                    if self.pending_resync:
                        self.pending_resync = False
                        await ws.send(json.dumps(RESUME_NULL))
            except websockets.ConnectionClosed:
                pass
            finally:
                self.ws = None
                self.up.clear()
                record.closed_at = now()
                record.close_code = ws.close_code
            if not self.stopping:
                # A client's reconnect delay; a drop keeps it away longer.
                await asyncio.sleep(random.uniform(0.05, 0.25))

    def receive(self, record: Connection, frame: dict) -> None:
        received = now()
        content = frame.get("content")
        if frame.get("type") == "status" and isinstance(content, dict):
            state = content.get("state")
            if state == "connected":
                record.connected_at = received
                if self.view.last_event_id is not None:
                    record.catch_up_to = self.thread_latest[0]
                    record.missed = self.thread_latest[0] - self.view.last_event_id
                    if record.missed <= 0:
                        record.caught_up_at = received
                self.up.set()
            elif state == "resynced":
                record.resynced = True
            elif state == "snapshot":
                record.snapshot = True
        if self.view.apply(frame, received) == "resync":
            self.pending_resync = True
        if self.view.last_event_id is not None:
            self.thread_latest[0] = max(self.thread_latest[0], self.view.last_event_id)
            if (
                record.caught_up_at is None
                and record.missed is not None
                and record.connected_at is not None
                and self.view.last_event_id >= record.catch_up_to
            ):
                record.caught_up_at = received
        if frame.get("type") == "message" and isinstance(content, dict):
            # client_id -> run_id, also from the stored message a resend gets
            # back (its event_id null)
            if content.get("client_id") and frame.get("run_id"):
                self.acks[str(content["client_id"])] = frame["run_id"]

    def drop(self, away: float) -> bool:
        """Cut the connection (no close handshake); reconnect after ``away`` s."""
        if self.ws is None or self.current is None:
            return False
        self.current.dropped = True
        self.away_until = now() + away
        self.ws.transport.abort()
        return True

    async def send(self, frame: dict) -> bool:
        ws = self.ws
        if ws is None:
            return False
        try:
            await ws.send(json.dumps(frame))
            return True
        except websockets.ConnectionClosed:
            return False

    async def stop(self) -> None:
        self.stopping = True
        if self.ws is not None:
            await self.ws.close()
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass


@dataclass
class SentRun:
    thread_id: str
    client_id: str
    tokens: int
    sent_at: float
    run_id: str | None = None
    acked_at: float | None = None
    sends: int = 0
    stuck: bool = False


@dataclass
class LoadThread:
    thread_id: str
    sockets: list[ChaosSocket]
    sent: list[SentRun] = field(default_factory=list)

    @property
    def owner(self) -> ChaosSocket:
        return self.sockets[0]


class Load:
    def __init__(
        self,
        stack,
        *,
        threads: int,
        tokens: int,
        pause: float = 0.3,
        stuck_after: float = 60.0,
    ) -> None:
        self.stack, self.thread_count, self.tokens = stack, threads, tokens
        self.pause, self.stuck_after = pause, stuck_after
        self.threads: list[LoadThread] = []
        self.sending = True
        self.tasks: list[asyncio.Task] = []
        self.started_at = now()

    @property
    def sockets(self) -> list[ChaosSocket]:
        return [sock for thread in self.threads for sock in thread.sockets]

    @property
    def runs(self) -> list[SentRun]:
        return [run for thread in self.threads for run in thread.sent]

    async def start(self) -> None:
        from chaos.stack import OWNER, WATCHER

        loop = asyncio.get_running_loop()
        for index in range(self.thread_count):
            thread_id = await loop.run_in_executor(None, self.stack.create_thread)
            ports = self.stack.ports
            sockets = [
                ChaosSocket(
                    f"{index}-owner",
                    thread_id,
                    self.stack.tokens[OWNER],
                    ports,
                    index % len(ports),
                ),
                ChaosSocket(
                    f"{index}-observer",
                    thread_id,
                    self.stack.tokens[WATCHER],
                    ports,
                    (index + 1) % len(ports),
                ),
            ]
            latest = [0]
            for sock in sockets:
                sock.thread_latest = latest
            self.threads.append(LoadThread(thread_id, sockets))
        for sock in self.sockets:
            sock.start()
        for sock in self.sockets:
            await asyncio.wait_for(sock.up.wait(), 30)
        self.started_at = now()
        for thread in self.threads:
            self.tasks.append(loop.create_task(self.drive(thread)))

    async def drive(self, thread: LoadThread) -> None:
        """One message at a time: send (resend until acknowledged), wait for
        its run to end on the owner socket, pause, again."""
        await asyncio.sleep(random.uniform(0, 1.0))  # do not start in lock-step
        owner = thread.owner
        while self.sending:
            run = SentRun(thread.thread_id, str(uuid.uuid4()), self.tokens, now())
            thread.sent.append(run)
            frame = {
                "type": "message",
                "content": numbered_prompt(self.tokens),
                "client_id": run.client_id,
            }
            deadline = run.sent_at + self.stuck_after + self.tokens / 50
            next_send = 0.0
            while True:
                if run.run_id is None:
                    run.run_id = self.acknowledged(owner, run.client_id)
                    if run.run_id:
                        run.acked_at = now()
                if run.run_id is None and now() >= next_send:
                    if await owner.send({**frame, "request_id": run.client_id}):
                        run.sends += 1
                    next_send = now() + 3.0
                view = owner.view.runs.get(run.run_id) if run.run_id else None
                if view is not None and view.done:
                    break
                if now() > deadline:
                    run.stuck = True
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(self.pause * random.uniform(0.5, 1.5))

    @staticmethod
    def acknowledged(owner: ChaosSocket, client_id: str) -> str | None:
        return owner.acks.get(client_id)

    async def drain(self, timeout: float) -> None:
        """Stop sending; wait until every sent run has ended on every socket."""
        self.sending = False
        await asyncio.wait(self.tasks, timeout=timeout)

        def settled() -> bool:
            return all(
                run.stuck
                or run.run_id is None
                or all(
                    sock.view.runs.get(run.run_id) is not None
                    and sock.view.runs[run.run_id].done
                    for sock in thread.sockets
                )
                for thread in self.threads
                for run in thread.sent
            )

        deadline = now() + 20
        while not settled() and now() < deadline:
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        self.sending = False
        for task in self.tasks:
            task.cancel()
        for sock in self.sockets:
            await sock.stop()
