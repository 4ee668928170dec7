"""What a thread tells its clients, after the resume rules: the events a
`ParleyClient` hands to `events()`, `ask()` and `follow()`.

They are derived from frames by `ThreadView` (view.py), so a chunk that came
twice across a reconnect is one `TextDelta`, and a reply caught up from a
snapshot is the `TextDelta` of what was missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from parley_client.frames import Frame


@dataclass(frozen=True, slots=True)
class Message:
    """A message of the thread (a user's, or an agent's finished reply)."""

    id: str
    role: str  # "user" or "assistant"
    text: str
    author: str | None = None  # the username of a user message
    agent: str | None = None
    run_id: str | None = None
    status: str | None = None  # how an assistant reply's run ended
    error: Mapping[str, Any] | None = None
    created_at: str | None = None

    @classmethod
    def from_content(cls, content: Mapping[str, Any]) -> Message:
        author = content.get("author")
        return cls(
            id=str(content["id"]),
            role=str(content.get("role", "user")),
            text=str(content.get("text", "")),
            author=author.get("username") if isinstance(author, dict) else None,
            agent=content.get("agent"),
            run_id=content.get("run_id"),
            status=content.get("status"),
            error=content.get("error"),
            created_at=content.get("created_at"),
        )


@dataclass(frozen=True, slots=True)
class Connected:
    """The socket is open: who you are in this thread."""

    role: str
    user: str


@dataclass(frozen=True, slots=True)
class Synced:
    """The view was replaced from a snapshot (`initial` on the first connect,
    else a `resynced`: the log could not replay what was missed)."""

    last_event_id: int
    initial: bool
    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class MessagePosted:
    """A user message entered the thread (anyone's, yours too)."""

    message: Message

    @property
    def run_id(self) -> str | None:
        return self.message.run_id


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New reply text of a run, to append to what came before."""

    run_id: str
    text: str


@dataclass(frozen=True, slots=True)
class TextReset:
    """A run's text so far, replacing what was shown (a snapshot or the final
    text disagreed with what had been built; rare)."""

    run_id: str
    text: str


@dataclass(frozen=True, slots=True)
class RunStatusChanged:
    """`queued` (with `position`: runs ahead), `running`, `cancelling`."""

    run_id: str
    status: str
    position: int | None = None


@dataclass(frozen=True, slots=True)
class StateChanged:
    """A `state` frame: `usage`, `tool_call`, `tool_result`, `waiting_for_input`,
    `input_received`, `input_timeout`, ... with its data."""

    run_id: str
    kind: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class InputRequested:
    """The agent asks the thread a question (`kind` `question`) or for an
    approval (`kind` `approval`); answer with `ParleyClient.answer`/`approve`."""

    run_id: str
    input_id: str
    question: str
    kind: str = "question"
    timeout: float | None = None
    content: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunCompleted:
    """The run ended: `text` is the whole reply; `status` is `completed`,
    `cancelled` or `failed` (`error` says why), or `unknown` when the run was
    gone from a snapshot without an outcome."""

    run_id: str
    text: str
    status: str
    error: Mapping[str, Any] | None = None
    usage: Mapping[str, Any] = field(default_factory=dict)
    message_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "completed"


@dataclass(frozen=True, slots=True)
class ErrorReceived:
    """An `error` frame that answers no request of yours (a failed run's
    error, with `run_id`, or one sent before the server closes the socket)."""

    code: str
    message: str
    run_id: str | None = None


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """Any other `status`: `presence`, `role_changed`, `thread_updated`,
    `reset`, `deleted`, `notice`, ... with its content."""

    state: str
    content: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ResyncNeeded:
    """Rule 4 found a gap in a run's chunks; the client asks for a snapshot.
    Internal: the connection acts on it and does not pass it on."""

    run_id: str
    expected: int
    got: int


Event = (
    Connected
    | Synced
    | MessagePosted
    | TextDelta
    | TextReset
    | RunStatusChanged
    | StateChanged
    | InputRequested
    | RunCompleted
    | ErrorReceived
    | StatusChanged
)


# What ThreadView.apply returns: the events, and its internal request.
ViewEvent = Event | ResyncNeeded


def frame_summary(frame: Frame) -> str:
    """A short description of a frame, for logs."""
    return f"{frame.type}#{frame.event_id}" if frame.event_id else frame.type
