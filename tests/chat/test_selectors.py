"""chat/selectors.py: the history, the snapshot a socket starts from, and which
threads each user sees."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from rest_framework.authtoken.models import Token

from agents.models import Run, RunInput, RunInputStatus, RunStatus
from chat.models import Message, Role, Thread, ThreadMember
from chat.selectors import (
    message_history,
    snapshot_with_progress,
    thread_get_for_user,
    thread_list_for_user,
    thread_snapshot,
    thread_snapshot_rows,
    user_get_for_token,
)
from realtime.errors import ErrorCode, ServiceError
from realtime.eventlog import RunProgress, ThreadLogState
from realtime.protocol import StatusFrame, parse_server_frame

pytestmark = pytest.mark.django_db


def messages_at(thread, author, texts: list[str], *, start=None) -> list[Message]:
    """Messages one second apart, in the order given (stored in reverse)."""
    start = start or timezone.now() - timedelta(hours=1)
    made = []
    for offset, text in reversed(list(enumerate(texts))):
        message = Message.objects.create(
            thread=thread, author=author, role="user", text=text
        )
        Message.objects.filter(pk=message.pk).update(
            created_at=start + timedelta(seconds=offset)
        )
        made.append(message)
    return made


def as_snapshot_frame(snapshot: dict, thread) -> dict:
    """The snapshot as a socket sends it, checked against the protocol's model."""
    text = StatusFrame(
        content={"state": "snapshot", **snapshot, "presence": []}, thread_id=thread.pk
    ).model_dump_json()
    parse_server_frame(text)
    return json.loads(text)["content"]


# --- history ------------------------------------------------------------------


def test_history_is_the_latest_messages_oldest_first(thread, users):
    messages_at(thread, users[Role.OWNER], ["m0", "m1", "m2", "m3", "m4"])
    assert [m.text for m in message_history(thread=thread)] == [
        "m0",
        "m1",
        "m2",
        "m3",
        "m4",
    ]
    assert [m.text for m in message_history(thread=thread, limit=3)] == [
        "m2",
        "m3",
        "m4",
    ]


def test_history_keeps_about_max_chars_of_the_latest_and_always_the_last(thread, users):
    messages_at(thread, users[Role.OWNER], ["a" * 10, "b" * 10, "c" * 10])
    assert [m.text[0] for m in message_history(thread=thread, max_chars=25)] == [
        "b",
        "c",
    ]
    assert [m.text[0] for m in message_history(thread=thread, max_chars=30)] == [
        "a",
        "b",
        "c",
    ]
    # One message longer than the budget is still shown: never an empty page.
    assert [m.text[0] for m in message_history(thread=thread, max_chars=5)] == ["c"]


def test_history_is_only_the_threads_own(thread, users, echo_agent):
    other = Thread.objects.create(owner=users[Role.OWNER], agent=echo_agent)
    messages_at(other, users[Role.OWNER], ["elsewhere"])
    messages_at(thread, users[Role.OWNER], ["here"])
    assert [m.text for m in message_history(thread=thread)] == ["here"]


# --- snapshots ------------------------------------------------------------------


def a_run(thread, user, status, **fields) -> Run:
    return Run.objects.create(
        thread=thread, agent=thread.agent, requested_by=user, status=status, **fields
    )


def test_a_snapshot_shows_the_runs_in_flight_and_the_history_with_outcomes(
    thread, users
):
    owner = users[Role.OWNER]
    (question,) = messages_at(thread, owner, ["what is up?"])
    done = a_run(thread, owner, RunStatus.FAILED, error_code="worker_lost", error="x")
    Message.objects.create(
        thread=thread, agent=thread.agent, role="assistant", text="half", run=done
    )
    running = a_run(
        thread, owner, RunStatus.RUNNING, partial_text="so far", partial_chunks=2
    )
    queued = a_run(thread, owner, RunStatus.QUEUED)
    a_run(thread, owner, RunStatus.CANCELLED)

    snapshot = as_snapshot_frame(
        thread_snapshot(thread=thread, log_state=ThreadLogState(last_event_id=7)),
        thread,
    )

    assert snapshot["last_event_id"] == 7
    assert [(m["role"], m["text"]) for m in snapshot["messages"]] == [
        ("user", "what is up?"),
        ("assistant", "half"),
    ]
    assert snapshot["messages"][0]["author"] == {"username": "owner"}
    reply = snapshot["messages"][1]
    assert (reply["status"], reply["error"]) == (
        "failed",
        {"code": "worker_lost", "message": "x"},
    )
    assert [
        (r["run_id"], r["status"], r["text"], r["next_stream_index"])
        for r in snapshot["runs"]
    ] == [
        (str(running.pk), "running", "so far", 2),
        (str(queued.pk), "queued", "", 0),
    ]


def test_a_run_whose_reply_is_stored_is_not_shown_in_flight(thread, users):
    """Between the reply's commit and the run's status change it is both: the
    history has it, so the snapshot does not show it twice."""
    run = a_run(thread, users[Role.OWNER], RunStatus.RUNNING)
    Message.objects.create(
        thread=thread, agent=thread.agent, role="assistant", text="done", run=run
    )
    rows = thread_snapshot_rows(thread=thread)
    assert rows["runs"] == []
    assert [m["text"] for m in rows["messages"]] == ["done"]


