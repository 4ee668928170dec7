"""Access changes reach open sockets at once, and the database decides every write.

Removal, deletion, deactivation and role changes made while a socket is open
(chat/access.py); services that re-check the actor's role in the write's own
transaction (chat/permissions.py `thread_role_now`); one reply per request_id.
"""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from channels.db import database_sync_to_async
from django.db.models.signals import post_delete
from django.utils import timezone

from chat import services
from chat.models import Message, Role, Thread, ThreadMember
from realtime.errors import ErrorCode, ServiceError

pytestmark = pytest.mark.django_db(transaction=True)


async def joined(client):
    status, snapshot = await client.join()
    return status, snapshot


async def closed_with(client, timeout: float = 2.0) -> tuple[list[dict], int]:
    """Every frame the socket got until it was closed, and the close code."""
    frames = []
    while True:
        output = await client.communicator.receive_output(timeout=timeout)
        if output["type"] == "websocket.close":
            return frames, output["code"]
        frames.append(json.loads(output["text"]))


def call(function, **kwargs):
    return database_sync_to_async(function)(**kwargs)


async def messages_stored(thread, text: str) -> int:
    return await database_sync_to_async(
        Message.objects.filter(thread=thread, text=text).count
    )()


async def test_a_removed_member_is_closed_4403_at_once_and_sees_nothing_after(
    thread, users, worker, client_for
):
    participant = client_for(thread.id, users[Role.PARTICIPANT])
    owner = client_for(thread.id, users[Role.OWNER])
    await joined(participant)
    await joined(owner)

    await call(
        services.member_remove,
        actor=users[Role.OWNER],
        thread=thread,
        username="participant",
    )
    await owner.send({"type": "message", "content": "after the removal"})

    frames, code = await closed_with(participant)
    assert code == 4403
    assert [f["type"] for f in frames if f["type"] != "status"] == ["error"]
    assert frames[-1]["content"]["code"] == ErrorCode.FORBIDDEN
    assert "after the removal" not in json.dumps(frames)
    await owner.receive_until(lambda f: f["type"] == "state_complete")


async def test_a_demoted_participant_is_told_and_then_refused(
    thread, users, client_for
):
    participant = client_for(thread.id, users[Role.PARTICIPANT])
    await joined(participant)

    await call(
        services.member_add,
        actor=users[Role.OWNER],
        thread=thread,
        username="participant",
        role=Role.OBSERVER,
    )
    changed = await participant.receive(timeout=2)
    assert changed["type"] == "status"
    assert changed["content"] == {"state": "role_changed", "role": "observer"}

    await participant.send({"type": "message", "content": "still here?"})
    refused = await participant.receive()
    assert refused["content"]["code"] == ErrorCode.READ_ONLY
    assert await messages_stored(thread, "still here?") == 0

    await call(
        services.member_add,
        actor=users[Role.OWNER],
        thread=thread,
        username="participant",
        role=Role.PARTICIPANT,
    )
    promoted = await participant.receive(timeout=2)
    assert promoted["content"] == {"state": "role_changed", "role": "participant"}


async def test_a_deleted_thread_closes_its_sockets_4404(thread, users, client_for):
    observer = client_for(thread.id, users[Role.OBSERVER])
    await joined(observer)
    await call(services.thread_delete, actor=users[Role.OWNER], thread=thread)
    frames, code = await closed_with(observer)
    assert code == 4404
    assert frames[-1]["content"]["code"] == ErrorCode.THREAD_NOT_FOUND


async def test_a_deactivated_user_is_closed_4401(thread, users, client_for):
    participant = client_for(thread.id, users[Role.PARTICIPANT])
    await joined(participant)
    user = users[Role.PARTICIPANT]
    user.is_active = False
    await database_sync_to_async(user.save)()
    frames, code = await closed_with(participant)
    assert code == 4401
    assert frames[-1]["content"]["code"] == ErrorCode.NOT_AUTHENTICATED


async def test_other_members_keep_their_stream_through_a_removal(
    thread, users, worker, client_for
):
    observer = client_for(thread.id, users[Role.OBSERVER])
    participant = client_for(thread.id, users[Role.PARTICIPANT])
    await joined(observer)
    await joined(participant)
    await participant.send({"type": "message", "content": "one two three"})
    first = await observer.receive_until(lambda f: f["type"] == "message")
    await call(
        services.member_remove,
        actor=users[Role.OWNER],
        thread=thread,
        username="participant",
    )
    frames = first + await observer.receive_until(
        lambda f: f["type"] == "state_complete"
    )
    assert frames[-1]["content"]["text"] == "one two three"
    ids = [f["event_id"] for f in frames if f["event_id"] is not None]
    assert ids == list(range(ids[0], ids[0] + len(ids)))


# --- the database decides --------------------------------------------------------


