"""chat/connectcache.py: connects to a thread share what the previous connect
read (who may open it, its snapshot rows), and a change to any of it is seen
at the very next connect in the same process, never served stale. Nothing is
taken from the cache while this process might miss the broadcasts that say
what changed."""

from __future__ import annotations

import json

import pytest
from rest_framework.authtoken.models import Token

import realtime.eventlog
from chat import connectcache, services
from chat.models import Role, Thread, ThreadMember
from realtime.eventlog import MemoryEventLog, get_event_log
from realtime.events import call_service
from tests.eventually import eventually

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def subscriber_up():
    """Nothing is cached until this process hears broadcasts: on Redis, once
    the event log's subscriber is up (the first connect starts it)."""
    log = get_event_log()
    await eventually(log.broadcasts_live, what="the broadcast subscriber")


@pytest.fixture
def reads(subscriber_up, monkeypatch):
    """How many times a connect went to the database for access and for
    snapshot rows (the selectors are wrapped, not replaced)."""
    counted = {"access": 0, "snapshot": 0}
    read_access = connectcache.thread_access_for_socket
    read_rows = connectcache.thread_snapshot_rows

    def access(**kwargs):
        counted["access"] += 1
        return read_access(**kwargs)

    def rows(**kwargs):
        counted["snapshot"] += 1
        return read_rows(**kwargs)

    monkeypatch.setattr(connectcache, "thread_access_for_socket", access)
    monkeypatch.setattr(connectcache, "thread_snapshot_rows", rows)
    return counted


async def close_code(client) -> int:
    """The code the socket was closed with (frames before it skipped)."""
    output = await client.communicator.receive_output(timeout=5)
    while output["type"] == "websocket.send":
        output = await client.communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close", output
    return output["code"]


async def opened(client_for, thread, user=None, headers=None) -> tuple[dict, dict]:
    """Connect, read `connected` and the snapshot, and close again."""
    client = client_for(thread.id, user, headers=headers)
    status, snapshot = await client.join()
    await client.close()
    return status["content"], snapshot["content"]


async def test_connects_to_a_thread_share_one_read_and_each_gets_its_own_role(
    thread, users, client_for, reads
):
    owner, first = await opened(client_for, thread, users[Role.OWNER])
    observer, second = await opened(client_for, thread, users[Role.OBSERVER])
    participant, third = await opened(client_for, thread, users[Role.PARTICIPANT])
    assert [owner["role"], observer["role"], participant["role"]] == [
        "owner",
        "observer",
        "participant",
    ]
    assert first["messages"] == second["messages"] == third["messages"]
    assert reads == {"access": 1, "snapshot": 1}


async def test_a_thread_event_makes_the_next_connect_read_the_snapshot_again(
    thread, users, client_for, reads
):
    await opened(client_for, thread, users[Role.OWNER])
    await call_service(
        services.message_post, thread=thread, user=users[Role.OWNER], text="news"
    )
    _, snapshot = await opened(client_for, thread, users[Role.OBSERVER])
    assert [m["text"] for m in snapshot["messages"]] == ["news"]
    assert reads["snapshot"] == 2


# Each change as another request of this process makes it (a view, the admin),
# and what the next connect of the person it touches gets.
def remove_member(thread, users, token):
    services.member_remove(
        actor=users[Role.OWNER], thread=thread, username="participant"
    )


def make_observer(thread, users, token):
    services.member_add(
        actor=users[Role.OWNER],
        thread=thread,
        username="participant",
        role=Role.OBSERVER,
    )


def delete_token(thread, users, token):
    Token.objects.filter(pk=token.pk).first().delete()


def deactivate(thread, users, token):
    user = users[Role.PARTICIPANT]
    user.is_active = False
    user.save()


def delete_thread(thread, users, token):
    services.thread_delete(
        actor=users[Role.OWNER], thread=Thread.objects.get(pk=thread.pk)
    )


@pytest.mark.parametrize(
    "change, credential, expected",
    [
        (remove_member, "session", ("closed", 4403)),
        (make_observer, "session", ("role", "observer")),
        (make_observer, "token", ("role", "observer")),
        (delete_token, "token", ("closed", 4401)),
        (deactivate, "token", ("closed", 4401)),
        (delete_thread, "session", ("closed", 4404)),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
async def test_a_change_is_seen_at_the_next_connect_not_served_from_the_cache(
    thread, users, client_for, reads, change, credential, expected
):
    participant = users[Role.PARTICIPANT]
    token = await Token.objects.acreate(user=participant)
    if credential == "token":
        who = {"headers": [(b"authorization", f"Token {token.key}".encode())]}
    else:
        who = {"user": participant}
    # Given a cache that serves this person's connects
    for _ in range(2):
        status, _ = await opened(client_for, thread, **who)
        assert status["role"] == "participant"
    assert reads["access"] == 1

    # When their access changes
    def make_the_change():
        change(thread, users, token)

    await call_service(make_the_change)

    # Then their next connect reads it again and gets what the database says
    client = client_for(thread.id, **who)
    if expected[0] == "closed":
        assert (await client.connect())[0]
        assert await close_code(client) == expected[1]
    else:
        status, _ = await client.join()
        assert status["content"]["role"] == expected[1]
    assert reads["access"] == 2


class SubscriberDownLog(MemoryEventLog):
    """The process's event log with a switch for its broadcast subscriber:
    while `down`, broadcasts from other processes do not reach this one (as
    while RedisEventLog's subscriber has lost Redis)."""

    down = False

    def broadcasts_live(self) -> bool:
        return not self.down


@pytest.fixture
def log():
    realtime.eventlog._event_log = log = SubscriberDownLog(
        max_events=1000, ttl_seconds=600
    )
    return log  # conftest's fresh_process_state forgets it after the test


def demote_in_another_process(thread, user) -> None:
    """A role change this process hears nothing of: another web process made
    it, and its broadcast was lost with the subscriber (no signal here)."""
    ThreadMember.objects.filter(thread=thread, user=user).update(role=Role.OBSERVER)


async def test_while_broadcasts_are_down_every_connect_reads_the_database(
    thread, users, client_for, log, reads
):
    participant = users[Role.PARTICIPANT]
    # Given a warm cache
    await opened(client_for, thread, participant)
    await opened(client_for, thread, participant)
    assert reads == {"access": 1, "snapshot": 1}
    # When the subscriber is down and the role changes elsewhere
    log.down = True
    await call_service(demote_in_another_process, thread=thread, user=participant)
    # Then the connect reads the role from the database, not from the cache
    status, _ = await opened(client_for, thread, participant)
    assert status["role"] == "observer"
    await opened(client_for, thread, participant)
    assert reads == {"access": 3, "snapshot": 3}


async def test_a_lost_subscriber_empties_the_cache_for_when_it_is_back(
    thread, users, client_for, log, reads
):
    participant = users[Role.PARTICIPANT]
    await opened(client_for, thread, participant)
    # The subscriber drops (listeners hear None), a change is missed meanwhile,
    # and the subscriber is back.
    log.down = True
    log._notify(None)
    await call_service(demote_in_another_process, thread=thread, user=participant)
    log.down = False
    status, snapshot = await opened(client_for, thread, participant)
    assert status["role"] == "observer"
    assert reads == {"access": 2, "snapshot": 2}
    assert json.dumps(snapshot)
