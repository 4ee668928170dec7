"""chat/services.py: who may make each write, what it changes, and the thread
events it publishes once it commits (read back from the thread's event log and
checked against the protocol's models).

Batch rules of `messages_post` are in tests/chat/test_admission.py; the role
table of every endpoint in tests/test_permissions.py.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone

from agents.errors import AgentErrorCode
from agents.models import Run, RunInput, RunStatus
from chat import services
from chat.models import Message, Role, Thread, ThreadMember
from chat.selectors import thread_get_for_user
from realtime.errors import ErrorCode, ServiceError
from realtime.eventlog import get_event_log
from realtime.events import call_service
from realtime.protocol import parse_server_frame
from tests.eventually import eventually

pytestmark = pytest.mark.django_db(transaction=True)


def thread_id_of(thread) -> str:
    return thread if isinstance(thread, str) else str(thread.pk)


async def last_event_id(thread) -> int:
    return (await get_event_log().thread_state(thread_id_of(thread))).last_event_id


async def events_after(thread, event_id: int) -> list[dict]:
    """The thread's events after `event_id`, each checked against its model."""
    events = await get_event_log().read_after(thread_id_of(thread), event_id)
    assert events is not None
    frames = []
    for event in events:
        parse_server_frame(event.text)
        frames.append(json.loads(event.text))
    return frames


def kinds(frames: list[dict]) -> list[tuple]:
    """(type, state or status) of each frame: what a client acts on."""
    result = []
    for frame in frames:
        content = frame["content"]
        if frame["type"] == "status":
            result.append(("status", content["state"]))
        elif frame["type"] == "state_complete":
            result.append(("state_complete", content["status"]))
        else:
            result.append((frame["type"], None))
    return result


async def refused(service, **kwargs) -> ServiceError:
    with pytest.raises(ServiceError) as error:
        await call_service(service, **kwargs)
    return error.value


def db(function, /, **kwargs):
    return database_sync_to_async(function)(**kwargs)


async def a_run(thread, user, *, status=RunStatus.QUEUED, **fields) -> Run:
    return await Run.objects.acreate(
        thread=thread, agent=thread.agent, requested_by=user, status=status, **fields
    )


async def a_worker_channel() -> tuple[object, str]:
    layer = get_channel_layer()
    return layer, await layer.new_channel("test-worker.")


# --- thread_update ------------------------------------------------------------


async def test_the_owner_renames_a_thread_and_every_socket_is_told(thread, users):
    before = await last_event_id(thread)
    await call_service(
        services.thread_update, actor=users[Role.OWNER], thread=thread, title="Plans"
    )
    assert (await Thread.objects.aget(pk=thread.pk)).title == "Plans"
    (frame,) = await events_after(thread, before)
    assert frame["content"] == {
        "state": "thread_updated",
        "title": "Plans",
        "config": {},
        "agent": "echo",
    }
    assert frame["event_id"] == before + 1


async def test_a_participant_changes_the_config_merged_into_what_is_stored(
    thread, users
):
    # Given a config another socket stored after this caller read the thread
    await Thread.objects.filter(pk=thread.pk).aupdate(config={"temperature": 0.5})
    before = await last_event_id(thread)
    updated = await call_service(
        services.thread_update,
        actor=users[Role.PARTICIPANT],
        thread=thread,
        config={"system_prompt": "Be brief."},
    )
    merged = {"temperature": 0.5, "system_prompt": "Be brief."}
    assert updated.config == merged
    assert (await Thread.objects.aget(pk=thread.pk)).config == merged
    (frame,) = await events_after(thread, before)
    assert frame["content"]["config"] == merged and frame["content"]["title"] == "t"


