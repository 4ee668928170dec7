"""A thread as one client sees it, kept by the five resume rules of
docs/protocol.md ("Resume: nothing lost, nothing doubled"), implemented here
and nowhere else:

1. On `snapshot`/`resynced`: replace the view with `messages` and `runs`; set
   `last_event_id` from it.
2. Ignore any event with `event_id` <= `last_event_id`; otherwise apply it and
   store its id.
3. `message`: ignore it if its `id` is known.
4. `response`: append when `stream_index` is the run's next index; ignore a
   lower one; a higher one is a gap: ask for a snapshot (`resume` null).
5. `state_complete`: its `text` is the whole reply; replace what was built.

`ThreadView.apply(frame)` does no I/O: it returns the events the frame means
(events.py), so the same code serves the socket client and the property tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from parley_client.events import (
    Connected,
    ErrorReceived,
    InputRequested,
    Message,
    MessagePosted,
    ResyncNeeded,
    RunCompleted,
    RunStatusChanged,
    StateChanged,
    StatusChanged,
    Synced,
    TextDelta,
    TextReset,
    ViewEvent,
)
from parley_client.frames import Frame

RUN_STATUSES = frozenset({"queued", "running", "cancelling"})


@dataclass(slots=True)
class RunView:
    """A run's reply as built so far."""

    run_id: str
    text: str = ""
    # None after a gap, until the snapshot that was asked for arrives.
    next_stream_index: int | None = 0
    status: str = "queued"
    done: bool = False
    error: Mapping[str, Any] | None = None
    open_inputs: dict[str, InputRequested] = field(default_factory=dict)


def _text_change(run_id: str, old: str, new: str) -> list[ViewEvent]:
    if new == old:
        return []
    if new.startswith(old):
        return [TextDelta(run_id, new[len(old) :])]
    return [TextReset(run_id, new)]


def _input_from(run_id: str, content: Mapping[str, Any]) -> InputRequested:
    timeout = content.get("timeout", content.get("seconds_left"))
    return InputRequested(
        run_id=run_id,
        input_id=str(content.get("input_id", "")),
        question=str(content.get("question", "")),
        kind=str(content.get("kind", "question")),
        timeout=float(timeout) if isinstance(timeout, int | float) else None,
        content=dict(content),
    )


