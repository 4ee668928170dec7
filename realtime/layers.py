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

Thread events travel through the thread's event log (realtime/eventlog.py), which
numbers, keeps and fans them out; every other group and channel is the stock
layer's (channels-redis in production, the in-memory layer embedded).
"""

from __future__ import annotations

import re

from channels.layers import InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer

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


class ThreadGroupsMixin:
    """`group_send` to `thread.<uuid>` publishes through the thread's event log."""

    async def group_send(self, group, message):
        thread_id = thread_of_group(group)
        if thread_id is None:
            return await super().group_send(group, message)
        await publish_thread_event(thread_id, message)


class RedisThreadLayer(ThreadGroupsMixin, RedisChannelLayer):
    """channels-redis's core layer, with thread groups (production)."""


class InMemoryThreadLayer(ThreadGroupsMixin, InMemoryChannelLayer):
    """Channels' in-memory layer, with thread groups (embedded mode, tests)."""