@pytest.mark.parametrize(
    "role, change, code",
    [
        (Role.PARTICIPANT, {"title": "mine now"}, ErrorCode.FORBIDDEN),
        (Role.OBSERVER, {"title": "mine now"}, ErrorCode.READ_ONLY),
        (Role.OBSERVER, {"config": {"temperature": 1}}, ErrorCode.READ_ONLY),
        (Role.STAFF, {"config": {"temperature": 1}}, ErrorCode.FORBIDDEN),
        ("stranger", {"title": "mine now"}, ErrorCode.FORBIDDEN),
        (Role.OWNER, {"config": {"temperature": 9}}, ErrorCode.INVALID_CONFIG),
        (Role.OWNER, {"config": {"base_url": "http://x"}}, ErrorCode.INVALID_CONFIG),
    ],
)
async def test_a_refused_update_changes_nothing_and_publishes_nothing(
    thread, users, role, change, code
):
    before = await last_event_id(thread)
    error = await refused(
        services.thread_update, actor=users[role], thread=thread, **change
    )
    assert error.code == code
    stored = await Thread.objects.aget(pk=thread.pk)
    assert (stored.title, stored.config) == ("t", {})
    assert await events_after(thread, before) == []


async def test_staff_may_rename_any_thread(thread, users):
    await call_service(
        services.thread_update, actor=users[Role.STAFF], thread=thread, title="Ops"
    )
    assert (await Thread.objects.aget(pk=thread.pk)).title == "Ops"


# --- thread_reset and thread_delete --------------------------------------------


async def test_a_reset_cancels_the_runs_empties_the_history_and_ids_keep_counting(
    thread, users
):
    owner = users[Role.OWNER]
    running = await call_service(
        services.message_post, thread=thread, user=owner, text="first"
    )
    queued = await call_service(
        services.message_post, thread=thread, user=owner, text="second"
    )
    await Run.objects.filter(pk=running.pk).aupdate(status=RunStatus.RUNNING)
    before = await last_event_id(thread)

    await call_service(services.thread_reset, actor=owner, thread=thread)

    assert not await Message.objects.filter(thread=thread).aexists()
    assert {run.status async for run in Run.objects.filter(thread=thread)} == {
        RunStatus.RUNNING  # asked to stop (cancel_requested); its worker ends it
    }
    assert (await Run.objects.aget(pk=running.pk)).cancel_requested
    frames = await events_after(thread, before)
    assert kinds(frames) == [
        ("status", "cancelling"),
        ("state_complete", "cancelled"),
        ("status", "reset"),
    ]
    assert frames[0]["run_id"] == str(running.pk)
    assert frames[1]["run_id"] == str(queued.pk)
    assert [f["event_id"] for f in frames] == [before + 1, before + 2, before + 3]
    # After the reset, the thread's events go on from where they were.
    later = await call_service(
        services.message_post, thread=thread, user=owner, text="again"
    )
    assert later.status == RunStatus.QUEUED
    assert (await events_after(thread, before + 3))[0]["event_id"] == before + 4


@pytest.mark.parametrize(
    "service", [services.thread_reset, services.thread_delete], ids=lambda s: s.__name__
)
@pytest.mark.parametrize(
    "role, code",
    [
        (Role.PARTICIPANT, ErrorCode.FORBIDDEN),
        (Role.OBSERVER, ErrorCode.READ_ONLY),
        ("stranger", ErrorCode.FORBIDDEN),
    ],
)
async def test_only_the_owner_and_staff_reset_or_delete(
    thread, users, service, role, code
):
    await Message.objects.acreate(
        thread=thread, author=users[Role.OWNER], role="user", text="keep me"
    )
    before = await last_event_id(thread)
    error = await refused(service, actor=users[role], thread=thread)
    assert (error.code, error.status) == (code, 403)
    assert await Message.objects.filter(thread=thread, text="keep me").aexists()
    assert await events_after(thread, before) == []


async def test_staff_may_reset_a_thread(thread, users):
    await Message.objects.acreate(
        thread=thread, author=users[Role.OWNER], role="user", text="gone"
    )
    await call_service(services.thread_reset, actor=users[Role.STAFF], thread=thread)
    assert not await Message.objects.filter(thread=thread).aexists()