@pytest.mark.parametrize(
    "logged, expected",
    [
        (RunProgress("", 5, "one two three four five"), ("one two three four five", 5)),
        (RunProgress("", 3, "one two three"), ("one two three", 3)),
        (RunProgress("", 2, "one two"), ("one two three", 3)),  # the log lost some
        (None, ("one two three", 3)),  # the log has nothing (embedded, restarted)
    ],
)  # fmt: skip
def test_the_run_text_is_the_logs_unless_the_checkpoint_went_further(
    thread, users, logged, expected
):
    run = a_run(
        thread,
        users[Role.OWNER],
        RunStatus.RUNNING,
        partial_text="one two three",
        partial_chunks=3,
    )
    runs = {str(run.pk): logged} if logged else {}
    state = ThreadLogState(last_event_id=9, runs=runs)
    (progress,) = snapshot_with_progress(thread_snapshot_rows(thread=thread), state)[
        "runs"
    ]
    assert (progress["text"], progress["next_stream_index"]) == expected


def an_input(run, *, input_id, asked_at, status=RunInputStatus.OPEN, **fields):
    return RunInput.objects.create(
        run=run,
        input_id=input_id,
        question=f"question {input_id}?",
        asked_at=asked_at,
        timeout_seconds=60,
        expires_at=asked_at + timedelta(seconds=60),
        status=status,
        **fields,
    )


def test_open_questions_show_the_seconds_left_at_the_time_given(thread, users):
    asked = timezone.now() - timedelta(minutes=5)
    run = a_run(thread, users[Role.OWNER], RunStatus.RUNNING)
    an_input(run, input_id="open", asked_at=asked)
    an_input(
        run,
        input_id="answered",
        asked_at=asked - timedelta(seconds=1),
        status=RunInputStatus.ANSWERED,
        answer="yes",
    )
    rows = thread_snapshot_rows(thread=thread)
    pristine = copy.deepcopy(rows)
    state = ThreadLogState(last_event_id=1)

    soon = snapshot_with_progress(rows, state, now=asked + timedelta(seconds=15.5))
    (request,) = soon["runs"][0]["input_requests"]
    assert (request["input_id"], request["seconds_left"]) == ("open", 44.5)
    assert request["question"] == "question open?"
    assert request["answerable_by"] == "writers"
    as_snapshot_frame(soon, thread)

    late = snapshot_with_progress(rows, state, now=asked + timedelta(seconds=90))
    assert late["runs"][0]["input_requests"][0]["seconds_left"] == 0.0
    # Shared rows are never changed by making a snapshot of them.
    assert rows == pristine


def test_a_finished_replys_questions_show_how_they_ended(thread, users):
    asked = timezone.now() - timedelta(minutes=5)
    run = a_run(thread, users[Role.OWNER], RunStatus.COMPLETED)
    Message.objects.create(
        thread=thread, agent=thread.agent, role="assistant", text="ok", run=run
    )
    an_input(
        run,
        input_id="asked",
        asked_at=asked,
        status=RunInputStatus.ANSWERED,
        answer="blue",
        answered_by_username="participant",
        answered_at=asked + timedelta(seconds=3),
    )
    an_input(
        run,
        input_id="ignored",
        asked_at=asked + timedelta(seconds=4),
        status=RunInputStatus.TIMED_OUT,
    )
    snapshot = as_snapshot_frame(
        thread_snapshot(thread=thread, log_state=ThreadLogState(last_event_id=0)),
        thread,
    )
    (reply,) = snapshot["messages"]
    assert [
        (i["input_id"], i["status"], i["answer"], i["answered_by"])
        for i in reply["inputs"]
    ] == [
        ("asked", "answered", "blue", {"username": "participant"}),
        ("ignored", "timed_out", None, None),
    ]


# --- who sees which thread -------------------------------------------------------


@pytest.fixture
def threads(thread, users, echo_agent):
    """`thread` (owner's, shared with participant and observer), one of the
    participant's own, one the stranger owns."""
    own = Thread.objects.create(owner=users[Role.PARTICIPANT], agent=echo_agent)
    ThreadMember.objects.create(thread=own, user=users[Role.OBSERVER], role="observer")
    foreign = Thread.objects.create(owner=users["stranger"], agent=echo_agent)
    return {"shared": thread, "own": own, "foreign": foreign}


@pytest.mark.parametrize(
    "who, sees",
    [
        (Role.OWNER, {"shared"}),
        (Role.PARTICIPANT, {"shared", "own"}),
        (Role.OBSERVER, {"shared", "own"}),
        ("stranger", {"foreign"}),
        (Role.STAFF, {"shared", "own", "foreign"}),
    ],
)
def test_each_user_lists_the_threads_they_own_or_were_shared_and_staff_all(
    threads, users, who, sees
):
    names = {thread.pk: name for name, thread in threads.items()}
    listed = [names[t.pk] for t in thread_list_for_user(user=users[who])]
    assert sorted(listed) == sorted(sees)  # each once, however many members


def test_a_stranger_is_told_no_such_thread_never_forbidden(thread, users):
    for thread_id in (thread.pk, uuid.uuid4(), "not-a-uuid"):
        with pytest.raises(ServiceError) as refused:
            thread_get_for_user(thread_id=thread_id, user=users["stranger"])
        assert (refused.value.code, refused.value.status) == (
            ErrorCode.THREAD_NOT_FOUND,
            404,
        )
    _, role = thread_get_for_user(thread_id=thread.pk, user=users[Role.STAFF])
    assert role == Role.STAFF


def test_a_token_of_a_deactivated_user_names_nobody(users):
    token = Token.objects.create(user=users[Role.OWNER])
    assert user_get_for_token(key=token.key) == users[Role.OWNER]
    users[Role.OWNER].is_active = False
    users[Role.OWNER].save()
    assert isinstance(user_get_for_token(key=token.key), AnonymousUser)
    assert isinstance(user_get_for_token(key="no-such-token"), AnonymousUser)