def test_a_write_with_a_stale_role_is_refused(thread, users):
    """The socket's copy of the thread and role is only a hint."""
    stale = Thread.objects.get(pk=thread.pk)
    ThreadMember.objects.filter(thread=thread, user=users[Role.PARTICIPANT]).update(
        role=Role.OBSERVER
    )
    with pytest.raises(ServiceError) as refused:
        services.message_post(thread=stale, user=users[Role.PARTICIPANT], text="hi")
    assert refused.value.code == ErrorCode.READ_ONLY
    with pytest.raises(ServiceError):
        services.thread_update(
            actor=users[Role.PARTICIPANT], thread=stale, config={"temperature": 0.1}
        )
    ThreadMember.objects.filter(thread=thread, user=users[Role.PARTICIPANT]).delete()
    with pytest.raises(ServiceError) as gone:
        services.thread_run_cancel(actor=users[Role.PARTICIPANT], thread_id=thread.pk)
    assert gone.value.code == ErrorCode.FORBIDDEN
    assert not Message.objects.filter(thread=thread).exists()


def test_only_managers_share_reset_and_delete(thread, users):
    for service, kwargs in (
        (services.member_add, {"username": "stranger", "role": Role.OBSERVER}),
        (services.member_remove, {"username": "observer"}),
        (services.thread_reset, {}),
        (services.thread_delete, {}),
    ):
        with pytest.raises(ServiceError):
            service(actor=users[Role.PARTICIPANT], thread=thread, **kwargs)
    assert ThreadMember.objects.filter(thread=thread).count() == 2
    services.member_remove(
        actor=users[Role.OBSERVER], thread=thread, username="observer"
    )  # anyone may leave
    assert ThreadMember.objects.filter(thread=thread).count() == 1


def _race(thread, owner, participant, text: str) -> bool:
    """Post `text` as the participant while the owner removes them, both let go
    at the same instant from threads of their own; True when it was stored."""
    from django.db import connection

    start = threading.Barrier(2)
    stored = []

    def post():
        start.wait()
        try:
            services.message_post(thread=thread, user=participant, text=text)
            stored.append(True)
        except ServiceError:
            stored.append(False)
        finally:
            connection.close()

    def remove():
        start.wait()
        try:
            services.member_remove(
                actor=owner, thread=thread, username=participant.username
            )
        finally:
            connection.close()

    racers = [threading.Thread(target=post), threading.Thread(target=remove)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=20)
    return stored == [True]


def test_a_message_racing_its_authors_removal_is_stored_before_it_or_refused(
    thread, users
):
    """Stored only while the member still existed, never after the removal."""
    removed_at = {}

    def record(sender, instance, **kwargs):
        removed_at[instance.user_id] = timezone.now()

    post_delete.connect(record, sender=ThreadMember)
    participant = users[Role.PARTICIPANT]
    try:
        for attempt in range(8):
            ThreadMember.objects.update_or_create(
                thread=thread, user=participant, defaults={"role": Role.PARTICIPANT}
            )
            stored = _race(thread, users[Role.OWNER], participant, f"race {attempt}")
            message = Message.objects.filter(text=f"race {attempt}").first()
            assert (message is not None) == stored
            if message is not None:
                assert message.created_at < removed_at[participant.pk]
    finally:
        post_delete.disconnect(record, sender=ThreadMember)


# --- one reply per request ---------------------------------------------------------


async def replies_to(client, request_id: str, quiet: float = 0.5) -> list[dict]:
    """Every frame carrying `request_id` until the socket is quiet."""
    replies = []
    # Raw outputs: what waits may be presence news only, which Client.receive
    # skips (and would then wait for more, past the quiet spell).
    while not await client.communicator.receive_nothing(timeout=quiet):
        frame = json.loads((await client.communicator.receive_output())["text"])
        if frame.get("request_id") == request_id:
            replies.append(frame)
    return replies


@pytest.mark.parametrize(
    "frame, reply",
    [
        ({"type": "ping"}, ("pong", None)),
        ({"type": "message", "content": "hello"}, ("message", None)),
        ({"type": "config", "content": {"temperature": 0.2}}, ("status", "accepted")),
        ({"type": "cancel", "content": None}, ("error", "run_not_found")),
        (
            {"type": "input", "content": {"run_id": str(uuid.uuid4()), "text": "yes"}},
            ("error", "run_not_found"),
        ),
        ({"type": "resume", "content": {"last_event_id": 0}}, ("status", "accepted")),
        ({"type": "bogus"}, ("error", "unknown_type")),
    ],
)
async def test_every_request_gets_exactly_one_reply(
    thread, users, client_for, frame, reply
):
    owner = client_for(thread.id, users[Role.OWNER])
    await joined(owner)
    await owner.send({**frame, "request_id": "req-1"})
    replies = await replies_to(owner, "req-1")
    assert len(replies) == 1, replies
    kind, detail = reply
    assert replies[0]["type"] == kind
    if kind == "status":
        assert replies[0]["content"]["state"] == detail
        assert replies[0]["content"]["request"] == frame["type"]
    elif kind == "error":
        assert replies[0]["content"]["code"] == detail


async def test_a_cancel_reply_names_the_run(thread, users, worker, client_for):
    thread.agent.extra_params = {"tokens_per_second": 5}
    await database_sync_to_async(thread.agent.save)()
    owner = client_for(thread.id, users[Role.OWNER])
    await joined(owner)
    await owner.send({"type": "message", "content": "a b c d e f g h"})
    message = await owner.receive_type("message")
    await owner.send({"type": "cancel", "content": None, "request_id": "stop"})
    replies = await replies_to(owner, "stop", quiet=1.0)
    assert [r["content"] for r in replies] == [
        {"state": "accepted", "request": "cancel", "run_id": message["run_id"]}
    ]
