"""Frames on the thread socket: the envelope of docs/protocol.md as a dataclass,
and builders for the frames a client sends.

The client reads frames leniently: envelope fields it does not know (a newer
server's `agent`, say) are kept in `extra`, never an error, so an older client
keeps working against a newer server.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from parley_client.errors import FrameTooLargeError, ProtocolViolation

# PARLEY_MAX_FRAME_BYTES's default: the server closes the socket (1009) on a
# larger frame, so the client refuses to send one.
MAX_FRAME_BYTES = 65_536

_ENVELOPE = (
    "type",
    "content",
    "thread_id",
    "run_id",
    "stream_index",
    "event_id",
    "request_id",
    "timestamp",
)


@dataclass(frozen=True, slots=True)
class Frame:
    """One server frame. `event_id` is set on thread events only."""

    type: str
    content: Any = None
    thread_id: str | None = None
    run_id: str | None = None
    stream_index: int | None = None
    event_id: int | None = None
    request_id: str | None = None
    timestamp: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str | bytes) -> Frame:
        try:
            data = json.loads(text)
        except ValueError as error:
            raise ProtocolViolation(f"a frame is not JSON: {error}") from None
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise ProtocolViolation("a frame is not an object with a type")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Frame:
        known = {name: data.get(name) for name in _ENVELOPE}
        extra = {k: v for k, v in data.items() if k not in _ENVELOPE}
        event_id = known["event_id"]
        stream_index = known["stream_index"]
        return cls(
            type=str(known["type"]),
            content=known["content"],
            thread_id=known["thread_id"],
            run_id=known["run_id"],
            stream_index=stream_index if isinstance(stream_index, int) else None,
            event_id=event_id if isinstance(event_id, int) else None,
            request_id=known["request_id"],
            timestamp=known["timestamp"],
            extra=extra,
        )

    @property
    def state(self) -> str | None:
        """`content.state` of a `status` frame (None for other frames)."""
        if self.type == "status" and isinstance(self.content, dict):
            state = self.content.get("state")
            return state if isinstance(state, str) else None
        return None

    @property
    def agent(self) -> str | None:
        """The agent a run's frame belongs to, where the server names it."""
        value = self.extra.get("agent")
        return value if isinstance(value, str) else None

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _ENVELOPE}
        data.update(self.extra)
        return data


def encode(frame: Mapping[str, Any]) -> str:
    """A client frame as JSON text; FrameTooLargeError past the frame limit."""
    if not isinstance(frame.get("type"), str):
        raise ValueError("a frame needs a string `type`")
    text = json.dumps(dict(frame), ensure_ascii=False)
    size = len(text.encode())
    if size > MAX_FRAME_BYTES:
        raise FrameTooLargeError(
            f"the frame is {size} bytes; the server takes at most {MAX_FRAME_BYTES}"
        )
    return text


def message(text: str, *, client_id: str | None = None) -> dict[str, Any]:
    """A `message` frame with a `client_id` (a new UUID unless given): sent
    again after a lost connection, the server posts it at most once."""
    if not isinstance(text, str) or not text:
        raise ValueError("a message needs some text")
    return {
        "type": "message",
        "content": text,
        "client_id": client_id or str(uuid.uuid4()),
    }


def config(overrides: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "config", "content": dict(overrides)}


def cancel(run_id: str | None = None) -> dict[str, Any]:
    return {"type": "cancel", "content": {"run_id": run_id} if run_id else None}


def answer(run_id: str, text: str, input_id: str | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"run_id": run_id, "text": text}
    if input_id is not None:
        content["input_id"] = input_id
    return {"type": "input", "content": content}


def approval(run_id: str, input_id: str, approve: bool) -> dict[str, Any]:
    return {
        "type": "input",
        "content": {"run_id": run_id, "input_id": input_id, "approve": approve},
    }


def ping() -> dict[str, Any]:
    return {"type": "ping", "content": None}


def resume(last_event_id: int | None) -> dict[str, Any]:
    return {"type": "resume", "content": {"last_event_id": last_event_id}}
