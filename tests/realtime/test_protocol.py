"""Every frame type round-trips through the protocol models; bad input is named."""

import json
import typing
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime.errors import ErrorCode
from realtime.eventlog import with_event_id
from realtime.protocol import (
    STATE_KINDS,
    Author,
    ErrorContent,
    ErrorFrame,
    InputRequestContent,
    InputRequestFrame,
    MessageContent,
    MessageFrame,
    PongFrame,
    ProtocolError,
    ResponseFrame,
    RunCompleteContent,
    StateCompleteFrame,
    StateContent,
    StateFrame,
    StatusContent,
    StatusFrame,
    event_json,
    frame_json,
    parse_client_frame,
    parse_server_frame,
    response_event_json,
    state_content,
)

THREAD = uuid.uuid4()
RUN = uuid.uuid4()

CLIENT_FRAMES = [
    {"type": "message", "content": "hello", "request_id": "r1"},
    {"type": "config", "content": {"temperature": 0.2}},
    {"type": "cancel", "content": None},
    {"type": "cancel", "content": {"run_id": str(RUN)}},
    {
        "type": "input",
        "content": {"run_id": str(RUN), "text": "yes", "input_id": "a:1"},
    },
    {"type": "ping", "content": None},
    {"type": "resume", "content": {"last_event_id": 12}},
    # The full envelope is accepted too.
    {
        "type": "ping",
        "content": None,
        "thread_id": str(THREAD),
        "run_id": None,
        "stream_index": None,
        "event_id": None,
        "request_id": "x",
        "timestamp": "2026-01-01T00:00:00Z",
    },
]


@pytest.mark.parametrize("frame", CLIENT_FRAMES, ids=lambda f: f["type"])
def test_client_frames_round_trip(frame):
    parsed = parse_client_frame(json.dumps(frame))
    assert parsed.type == frame["type"]
    again = parse_client_frame(parsed.model_dump_json())
    assert again == parsed


SERVER_FRAMES = [
    MessageFrame(
        content=MessageContent(
            id=uuid.uuid4(),
            role="user",
            text="hi",
            author=Author(username="ann"),
            created_at="2026-01-01T00:00:00Z",
        ),
        thread_id=THREAD,
    ),
    ResponseFrame(content="chunk", thread_id=THREAD, run_id=RUN, stream_index=0),
    StateFrame(
        content=state_content("usage", {"output_tokens": 3}),
        thread_id=THREAD,
        run_id=RUN,
    ),
    StateCompleteFrame(
        content=RunCompleteContent(text="all", status="completed", chunks=1),
        thread_id=THREAD,
        run_id=RUN,
    ),
    StatusFrame(
        content={"state": "connected", "role": "owner", "user": "ada"}, thread_id=THREAD
    ),
    InputRequestFrame(
        content=InputRequestContent(input_id="r:1", question="?", timeout=5),
        thread_id=THREAD,
        run_id=RUN,
    ),
    ErrorFrame(content=ErrorContent(code="read_only", message="no"), thread_id=THREAD),
    PongFrame(thread_id=THREAD, request_id="p"),
]


@pytest.mark.parametrize("frame", SERVER_FRAMES, ids=lambda f: f.type)
def test_server_frames_round_trip_directly_and_as_events(frame):
    direct = json.loads(frame_json(frame))
    assert set(direct) == {
        "type",
        "content",
        "thread_id",
        "run_id",
        "stream_index",
        "event_id",
        "request_id",
        "timestamp",
    }
    assert parse_server_frame(frame_json(frame)) == frame
    as_event = with_event_id(event_json(frame), 41)
    parsed = parse_server_frame(as_event)
    assert parsed.event_id == 41
    assert parsed.model_copy(update={"event_id": None}) == frame


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", ErrorCode.INVALID_JSON),
        ("[1, 2]", ErrorCode.INVALID_FRAME),
        ('{"content": "no type"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type": "shout", "content": "x"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type": "message"}', ErrorCode.INVALID_FRAME),
        ('{"type": "message", "content": ""}', ErrorCode.INVALID_FRAME),
        ('{"type": "message", "content": 5}', ErrorCode.INVALID_FRAME),
        ('{"type": "message", "content": "x", "surprise": 1}', ErrorCode.INVALID_FRAME),
        ('{"type": "input", "content": {"text": "no run"}}', ErrorCode.INVALID_FRAME),
        (
            '{"type": "cancel", "content": {"run_id": "not-a-uuid"}}',
            ErrorCode.INVALID_FRAME,
        ),
        ('{"type": "config", "content": "temperature"}', ErrorCode.INVALID_FRAME),
        (
            '{"type": "resume", "content": {"last_event_id": -1}}',
            ErrorCode.INVALID_FRAME,
        ),
    ],
)
def test_bad_frames_are_named(text, code):
    with pytest.raises(ProtocolError) as raised:
        parse_client_frame(text)
    assert raised.value.code == code
    assert raised.value.message


@given(text=st.text(), stream_index=st.integers(min_value=0, max_value=10**9))
def test_the_workers_response_json_is_the_response_frames_json(text, stream_index):
    thread_id, run_id = uuid.uuid4(), uuid.uuid4()

    fast = json.loads(
        response_event_json(
            thread_id=thread_id, run_id=run_id, stream_index=stream_index, text=text
        )
    )
    model = json.loads(
        event_json(
            ResponseFrame(
                content=text,
                thread_id=thread_id,
                run_id=run_id,
                stream_index=stream_index,
            )
        )
    )

    assert list(fast) == list(model)  # same fields, same order
    assert {**fast, "timestamp": None} == {**model, "timestamp": None}
    assert ResponseFrame.model_validate({**fast, "event_id": 1}).content == text


def _literal_values(union) -> set[str]:
    """The discriminator values of a discriminated union of models."""
    values: set[str] = set()
    for member in typing.get_args(typing.get_args(union)[0]):
        if typing.get_origin(member) is typing.Annotated:
            values |= _literal_values(member)
            continue
        for name in ("state", "kind"):
            field = member.model_fields.get(name)
            if field is not None:
                values |= set(typing.get_args(field.annotation))
    return values


def test_every_status_state_and_state_kind_is_documented():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    states = _literal_values(StatusContent)
    kinds = _literal_values(StateContent)
    assert {"connected", "snapshot", "accepted", "queued", "notice"} <= states
    assert kinds == STATE_KINDS
    missing = sorted(value for value in states | kinds if f"`{value}`" not in docs)
    assert missing == [], f"docs/protocol.md does not describe {missing}"


@pytest.mark.parametrize(
    "content",
    [
        {"state": "connected", "role": "owner"},  # no user
        {"state": "queued", "run_id": str(RUN)},  # no position
        {"state": "accepted", "request": "message"},  # not a request with a reply
        {"state": "maintenance"},  # unknown
        {"state": "notice", "text": ""},
    ],
)
def test_a_status_that_fits_no_state_model_is_refused(content):
    with pytest.raises(ValueError):
        StatusFrame(content=content, thread_id=THREAD)


def test_a_state_update_of_an_unknown_kind_or_shape_is_refused():
    with pytest.raises(ValueError):
        state_content("thinking", {})
    with pytest.raises(ValueError):
        state_content("input_timeout", {"input_id": "x", "extra": 1})
