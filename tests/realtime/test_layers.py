"""Channels' group API reaches thread sockets (realtime/layers.py)."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer

from chat.models import Role
from realtime.layers import local_member, thread_group, thread_of_group
from tests.eventually import eventually

pytestmark = pytest.mark.django_db(transaction=True)

NOTICE = {
    "type": "status",
    "content": {"state": "notice", "text": "Maintenance in 5 minutes", "level": "info"},
}


def test_thread_groups_are_named_by_thread():
    group = thread_group("6f1c0b1e-8a3a-4c55-9a53-7c1d2e3f4a5b")
    assert group == "thread.6f1c0b1e-8a3a-4c55-9a53-7c1d2e3f4a5b"
    assert thread_of_group(group) == "6f1c0b1e-8a3a-4c55-9a53-7c1d2e3f4a5b"
    assert thread_of_group("auth.abc") is None
    assert thread_of_group("thread.not-a-uuid") is None


async def test_group_send_to_a_thread_reaches_its_sockets_as_the_next_event(
    thread, users, client_for
):
    observer = client_for(thread.id, users[Role.OBSERVER])
    _, snapshot = await observer.join()
    before = snapshot["content"]["last_event_id"]

    await get_channel_layer().group_send(
        thread_group(thread.id), {"type": "thread.event", "frame": NOTICE}
    )

    frame = await observer.receive()
    assert frame["type"] == "status" and frame["content"] == NOTICE["content"]
    assert frame["event_id"] == before + 1
    assert frame["thread_id"] == str(thread.id)

    # A socket resuming from before it gets it replayed, exactly once.
    late = client_for(
        thread.id, users[Role.PARTICIPANT], query=f"last_event_id={before}"
    )
    await late.connect()
    assert (await late.receive())["content"]["state"] == "connected"
    replayed = await late.receive()
    assert replayed["event_id"] == before + 1
    assert replayed["content"] == NOTICE["content"]


@pytest.mark.parametrize(
    "message, problem",
    [
        ({"type": "chat.message", "text": "hi"}, "thread.event"),
        ({"type": "thread.event"}, "frame"),
        ({"type": "thread.event", "frame": {**NOTICE, "event_id": 3}}, "event_id"),
        ({"type": "thread.event", "frame": {"type": "nonsense"}}, "server frame"),
        (
            {"type": "thread.event", "frame": {"type": "status", "bogus": 1}},
            "server frame",
        ),
    ],
)
async def test_a_bad_thread_event_is_refused_with_a_clear_error(
    thread, message, problem
):
    with pytest.raises(ValueError, match=problem):
        await get_channel_layer().group_send(thread_group(thread.id), message)


async def test_other_groups_are_the_stock_layers():
    layer = get_channel_layer()
    channel = await layer.new_channel("test.")
    await layer.group_add("plain.group", channel)
    await layer.group_send("plain.group", {"type": "hello"})
    assert (await layer.receive(channel)) == {"type": "hello"}
    await layer.group_discard("plain.group", channel)


async def test_any_channel_joins_a_thread_group_and_gets_its_live_events(thread):
    layer = get_channel_layer()
    channel = await layer.new_channel("custom.")
    group = thread_group(thread.id)
    await layer.group_add(group, channel)

    await layer.group_send(group, {"type": "thread.event", "frame": NOTICE})
    message = await asyncio.wait_for(layer.receive(channel), 5)
    assert message["type"] == "thread.event"
    assert message["frame"]["content"] == NOTICE["content"]
    assert message["frame"]["event_id"] == message["event_id"] >= 1

    await layer.group_discard(group, channel)
    await layer.group_send(group, {"type": "thread.event", "frame": NOTICE})
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(channel), 0.5)


async def test_a_local_member_is_subscribed_itself():
    from realtime.eventlog import get_event_log

    class Collector:
        def __init__(self):
            self.events = []

        async def deliver(self, event):
            self.events.append(event)

        def lost_continuity(self):
            pass

    thread_id = "6f1c0b1e-8a3a-4c55-9a53-7c1d2e3f4a5b"
    collector = Collector()
    layer = get_channel_layer()
    member = local_member(collector)
    await layer.group_add(thread_group(thread_id), member)
    await layer.group_send(
        thread_group(thread_id), {"type": "thread.event", "frame": NOTICE}
    )
    await eventually(lambda: collector.events, what="the event reached the collector")
    assert '"Maintenance in 5 minutes"' in collector.events[0].text
    await layer.group_discard(thread_group(thread_id), member)
    await get_event_log().unsubscribe(thread_id, collector)  # already gone: no error
