"""Parley's channel layers: Channels' group API reaches thread sockets.

Every thread is the group `thread.<uuid>`. From any process (a view, a signal
handler, a management command, a Celery task):

    await get_channel_layer().group_send(
        f"thread.{thread_id}",
        {"type": "thread.event", "frame": {"type": "status", "content": {...}}},
    )

publishes that server frame (without `event_id`) to the thread: it gets the
thread's next `event_id`, every socket and SSE stream of the thread receives it,
on every web process, and resume replays it. The frame is checked against the
protocol's models first (realtime/protocol.py); a bad one raises ValueError.

Joining is `group_add("thread.<uuid>", channel)`, too. Any consumer's channel
then receives the thread's live events as `{"type": "thread.event",
"event_id": N, "frame": {...}}` messages (its `thread_event` handler), sent by
the process that called `group_add`, until `group_discard`. Parley's own
sockets, SSE streams and run followers join with `join_thread` (a channel
name from `local_member(self)`): the layer then subscribes the subscriber
itself, whose frames go straight to its socket.

Thread events travel through the thread's event log (realtime/eventlog.py), which
numbers, keeps and fans them out; every other group and channel is the stock
layer's (channels-redis in production, the in-memory layer embedded).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import weakref

from channels.layers import InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer

logger = logging.getLogger(__name__)

THREAD_EVENT = "thread.event"
_THREAD_GROUP = re.compile(
    r"^thread\.([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)


def thread_group(thread_id) -> str:
    """The group name of a thread."""
    return f"thread.{thread_id}"


def thread_of_group(group: str) -> str | None:
    """The thread a group name names, or None for any other group."""
    match = _THREAD_GROUP.match(group)
    return match.group(1) if match else None


async def publish_thread_event(thread_id: str, message: dict) -> int:
    """The `thread.event` message's frame, checked, published to the thread;
    returns its event_id."""
    from realtime.events import publish
    from realtime.protocol import server_frame_from

    if message.get("type") != THREAD_EVENT:
        raise ValueError(
            f"thread groups carry {THREAD_EVENT!r} messages, not "
            f"{message.get('type')!r}"
        )
    frame = message.get("frame")
    if not isinstance(frame, dict):
        raise ValueError("a thread.event message needs a 'frame' (a server frame)")
    if frame.get("event_id") is not None:
        raise ValueError("the event log assigns event_id; leave it out of the frame")
    try:
        parsed = server_frame_from({**frame, "thread_id": thread_id})
    except Exception as error:  # pydantic's ValidationError names every field
        raise ValueError(f"not a server frame: {error}") from None
    return await publish(thread_id, parsed)


# This process's subscribers (sockets, SSE streams, run followers) by the
# channel name each joins its thread group with, and back; gone with them.
_local_members: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_member_names: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_local_numbers = itertools.count(1)


def local_member(subscriber) -> str:
    """The channel name that stands for one of this process's event-log
    subscribers: `group_add` with it subscribes the subscriber itself."""
    name = _member_names.get(subscriber)
    if name is None:
        name = f"parley.local!{next(_local_numbers)}"
        _member_names[subscriber] = name
        _local_members[name] = subscriber
    return name


async def join_thread(thread_id, subscriber) -> None:
    """A subscriber of this process (a socket, an SSE stream) joins the thread's
    group: it gets the thread's live events until `leave_thread`."""
    from channels.layers import get_channel_layer

    await get_channel_layer().group_add(
        thread_group(thread_id), local_member(subscriber)
    )


async def leave_thread(thread_id, subscriber) -> None:
    from channels.layers import get_channel_layer

    await get_channel_layer().group_discard(
        thread_group(thread_id), local_member(subscriber)
    )


class ChannelMember:
    """A channel in a thread group: the thread's live events, sent to it as
    `thread.event` messages."""

    def __init__(self, layer, channel: str) -> None:
        self.layer = layer
        self.channel = channel

    async def deliver(self, event) -> None:
        if not event.event_id:
            return  # announcements (presence): news for sockets, not events
        await self.layer.send(
            self.channel,
            {
                "type": THREAD_EVENT,
                "event_id": event.event_id,
                "frame": json.loads(event.text),
            },
        )

    def lost_continuity(self) -> None:
        logger.warning(
            "thread group member %s may have missed events (the event log lost "
            "continuity); a socket would resync",
            self.channel,
        )


class ThreadGroupsMixin:
    """Thread groups (`thread.<uuid>`) live in the thread's event log:
    `group_send` publishes an event, `group_add`/`group_discard` subscribe."""

    async def group_send(self, group, message):
        thread_id = thread_of_group(group)
        if thread_id is None:
            return await super().group_send(group, message)
        await publish_thread_event(thread_id, message)

    async def group_add(self, group, channel):
        thread_id = thread_of_group(group)
        if thread_id is None:
            return await super().group_add(group, channel)
        from realtime.eventlog import get_event_log

        await get_event_log().subscribe(thread_id, self._member(thread_id, channel))

    async def group_discard(self, group, channel):
        thread_id = thread_of_group(group)
        if thread_id is None:
            return await super().group_discard(group, channel)
        from realtime.eventlog import get_event_log

        member = self._member(thread_id, channel, create=False)
        if member is not None:
            await get_event_log().unsubscribe(thread_id, member)

    def _member(self, thread_id: str, channel: str, *, create: bool = True):
        local = _local_members.get(channel)
        if local is not None:
            return local
        members = self.__dict__.setdefault("_thread_members", {})
        key = (thread_id, channel)
        if create:
            return members.setdefault(key, ChannelMember(self, channel))
        return members.pop(key, None)


class RedisThreadLayer(ThreadGroupsMixin, RedisChannelLayer):
    """channels-redis's core layer, with thread groups (production)."""


class InMemoryThreadLayer(ThreadGroupsMixin, InMemoryChannelLayer):
    """Channels' in-memory layer, with thread groups (embedded mode, tests)."""