async def test_deleting_a_thread_cancels_its_runs_then_says_deleted(thread, users):
    owner, thread_id = users[Role.OWNER], str(thread.pk)
    queued = await call_service(
        services.message_post, thread=thread, user=owner, text="hello"
    )
    before = await last_event_id(thread)
    await call_service(services.thread_delete, actor=owner, thread=thread)
    assert not await Thread.objects.filter(pk=thread_id).aexists()
    assert not await Run.objects.filter(pk=queued.pk).aexists()
    frames = await events_after(thread_id, before)
    assert kinds(frames) == [("state_complete", "cancelled"), ("status", "deleted")]
    assert frames[0]["run_id"] == str(queued.pk)


# --- member_add and member_remove ----------------------------------------------


async def test_sharing_a_thread_lets_the_user_in_with_the_role_given(thread, users):
    before = await last_event_id(thread)
    member, created = await call_service(
        services.member_add,
        actor=users[Role.OWNER],
        thread=thread,
        username="stranger",
        role=Role.OBSERVER,
    )
    assert created and member.role == Role.OBSERVER
    _, role = await db(thread_get_for_user, thread_id=thread.pk, user=users["stranger"])
    assert role == Role.OBSERVER
    # Changing the role of a member is the same call.
    member, created = await call_service(
        services.member_add,
        actor=users[Role.STAFF],
        thread=thread,
        username="stranger",
        role=Role.PARTICIPANT,
    )
    assert not created and member.role == Role.PARTICIPANT
    assert await ThreadMember.objects.filter(thread=thread).acount() == 3
    # Sharing is not a thread event: open sockets learn it through chat/access.py.
    assert await events_after(thread, before) == []


@pytest.mark.parametrize(
    "actor, username, role, code",
    [
        (Role.OWNER, "nobody", Role.OBSERVER, ErrorCode.USER_NOT_FOUND),
        (Role.OWNER, "stranger", "admin", ErrorCode.VALIDATION_ERROR),
        (Role.OWNER, "stranger", Role.OWNER, ErrorCode.VALIDATION_ERROR),
        (Role.OWNER, "owner", Role.PARTICIPANT, ErrorCode.VALIDATION_ERROR),
        (Role.PARTICIPANT, "stranger", Role.OBSERVER, ErrorCode.FORBIDDEN),
        (Role.OBSERVER, "stranger", Role.OBSERVER, ErrorCode.READ_ONLY),
        (Role.OBSERVER, "observer", Role.PARTICIPANT, ErrorCode.READ_ONLY),
    ],
)
async def test_sharing_refusals_name_their_reason(
    thread, users, actor, username, role, code
):
    error = await refused(
        services.member_add,
        actor=users[actor],
        thread=thread,
        username=username,
        role=role,
    )
    assert error.code == code
    roles = dict(
        [pair async for pair in thread.members.values_list("user__username", "role")]
    )
    assert roles == {"participant": "participant", "observer": "observer"}


async def test_a_removed_member_can_no_longer_open_the_thread(thread, users):
    await call_service(
        services.member_remove,
        actor=users[Role.STAFF],
        thread=thread,
        username="participant",
    )
    with pytest.raises(ServiceError) as gone:
        await db(thread_get_for_user, thread_id=thread.pk, user=users[Role.PARTICIPANT])
    assert gone.value.code == ErrorCode.THREAD_NOT_FOUND
    # and they may no longer write to it
    error = await refused(
        services.message_post, thread=thread, user=users[Role.PARTICIPANT], text="hi"
    )
    assert error.code == ErrorCode.FORBIDDEN


async def test_an_observer_cannot_remove_anyone_else(thread, users):
    error = await refused(
        services.member_remove,
        actor=users[Role.OBSERVER],
        thread=thread,
        username="participant",
    )
    assert error.code == ErrorCode.READ_ONLY
    assert await ThreadMember.objects.filter(thread=thread).acount() == 2


# --- thread_run_cancel -----------------------------------------------------------


