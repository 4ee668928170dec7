"""Following one run of a thread through the event log, as an SSE stream does
(chat/sse.py): subscribe, replay what the log has after the point read before
the message was posted, then live events, each once and in order
(realtime.eventlog.EventCursor). What it yields is the run's text as it grows and
how the run ended, with its tool steps and questions beside the text (for the
AG-UI and AI SDK endpoints; the OpenAI one passes them over); everything else on
the thread is passed over.

When the log cannot give every event (it lost them, or this process's
subscription dropped), the run's text so far comes from the log's thread state
and, once the run has ended, from the database: the text given is never
doubled, and a reply that ended is always reported with its whole text.

A follower is also a connection to chat/access.py: a caller removed from the
thread, or whose token is revoked, stops receiving the run (`AccessLost`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from chat.access import QueuedConnection, live_access
from compat.selectors import run_outcome
from realtime.eventlog import Event, EventCursor, get_event_log
from realtime.events import call_service
from realtime.layers import join_thread, leave_thread


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCall:
    """A tool call the model made (`state` `tool_call`), before it runs."""

    id: str
    name: str
    arguments: dict | str


@dataclass(frozen=True)
class ToolResult:
    """What a tool call gave back (`state` `tool_result`): `output` or `error`."""

    id: str
    name: str
    output: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class InputRequest:
    """A question or approval the run asks the thread (`input_request`)."""

    content: dict


@dataclass(frozen=True)
class Heartbeat:
    pass


@dataclass(frozen=True)
class Ended:
    status: str  # completed | cancelled | failed
    text: str
    usage: dict = field(default_factory=dict)
    error_code: str = ""
    error: str = ""


@dataclass(frozen=True)
class AccessLost:
    code: str
    message: str


Update = (
    TextDelta | ToolCall | ToolResult | InputRequest | Heartbeat | Ended | AccessLost
)


class RunFollower(QueuedConnection):
    """One run of a thread followed for an HTTP answer: its events from the
    event log (replayed, or rebuilt where the log lost them) and the caller's
    access to the thread (chat/access.py)."""

    def __init__(
        self, *, thread_id: str, run_id: str, user, token_key: str | None, role
    ) -> None:
        super().__init__(thread_id=thread_id, user=user, token_key=token_key, role=role)
        self.run_id = run_id
        self.cursor = EventCursor()
        self.text = ""  # the run's text given so far
        self.opened = False

    async def access_lost(self, close_code: int, code, message: str) -> None:
        self.held = None
        self.queue.put_nowait(("closed", getattr(code, "value", str(code)), message))

    async def role_changed(self, role) -> None:
        self.role = role  # a reader still follows the run it started

    # --- life ------------------------------------------------------------------
    async def open(self, *, read_at_generation: int) -> None:
        live_access().add(self, read_at_generation=read_at_generation)
        self.opened = True
        await join_thread(self.thread_id, self)

    async def close(self) -> None:
        if self.opened:
            self.opened = False
            live_access().remove(self)
            await leave_thread(self.thread_id, self)

    async def updates(
        self, *, after: int, heartbeat: float | None = None
    ) -> AsyncIterator[Update]:
        """The run's updates, ending with `Ended` or `AccessLost`; `after` is
        the thread's last event id read before the message was posted."""
        log = get_event_log()
        replay = await self.cursor.missed(log, self.thread_id, after)
        if replay is None:
            for update in await self._resync():
                yield update
                if isinstance(update, Ended):
                    return
        else:
            for update in self._apply_all(replay):
                yield update
                if isinstance(update, Ended):
                    return
        while True:
            try:
                item = await asyncio.wait_for(self.queue.get(), heartbeat)
            except TimeoutError:
                yield Heartbeat()
                continue
            if item[0] == "closed":
                yield AccessLost(code=item[1], message=item[2])
                return
            event = item[1] if item[0] == "event" else None
            place = self.cursor.place(event) if event else EventCursor.GAP
            if place == EventCursor.SEEN:
                continue
            if place == EventCursor.NEXT:
                updates = self._apply_all([event])
            else:  # a gap, or lost continuity: fill it from the log if it can
                missed = await log.read_after(self.thread_id, self.cursor.last_event_id)
                if missed is None:
                    updates = await self._resync()
                else:
                    updates = self._apply_all(missed)
            for update in updates:
                yield update
                if isinstance(update, Ended):
                    return

    def _apply_all(self, events: list[Event]) -> list[Update]:
        updates: list[Update] = []
        for event in events:
            if self.cursor.place(event) != EventCursor.NEXT:
                continue
            self.cursor.sent(event)
            if event.run_id != self.run_id:
                continue
            if event.type == "response":
                piece = json.loads(event.text)["content"]
                self.text += piece
                updates.append(TextDelta(piece))
            elif event.type == "state":
                updates += _tool_step(json.loads(event.text)["content"])
            elif event.type == "input_request":
                updates.append(InputRequest(json.loads(event.text)["content"]))
            elif event.type == "state_complete":
                content = json.loads(event.text)["content"]
                error = content.get("error") or {}
                updates += self._ended(
                    Ended(
                        status=content["status"],
                        text=content["text"],
                        usage=content.get("usage") or {},
                        error_code=error.get("code", ""),
                        # a cancelled run: why, as whoever stopped it said
                        error=error.get("message") or content.get("reason") or "",
                    )
                )
                break
        return updates

    def _rest_of(self, text: str) -> list[Update]:
        """What `text` (the run's text by now) adds to what was given."""
        if text.startswith(self.text) and len(text) > len(self.text):
            piece, self.text = text[len(self.text) :], text
            return [TextDelta(piece)]
        return []

    def _ended(self, ended: Ended) -> list[Update]:
        return [*self._rest_of(ended.text), ended]

    async def _resync(self) -> list[Update]:
        """Events were lost: the text so far from the log's state (the run in
        flight), or the outcome from the database (the run ended)."""
        state = await get_event_log().thread_state(self.thread_id)
        self.cursor.last_event_id = state.last_event_id
        updates: list[Update] = []
        progress = state.runs.get(self.run_id)
        if progress is not None:
            updates += self._rest_of(progress.text)
        outcome = await call_service(run_outcome, run_id=self.run_id)
        if outcome is not None:
            updates += self._ended(
                Ended(
                    status=outcome.status,
                    text=outcome.text,
                    usage=outcome.usage,
                    error_code=outcome.error_code,
                    error=outcome.error,
                )
            )
        return updates


def _tool_step(content: dict) -> list[Update]:
    """A `state` frame's tool call or result; other kinds are passed over."""
    data = content.get("data") or {}
    if content.get("kind") == "tool_call":
        return [ToolCall(id=data["id"], name=data["name"], arguments=data["arguments"])]
    if content.get("kind") == "tool_result":
        return [
            ToolResult(
                id=data["id"],
                name=data["name"],
                output=data.get("output"),
                error=data.get("error"),
            )
        ]
    return []
