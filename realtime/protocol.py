"""The WebSocket protocol: every frame type as a typed model.

Inbound frames are parsed through one discriminated union (`parse_client_frame`);
outbound frames are built with the `*Frame` models and serialized once
(`frame_json`). docs/protocol.md describes the same frames for client authors.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_serializer,
    model_validator,
)

from realtime.errors import ErrorCode


def utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class ProtocolError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- Client -> server -------------------------------------------------------


class ClientFrame(BaseModel):
    """Envelope fields a client may send; anything undeclared is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str | None = Field(default=None, max_length=128)
    # Accepted so that clients may send the full envelope; the server uses the
    # thread of the socket and its own clock.
    thread_id: UUID | None = None
    run_id: UUID | None = None
    stream_index: int | None = None
    event_id: int | None = None
    timestamp: str | None = None


class MessageIn(ClientFrame):
    type: Literal["message"]
    content: str = Field(min_length=1)
    # Makes a resend idempotent: the same id within a day is the same message.
    client_id: UUID | None = None


class ConfigIn(ClientFrame):
    type: Literal["config"]
    content: dict[str, Any]


class CancelContent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    run_id: UUID | None = None
    # Why: stored with the run, shown in its `state_complete`.
    reason: str | None = Field(default=None, max_length=200)


class CancelIn(ClientFrame):
    type: Literal["cancel"]
    content: CancelContent | None = None


class InputContent(BaseModel):
    """An answer: `text` for a question, `approve` for an approval."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    run_id: UUID
    text: str | None = None
    approve: bool | None = None
    input_id: str | None = None

    @model_validator(mode="after")
    def _text_or_approve(self) -> InputContent:
        if (self.text is None) == (self.approve is None):
            raise ValueError("give text (a question) or approve (an approval)")
        return self


class InputIn(ClientFrame):
    type: Literal["input"]
    content: InputContent


class PingIn(ClientFrame):
    type: Literal["ping"]
    content: None = None


class ResumeContent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    last_event_id: int | None = Field(default=None, ge=0)


class ResumeIn(ClientFrame):
    type: Literal["resume"]
    content: ResumeContent


InboundFrame = Annotated[
    MessageIn | ConfigIn | CancelIn | InputIn | PingIn | ResumeIn,
    Field(discriminator="type"),
]
_inbound_adapter: TypeAdapter[InboundFrame] = TypeAdapter(InboundFrame)
CLIENT_FRAME_TYPES = frozenset(
    {"message", "config", "cancel", "input", "ping", "resume"}
)
# Frames an observer may send: reading, never writing.
OBSERVER_FRAME_TYPES = frozenset({"ping", "resume"})


def parse_client_frame(text: str) -> InboundFrame:
    """Parse one inbound text frame or raise ProtocolError with the error code."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(
            ErrorCode.INVALID_JSON, "The frame is not valid JSON."
        ) from None
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.INVALID_FRAME, "A frame must be a JSON object.")
    frame_type = data.get("type")
    if frame_type not in CLIENT_FRAME_TYPES:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"Unknown frame type {frame_type!r}; expected one of "
            f"{', '.join(sorted(CLIENT_FRAME_TYPES))}.",
        )
    try:
        return _inbound_adapter.validate_python(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:]) or "frame"
        raise ProtocolError(
            ErrorCode.INVALID_FRAME,
            f"Invalid {frame_type} frame: {where}: {first['msg']}.",
        ) from None