async def test_cancelling_a_queued_run_ends_it_at_once_for_everyone(thread, users):
    run = await call_service(
        services.message_post, thread=thread, user=users[Role.OWNER], text="x"
    )
    before = await last_event_id(thread)
    cancelled = await call_service(
        services.thread_run_cancel, actor=users[Role.PARTICIPANT], thread_id=thread.pk
    )
    assert cancelled.pk == run.pk
    assert (await Run.objects.aget(pk=run.pk)).status == RunStatus.CANCELLED
    (frame,) = await events_after(thread, before)
    assert kinds([frame]) == [("state_complete", "cancelled")]
    assert frame["run_id"] == str(run.pk) and frame["content"]["text"] == ""


async def test_cancelling_a_running_run_tells_the_thread_and_asks_its_worker(
    thread, users
):
    layer, channel = await a_worker_channel()
    run = await a_run(
        thread, users[Role.OWNER], status=RunStatus.RUNNING, worker_channel=channel
    )
    before = await last_event_id(thread)
    await call_service(
        services.thread_run_cancel,
        actor=users[Role.OWNER],
        thread_id=thread.pk,
        run_id=run.pk,
    )
    stored = await Run.objects.aget(pk=run.pk)
    assert stored.status == RunStatus.RUNNING and stored.cancel_requested
    (frame,) = await events_after(thread, before)
    assert frame["content"] == {"state": "cancelling", "run_id": str(run.pk)}
    message = await asyncio.wait_for(layer.receive(channel), timeout=5)
    assert message == {"type": "run.cancel", "run_id": str(run.pk)}


async def test_cancel_refusals_name_their_reason(thread, users, echo_agent):
    owner = users[Role.OWNER]
    assert (
        await refused(services.thread_run_cancel, actor=owner, thread_id=thread.pk)
    ).code == AgentErrorCode.RUN_NOT_FOUND
    done = await a_run(thread, owner, status=RunStatus.COMPLETED)
    ended = await refused(
        services.thread_run_cancel, actor=owner, thread_id=thread.pk, run_id=done.pk
    )
    assert (ended.code, ended.status) == (AgentErrorCode.RUN_NOT_ACTIVE, 409)
    # A run of another thread is not found through this one.
    other = await Thread.objects.acreate(owner=owner, agent=echo_agent)
    elsewhere = await a_run(other, owner)
    assert (
        await refused(
            services.thread_run_cancel,
            actor=owner,
            thread_id=thread.pk,
            run_id=elsewhere.pk,
        )
    ).code == AgentErrorCode.RUN_NOT_FOUND
    queued = await a_run(thread, owner)
    for role, code in [
        (Role.OBSERVER, ErrorCode.READ_ONLY),
        (Role.STAFF, ErrorCode.FORBIDDEN),
        ("stranger", ErrorCode.FORBIDDEN),
    ]:
        error = await refused(
            services.thread_run_cancel, actor=users[role], thread_id=thread.pk
        )
        assert error.code == code, role
    assert (await Run.objects.aget(pk=queued.pk)).status == RunStatus.QUEUED
    missing = await refused(
        services.thread_run_cancel,
        actor=owner,
        thread_id="8d2c2b5e-0000-4000-8000-000000000000",
    )
    assert missing.code == ErrorCode.THREAD_NOT_FOUND


# --- thread_input_submit ---------------------------------------------------------


async def a_question(run, *, kind="question", input_id="q1") -> RunInput:
    now = timezone.now()
    return await RunInput.objects.acreate(
        run=run,
        input_id=input_id,
        kind=kind,
        question="Which one?",
        asked_at=now,
        timeout_seconds=60,
        expires_at=now + timedelta(seconds=60),
    )


async def test_an_answer_reaches_the_worker_waiting_for_it(thread, users):
    layer, channel = await a_worker_channel()
    run = await a_run(
        thread, users[Role.OWNER], status=RunStatus.RUNNING, worker_channel=channel
    )
    await a_question(run)
    answered = await call_service(
        services.thread_input_submit,
        actor=users[Role.PARTICIPANT],
        thread_id=thread.pk,
        run_id=run.pk,
        input_id=None,  # the oldest open question
        text="the blue one",
    )
    assert answered.pk == run.pk
    message = await asyncio.wait_for(layer.receive(channel), timeout=5)
    assert message == {
        "type": "run.input",
        "run_id": str(run.pk),
        "input_id": "q1",
        "text": "the blue one",
        "approve": None,
        "username": "participant",
    }