class ThreadView:
    """Messages, runs and `last_event_id` of one thread, after the rules."""

    def __init__(self, last_event_id: int | None = None) -> None:
        self.last_event_id = last_event_id
        self.messages: dict[str, Message] = {}
        self.runs: dict[str, RunView] = {}
        self.presence: list[Mapping[str, Any]] = []
        self.role: str | None = None
        self.user: str | None = None
        self.resync_requested = False
        self.synced_once = last_event_id is not None

    # --- rules -----------------------------------------------------------------
    def apply(self, frame: Frame) -> list[ViewEvent]:
        """Apply one server frame; the events it means, in order."""
        if frame.type == "status" and frame.state in ("snapshot", "resynced"):
            return self._apply_snapshot(frame)
        if frame.event_id is not None:
            if self.last_event_id is not None and frame.event_id <= self.last_event_id:
                return []  # rule 2: already applied
            self.last_event_id = frame.event_id
        handler = _HANDLERS.get(frame.type)
        return handler(self, frame) if handler else []

    def _apply_snapshot(self, frame: Frame) -> list[ViewEvent]:  # rule 1
        content = frame.content
        initial = not self.synced_once
        self.synced_once = True
        self.resync_requested = False
        self.last_event_id = int(content.get("last_event_id") or 0)
        if "presence" in content:
            self.presence = list(content.get("presence") or [])
        known_messages = self.messages
        old_runs = self.runs
        events: list[ViewEvent] = []
        self.messages = {}
        self.runs = {}
        snapshot_messages = [
            Message.from_content(m) for m in content.get("messages", [])
        ]
        for message in snapshot_messages:
            self.messages[message.id] = message
        for message in snapshot_messages:
            if message.role != "assistant" or message.run_id is None:
                if not initial and message.id not in known_messages:
                    events.append(MessagePosted(message))
                continue
            old = old_runs.get(message.run_id)
            self.runs[message.run_id] = RunView(
                run_id=message.run_id,
                text=message.text,
                next_stream_index=None,
                status=message.status or "completed",
                done=True,
                error=message.error,
            )
            if initial or (old is not None and old.done):
                continue
            if old is None and message.id in known_messages:
                continue
            events += _text_change(
                message.run_id, old.text if old else "", message.text
            )
            events.append(
                RunCompleted(
                    run_id=message.run_id,
                    text=message.text,
                    status=message.status or "completed",
                    error=message.error,
                    message_id=message.id,
                )
            )
        for run in content.get("runs", []):
            run_id = str(run["run_id"])
            old = old_runs.get(run_id)
            view = RunView(
                run_id=run_id,
                text=str(run.get("text", "")),
                next_stream_index=int(run.get("next_stream_index", 0)),
                status=str(run.get("status", "running")),
            )
            for request in run.get("input_requests", []):
                question = _input_from(run_id, request)
                view.open_inputs[question.input_id] = question
            self.runs[run_id] = view
            if initial:
                continue
            if old is None or old.status != view.status:
                events.append(RunStatusChanged(run_id, view.status))
            events += _text_change(run_id, old.text if old else "", view.text)
            for input_id, question in view.open_inputs.items():
                if old is None or input_id not in old.open_inputs:
                    events.append(question)
        if not initial:
            for run_id, old in old_runs.items():
                if old.done:
                    self.runs.setdefault(run_id, old)
                elif run_id not in self.runs:
                    # Neither running nor among the snapshot's messages: its
                    # outcome cannot be told from here.
                    self.runs[run_id] = RunView(
                        run_id=run_id,
                        text=old.text,
                        next_stream_index=None,
                        status="unknown",
                        done=True,
                    )
                    events.append(
                        RunCompleted(
                            run_id=run_id,
                            text=old.text,
                            status="unknown",
                            error={
                                "code": "run_outcome_unknown",
                                "message": "The run was not in the thread's "
                                "snapshot after a resync.",
                            },
                        )
                    )
        events.insert(
            0,
            Synced(
                last_event_id=self.last_event_id,
                initial=initial,
                messages=tuple(snapshot_messages),
            ),
        )
        return events

    def _run(self, run_id: str) -> RunView:
        run = self.runs.get(run_id)
        if run is None:
            run = self.runs[run_id] = RunView(run_id=run_id)
        return run

    def _on_message(self, frame: Frame) -> list[ViewEvent]:  # rule 3
        message = Message.from_content(frame.content)
        if message.id in self.messages:
            return []
        self.messages[message.id] = message
        if message.run_id:
            self._run(message.run_id)
        return [MessagePosted(message)]

    def _on_response(self, frame: Frame) -> list[ViewEvent]:  # rule 4
        if frame.run_id is None or frame.stream_index is None:
            return []
        run = self._run(frame.run_id)
        if run.done or run.next_stream_index is None:
            return []
        if frame.stream_index < run.next_stream_index:
            return []
        if frame.stream_index > run.next_stream_index:
            expected, run.next_stream_index = run.next_stream_index, None
            if self.resync_requested:
                return []
            self.resync_requested = True
            return [ResyncNeeded(frame.run_id, expected, frame.stream_index)]
        text = str(frame.content)
        run.text += text
        run.next_stream_index += 1
        run.status = "running"
        return [TextDelta(frame.run_id, text)] if text else []

    def _on_state_complete(self, frame: Frame) -> list[ViewEvent]:  # rule 5
        if frame.run_id is None:
            return []
        content = frame.content or {}
        run = self._run(frame.run_id)
        if run.done:
            return []  # a snapshot already had the run's end
        text = str(content.get("text", ""))
        events = _text_change(frame.run_id, run.text, text)
        run.text, run.done, run.next_stream_index = text, True, None
        run.status = str(content.get("status", "completed"))
        run.error = content.get("error")
        run.open_inputs.clear()
        message_id = content.get("message_id")
        if message_id:
            self.messages[str(message_id)] = Message(
                id=str(message_id),
                role="assistant",
                text=text,
                agent=frame.agent,
                run_id=frame.run_id,
                status=run.status,
                error=run.error,
            )
        events.append(
            RunCompleted(
                run_id=frame.run_id,
                text=text,
                status=run.status,
                error=run.error,
                usage=content.get("usage") or {},
                message_id=str(message_id) if message_id else None,
            )
        )
        return events

    def _on_state(self, frame: Frame) -> list[ViewEvent]:
        content = frame.content or {}
        if frame.run_id is None:
            return []
        kind = str(content.get("kind", ""))
        data = content.get("data") or {}
        if kind in ("input_received", "input_timeout"):
            self._run(frame.run_id).open_inputs.pop(str(data.get("input_id")), None)
        return [StateChanged(frame.run_id, kind, data)]

    def _on_input_request(self, frame: Frame) -> list[ViewEvent]:
        if frame.run_id is None:
            return []
        question = _input_from(frame.run_id, frame.content or {})
        self._run(frame.run_id).open_inputs[question.input_id] = question
        return [question]

    def _on_status(self, frame: Frame) -> list[ViewEvent]:
        content = frame.content if isinstance(frame.content, dict) else {}
        state = frame.state or ""
        if state == "connected":
            self.role = content.get("role")
            self.user = content.get("user")
            return [Connected(role=str(self.role), user=str(self.user))]
        if state == "accepted":
            return []
        if state in RUN_STATUSES and content.get("run_id"):
            run = self._run(str(content["run_id"]))
            if not run.done:
                run.status = state
            return [RunStatusChanged(run.run_id, state, content.get("position"))]
        if state == "presence":
            self.presence = list(content.get("users") or [])
        elif state == "role_changed":
            self.role = content.get("role")
        elif state == "reset":
            self.messages = {}
        return [StatusChanged(state, content)]

    def _on_error(self, frame: Frame) -> list[ViewEvent]:
        if frame.request_id is not None:
            return []  # the reply to a request: the request gets it
        content = frame.content if isinstance(frame.content, dict) else {}
        return [
            ErrorReceived(
                code=str(content.get("code", "")),
                message=str(content.get("message", "")),
                run_id=frame.run_id,
            )
        ]

    # --- reading ---------------------------------------------------------------
    def text_of(self, run_id: str) -> str:
        run = self.runs.get(run_id)
        return run.text if run else ""

    def open_inputs(self) -> list[InputRequested]:
        """Questions open now, oldest run first."""
        return [q for run in self.runs.values() for q in run.open_inputs.values()]


_HANDLERS: dict[str, Callable[[ThreadView, Frame], list[ViewEvent]]] = {
    "message": ThreadView._on_message,
    "response": ThreadView._on_response,
    "state_complete": ThreadView._on_state_complete,
    "state": ThreadView._on_state,
    "input_request": ThreadView._on_input_request,
    "status": ThreadView._on_status,
    "error": ThreadView._on_error,
}