def request_id_of(text: str) -> str | None:
    """Best-effort request_id of a frame that failed to parse, to echo back."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    value = data.get("request_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) and len(value) <= 128 else None


# --- Server -> client -------------------------------------------------------


class ServerFrame(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    content: Any = None
    thread_id: UUID | None = None
    run_id: UUID | None = None
    # The name of the agent whose run the frame is about (every frame of a
    # run: status, response, state, input_request, state_complete, error);
    # frames about no run leave it out (`frame_json`, `event_json`).
    agent: str | None = None
    stream_index: int | None = None
    event_id: int | None = None
    request_id: str | None = None
    timestamp: str = Field(default_factory=utc_timestamp)


class Author(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str


class ErrorContent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str
    message: str
    # Facts a client may act on (`budget_exceeded`: used, limit, period).
    details: dict[str, Any] | None = None

    @model_serializer(mode="wrap")
    def _details_when_given(self, handler) -> dict[str, Any]:
        # Errors without details keep their two-field shape.
        data = handler(self)
        if data.get("details") is None:
            data.pop("details", None)
        return data


class MessageContent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: UUID
    role: Literal["user", "assistant"]
    text: str
    author: Author | None = None
    agent: str | None = None
    run_id: UUID | None = None
    status: str | None = None  # for assistant messages: the run's final status
    error: ErrorContent | None = None  # for failed replies: why
    created_at: str
    client_id: UUID | None = None  # user messages: the id the sender chose


class MessageFrame(ServerFrame):
    type: Literal["message"] = "message"
    content: MessageContent


class ResponseFrame(ServerFrame):
    type: Literal["response"] = "response"
    content: str
    run_id: UUID
    stream_index: int


# `state` frames: what a run does besides text, one model per `kind`.


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UsageData(_Strict):
    input_tokens: int | None = None
    output_tokens: int | None = None


class UsageState(_Strict):
    kind: Literal["usage"]
    data: UsageData


class ToolCallData(_Strict):
    """A complete tool call the model made, sent once before it runs:
    `arguments` is the JSON object it gave (its raw text when not an object)."""

    id: str
    name: str
    arguments: dict[str, Any] | str


class ToolCallState(_Strict):
    kind: Literal["tool_call"]
    data: ToolCallData


class ToolResultData(_Strict):
    """What a tool call gave back to the model: `output`, or `error` instead."""

    id: str
    name: str
    output: str | None = None
    error: str | None = None

    @model_validator(mode="after")
    def _output_or_error(self) -> ToolResultData:
        if (self.output is None) == (self.error is None):
            raise ValueError("a tool result has output or error, not both")
        return self

    @model_serializer(mode="wrap")
    def _without_the_other(self, handler) -> dict[str, Any]:
        # `output` or `error`: the one that is not there is left out, not null.
        data = handler(self)
        return {key: value for key, value in data.items() if value is not None}


class ToolResultState(_Strict):
    kind: Literal["tool_result"]
    data: ToolResultData


class WaitingForInputData(_Strict):
    question: str


class WaitingForInputState(_Strict):
    kind: Literal["waiting_for_input"]
    data: WaitingForInputData


class InputReceivedData(_Strict):
    input_id: str
    by: str  # the username of who answered
    answer: str


class InputReceivedState(_Strict):
    kind: Literal["input_received"]
    data: InputReceivedData


class InputTimeoutData(_Strict):
    input_id: str


class InputTimeoutState(_Strict):
    kind: Literal["input_timeout"]
    data: InputTimeoutData


class NoticeData(_Strict):
    code: str  # e.g. tool_slow
    message: str


class NoticeState(_Strict):
    """Something to know while the run goes on (it does not end it)."""

    kind: Literal["notice"]
    data: NoticeData


StateContent = Annotated[
    UsageState
    | NoticeState
    | ToolCallState
    | ToolResultState
    | WaitingForInputState
    | InputReceivedState
    | InputTimeoutState,
    Field(discriminator="kind"),
]
_state_adapter: TypeAdapter[StateContent] = TypeAdapter(StateContent)
STATE_KINDS = frozenset(
    {
        "notice",
        "usage",
        "tool_call",
        "tool_result",
        "waiting_for_input",
        "input_received",
        "input_timeout",
    }
)


def state_content(kind: str, data: dict[str, Any]) -> StateContent:
    """A `state` frame's content from its kind and data; ValueError (pydantic's
    ValidationError) when the kind is unknown or the data does not fit it."""
    return _state_adapter.validate_python({"kind": kind, "data": data})


class StateFrame(ServerFrame):
    type: Literal["state"] = "state"
    content: StateContent
    run_id: UUID


class RunCompleteContent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    status: Literal["completed", "cancelled", "failed"]
    usage: dict[str, Any] = Field(default_factory=dict)
    error: ErrorContent | None = None
    message_id: UUID | None = None
    chunks: int
    reason: str | None = None  # a cancelled run: why, as whoever stopped it said


class StateCompleteFrame(ServerFrame):
    type: Literal["state_complete"] = "state_complete"
    content: RunCompleteContent
    run_id: UUID


# `status` frames: connection and run status, one model per `state`.

Role = Literal["owner", "participant", "observer", "staff"]


class ConnectedStatus(_Strict):
    """The first frame on a socket: who you are here."""

    state: Literal["connected"]
    role: Role
    user: str


class PresenceUser(_Strict):
    username: str
    role: Role
    connections: int


class InputRecord(_Strict):
    """A question a finished run asked, as history and snapshots show it."""

    input_id: str
    kind: str
    question: str
    status: Literal["open", "answered", "timed_out", "cancelled"]
    answer: str | None
    answered_by: Author | None
    asked_at: str
    answered_at: str | None


class ToolStepRecord(_Strict):
    """A tool call a run made and how it ended, as history and snapshots show it."""

    id: str
    name: str
    arguments: dict[str, Any] | str
    status: Literal["pending", "completed", "failed", "denied", "cancelled"]
    output: str | None
    error: str | None
    started_at: str
    finished_at: str | None


class HistoryMessage(MessageContent):
    """A message in a snapshot or the history: with the questions its run
    asked and the tool calls it made."""

    inputs: list[InputRecord] = Field(default_factory=list)
    tool_steps: list[ToolStepRecord] = Field(default_factory=list)


class OpenInputRequest(_Strict):
    input_id: str
    kind: str
    question: str
    timeout: float
    asked_at: str
    expires_at: str
    seconds_left: float
    answerable_by: Literal["writers"]
    tool_call: ToolCallData | None = None  # an approval's pending call


class RunProgress(_Strict):
    """A run not finished yet, in a snapshot: its text so far."""

    run_id: UUID
    status: Literal["queued", "running", "cancelling"]
    agent: str | None = None  # the name of the agent answering
    text: str
    next_stream_index: int
    input_requests: list[OpenInputRequest]
    tool_steps: list[ToolStepRecord] = Field(default_factory=list)


class SnapshotStatus(_Strict):
    """The thread as it is now; `resynced` when a resume could not be replayed."""

    state: Literal["snapshot", "resynced"]
    last_event_id: int
    messages: list[HistoryMessage]
    runs: list[RunProgress]
    presence: list[PresenceUser]


class _Accepted(_Strict):
    state: Literal["accepted"]


class ConfigAccepted(_Accepted):
    request: Literal["config"]
    config: dict[str, Any]  # the thread's overrides now


class CancelAccepted(_Accepted):
    request: Literal["cancel"]
    run_id: UUID


class InputAccepted(_Accepted):
    request: Literal["input"]
    run_id: UUID


class ResumeAccepted(_Accepted):
    request: Literal["resume"]
    last_event_id: int | None


AcceptedStatus = Annotated[
    ConfigAccepted | CancelAccepted | InputAccepted | ResumeAccepted,
    Field(discriminator="request"),
]


class RoleChangedStatus(_Strict):
    state: Literal["role_changed"]
    role: Role


class PresenceStatus(_Strict):
    state: Literal["presence"]
    users: list[PresenceUser]


class QueuedStatus(_Strict):
    """A run waiting for the runs ahead of it in its thread (`position`); or,
    without `run_id`, to the sender alone: its message waits to be stored
    behind `position` others of a burst (docs/protocol.md)."""

    state: Literal["queued"]
    run_id: UUID | None = None
    position: int  # runs (or messages) ahead of it

    @model_serializer(mode="wrap")
    def _run_id_when_there_is_one(self, handler) -> dict[str, Any]:
        data = handler(self)
        if data.get("run_id") is None:
            data.pop("run_id", None)
        return data


class RunningStatus(_Strict):
    state: Literal["running"]
    run_id: UUID


class CancellingStatus(_Strict):
    state: Literal["cancelling"]
    run_id: UUID


class ThreadUpdatedStatus(_Strict):
    state: Literal["thread_updated"]
    title: str
    config: dict[str, Any]
    agent: str  # the thread's agent (a writer may switch it: `agent_name`)
    # The thread's agents, the default (`agent`) first: there when the update
    # changed them, else left out.
    agents: list[str] | None = None

    @model_serializer(mode="wrap")
    def _agents_only_when_changed(self, handler) -> dict[str, Any]:
        data = handler(self)
        if data.get("agents") is None:
            data.pop("agents", None)
        return data


class ResetStatus(_Strict):
    state: Literal["reset"]


class DeletedStatus(_Strict):
    state: Literal["deleted"]


class NoticeStatus(_Strict):
    """A notice for everyone in the thread, from the project's own code
    (`group_send`, docs/protocol.md): the web UI shows it as an alert."""

    state: Literal["notice"]
    text: str = Field(min_length=1, max_length=2000)
    level: Literal["info", "warning"] = "info"


class TeamStatus(_Strict):
    """Who has the floor in a thread's agent team (agents/teams.py): sent when
    a turn is handed on (`speaker` an agent, `run_id` its turn's run; or
    `human`: the people's turn, until `waiting_until`), and once when the
    chain ends (`ended` says why; `speaker` null)."""

    state: Literal["team"]
    policy: Literal["round_robin", "selector", "handoff"]
    turn: (
        int  # the turn the speaker takes (1 = the message's first); at an end, the last
    )
    max_turns: int
    speaker: str | None = None
    ended: (
        Literal[
            "max_turns",
            "termination",
            "cancelled",
            "failed",
            "no_speaker",
            "human_timeout",
        ]
        | None
    ) = None
    text: str  # the line a client shows, e.g. "beta has the floor (turn 2 of 6)"
    waiting_until: str | None = None  # the human seat's deadline (ISO 8601 UTC)


StatusContent = Annotated[
    ConnectedStatus
    | SnapshotStatus
    | AcceptedStatus
    | RoleChangedStatus
    | PresenceStatus
    | QueuedStatus
    | RunningStatus
    | CancellingStatus
    | ThreadUpdatedStatus
    | ResetStatus
    | DeletedStatus
    | NoticeStatus
    | TeamStatus,
    Field(discriminator="state"),
]


class StatusFrame(ServerFrame):
    """Connection and run status; `content.state` says which (docs/protocol.md)."""

    type: Literal["status"] = "status"
    content: StatusContent


class InputRequestContent(BaseModel):
    """A question (`kind` question) or a tool call waiting for a writer's yes
    (`kind` approval, with the pending `tool_call`)."""

    model_config = ConfigDict(extra="forbid")
    input_id: str
    kind: Literal["question", "approval"] = "question"
    question: str
    timeout: float
    tool_call: ToolCallData | None = None


class InputRequestFrame(ServerFrame):
    type: Literal["input_request"] = "input_request"
    content: InputRequestContent
    run_id: UUID


class ErrorFrame(ServerFrame):
    type: Literal["error"] = "error"
    content: ErrorContent


class PongFrame(ServerFrame):
    type: Literal["pong"] = "pong"
    content: None = None


OutboundFrame = Annotated[
    MessageFrame
    | ResponseFrame
    | StateFrame
    | StateCompleteFrame
    | StatusFrame
    | InputRequestFrame
    | ErrorFrame
    | PongFrame,
    Field(discriminator="type"),
]
_outbound_adapter: TypeAdapter[OutboundFrame] = TypeAdapter(OutboundFrame)


def parse_server_frame(text: str) -> OutboundFrame:
    """Parse a frame the server sent (tests and Python clients use this)."""
    return _outbound_adapter.validate_json(text)


def server_frame_from(data: dict) -> OutboundFrame:
    """A server frame from its fields (a `thread.event` group message's frame)."""
    return _outbound_adapter.validate_python(data)


def frame_json(frame: ServerFrame) -> str:
    """Serialize a frame sent to one socket (no event_id: not a thread event)."""
    return frame.model_dump_json(exclude=None if frame.agent else _NO_AGENT)


def event_json(frame: ServerFrame) -> str:
    """Serialize a thread event without `event_id`; the event log appends it
    (`...,"event_id":N}`) when it assigns the id, so the frame is encoded once."""
    return frame.model_dump_json(
        exclude=_NO_EVENT_ID if frame.agent else _NO_EVENT_ID_NOR_AGENT
    )


# What serializing leaves out: `agent` on frames about no run (null there).
_NO_AGENT = frozenset({"agent"})
_NO_EVENT_ID = frozenset({"event_id"})
_NO_EVENT_ID_NOR_AGENT = frozenset({"event_id", "agent"})


def response_event_json(
    *,
    thread_id: UUID | str,
    run_id: UUID | str,
    stream_index: int,
    text: str,
    agent_json: str | None = None,
) -> str:
    """`event_json(ResponseFrame(...))`, written out directly: the worker makes
    one per chunk, and building the model costs more than the rest of the
    chunk's trip to Redis. `agent_json` is the agent's name as JSON
    (`agent_name_json`, made once per run, not per chunk; None leaves the
    field out, as the model does). tests/realtime/test_protocol.py checks
    they agree."""
    agent = f',"agent":{agent_json}' if agent_json is not None else ""
    return (
        '{"type":"response","content":'
        + json.dumps(text, ensure_ascii=False)
        + f',"thread_id":"{thread_id}","run_id":"{run_id}"{agent},'
        f'"stream_index":{stream_index},"request_id":null,'
        f'"timestamp":"{utc_timestamp()}"}}'
    )


def agent_name_json(name: str | None) -> str | None:
    """An agent's name as the `agent` field's JSON, for `response_event_json`
    (None for no agent)."""
    return json.dumps(name, ensure_ascii=False) if name else None


def error_frame(
    code: Any,
    message: str,
    *,
    thread_id: UUID | str | None = None,
    request_id: str | None = None,
    details: dict | None = None,
) -> ErrorFrame:
    code_value = code.value if hasattr(code, "value") else str(code)
    return ErrorFrame(
        content=ErrorContent(code=code_value, message=message, details=details),
        thread_id=thread_id,
        request_id=request_id,
    )