async def test_an_approval_is_answered_yes_or_no_never_with_text(thread, users):
    layer, channel = await a_worker_channel()
    owner = users[Role.OWNER]
    run = await a_run(thread, owner, status=RunStatus.RUNNING, worker_channel=channel)
    await a_question(run, kind="approval", input_id="approve-1")
    mismatch = await refused(
        services.thread_input_submit,
        actor=owner,
        thread_id=thread.pk,
        run_id=run.pk,
        input_id="approve-1",
        text="sure",
    )
    assert mismatch.code == AgentErrorCode.INPUT_MISMATCH
    await call_service(
        services.thread_input_submit,
        actor=owner,
        thread_id=thread.pk,
        run_id=run.pk,
        input_id="approve-1",
        text=None,
        approve=False,
    )
    message = await asyncio.wait_for(layer.receive(channel), timeout=5)
    assert (message["input_id"], message["approve"], message["text"]) == (
        "approve-1",
        False,
        None,
    )


async def test_answer_refusals_name_their_reason(thread, users, settings):
    owner = users[Role.OWNER]
    queued = await a_run(thread, owner)
    await a_question(queued, input_id="early")

    async def answer(actor, run, text="yes", input_id=None):
        return await refused(
            services.thread_input_submit,
            actor=actor,
            thread_id=thread.pk,
            run_id=run.pk,
            input_id=input_id,
            text=text,
        )

    assert (await answer(owner, queued)).code == AgentErrorCode.INPUT_NOT_PENDING
    running = await a_run(thread, owner, status=RunStatus.RUNNING)
    assert (await answer(owner, running)).code == AgentErrorCode.INPUT_NOT_PENDING
    await a_question(running, input_id="open")
    assert (
        await answer(owner, running, input_id="someone-elses")
    ).code == AgentErrorCode.INPUT_NOT_PENDING
    settings.PARLEY_MAX_MESSAGE_CHARS = 10
    assert (await answer(owner, running, "x" * 11)).code == ErrorCode.MESSAGE_TOO_LONG
    assert (await answer(users[Role.OBSERVER], running)).code == ErrorCode.READ_ONLY
    assert (await answer(users["stranger"], running)).code == ErrorCode.FORBIDDEN


# --- message_post ------------------------------------------------------------------


async def test_a_message_is_announced_with_its_author_then_its_run_queued(
    thread, users
):
    before = await last_event_id(thread)
    run = await call_service(
        services.message_post,
        thread=thread,
        user=users[Role.PARTICIPANT],
        text="hello there",
        request_id="r-1",
    )
    message = await Message.objects.aget(run_id=run.pk)
    assert (message.text, message.role, message.author_id) == (
        "hello there",
        "user",
        users[Role.PARTICIPANT].pk,
    )
    posted, queued = await events_after(thread, before)
    assert posted["type"] == "message" and posted["request_id"] == "r-1"
    assert posted["run_id"] == str(run.pk)
    assert posted["content"]["text"] == "hello there"
    assert posted["content"]["author"] == {"username": "participant"}
    assert queued["content"] == {
        "state": "queued",
        "run_id": str(run.pk),
        "position": 0,
    }


async def test_a_message_while_the_agent_answers_waits_its_turn(thread, users):
    owner = users[Role.OWNER]
    await call_service(services.message_post, thread=thread, user=owner, text="one")
    before = await last_event_id(thread)
    second = await call_service(
        services.message_post, thread=thread, user=users[Role.PARTICIPANT], text="two"
    )
    _, queued = await events_after(thread, before)
    assert queued["content"] == {
        "state": "queued",
        "run_id": str(second.pk),
        "position": 1,
    }


async def test_with_the_interrupt_policy_a_new_message_cancels_the_reply_before_it(
    thread, users
):
    thread.agent.busy_policy = "interrupt"
    await thread.agent.asave()
    owner = users[Role.OWNER]
    first = await call_service(
        services.message_post, thread=thread, user=owner, text="one"
    )
    before = await last_event_id(thread)
    second = await call_service(
        services.message_post, thread=thread, user=owner, text="two"
    )
    frames = await events_after(thread, before)
    assert kinds(frames) == [
        ("message", None),
        ("status", "queued"),
        ("state_complete", "cancelled"),
    ]
    assert frames[2]["run_id"] == str(first.pk)
    assert (await Run.objects.aget(pk=first.pk)).status == RunStatus.CANCELLED
    assert (await Run.objects.aget(pk=second.pk)).status == RunStatus.QUEUED


@pytest.mark.parametrize(
    "text, code",
    [
        ("nul \x00 inside", ErrorCode.VALIDATION_ERROR),
        ("x" * 21, ErrorCode.MESSAGE_TOO_LONG),
    ],
)
async def test_a_refused_message_is_neither_stored_nor_announced(
    thread, users, settings, text, code
):
    settings.PARLEY_MAX_MESSAGE_CHARS = 20
    before = await last_event_id(thread)
    error = await refused(
        services.message_post, thread=thread, user=users[Role.OWNER], text=text
    )
    assert error.code == code
    assert not await Message.objects.filter(thread=thread).aexists()
    assert await events_after(thread, before) == []


async def test_no_message_reaches_a_disabled_agent(thread, users):
    thread.agent.enabled = False
    await thread.agent.asave()
    error = await refused(
        services.message_post, thread=thread, user=users[Role.OWNER], text="hi"
    )
    assert error.code == AgentErrorCode.AGENT_DISABLED
    assert not await Run.objects.filter(thread=thread).aexists()


# --- what a worker does next ---------------------------------------------------------


@pytest.fixture
def head_cancelled_before_a_worker_took_it(thread, users):
    """Two messages queued while no worker runs; the first cancelled at once.
    (Made before the `worker` fixture starts, so no worker has claimed it.)"""
    owner = users[Role.OWNER]
    first = services.message_post(thread=thread, user=owner, text="one")
    second = services.message_post(thread=thread, user=owner, text="two")
    services.thread_run_cancel(actor=owner, thread_id=thread.pk, run_id=first.pk)
    return first, second


async def test_cancelling_the_first_queued_message_lets_the_next_one_run(
    head_cancelled_before_a_worker_took_it, worker
):
    """Not after the sweeper (PARLEY_LEASE_SECONDS): at once, no run is ahead."""
    first, second = head_cancelled_before_a_worker_took_it

    async def answered():
        return await Message.objects.filter(
            run_id=second.pk, role="assistant"
        ).aexists()

    await eventually(answered, timeout=5, what="the second message's reply")
    assert (await Run.objects.aget(pk=first.pk)).status == RunStatus.CANCELLED


async def test_a_reply_cut_short_by_a_reset_is_not_left_in_the_emptied_history(
    thread, users, worker
):
    """The worker stops the reply; the text it had streamed answers a message
    the reset deleted, and is not stored."""
    thread.agent.extra_params = {"tokens_per_second": 20}
    await thread.agent.asave()
    owner = users[Role.OWNER]
    run = await call_service(
        services.message_post,
        thread=thread,
        user=owner,
        text=" ".join(f"word{n}" for n in range(100)),
    )

    async def streaming():
        state = await get_event_log().thread_state(str(thread.pk))
        progress = state.runs.get(str(run.pk))
        return progress is not None and progress.next_stream_index >= 2

    await eventually(streaming, what="the reply streaming")
    await call_service(services.thread_reset, actor=owner, thread=thread)

    async def ended():
        return not await Run.objects.filter(
            pk=run.pk, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]
        ).aexists()

    await eventually(ended, what="the cut-short run ending")
    history = [m.text async for m in Message.objects.filter(thread=thread)]
    assert history == []
