"""Thread events: build the frame, then publish it to the thread's event log.

Services call `publish_on_commit` inside their transaction, so an event never
announces something the database does not hold. The worker, which streams,
calls `publish` directly.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.db import transaction

from chat.eventlog import Chunk, get_event_log
from chat.protocol import ServerFrame, StatusFrame, event_json


async def publish(
    thread_id,
    frame: ServerFrame,
    *,
    chunk: Chunk | None = None,
    run_ended: str | None = None,
) -> int:
    return await get_event_log().publish(
        str(thread_id), event_json(frame), chunk=chunk, run_ended=run_ended
    )


def publish_now(thread_id, frame: ServerFrame, *, run_ended: str | None = None) -> int:
    """Publish from synchronous code (services, views)."""
    return async_to_sync(publish)(thread_id, frame, run_ended=run_ended)


def publish_on_commit(
    thread_id, frame: ServerFrame, *, run_ended: str | None = None
) -> None:
    transaction.on_commit(lambda: publish_now(thread_id, frame, run_ended=run_ended))


def run_status_frame(run, *, state: str, **extra) -> StatusFrame:
    """A `status` event about a run: queued, running, cancelling."""
    return StatusFrame(
        content={"state": state, "run_id": str(run.id), **extra},
        thread_id=run.thread_id,
        run_id=run.id,
    )


def presence_users(members: list[str]) -> list[dict]:
    """Who is connected: one entry per user, from "<connection>|<username>|<role>"."""
    users: dict[str, dict] = {}
    for member in members:
        _, username, role = member.rsplit("|", 2)
        entry = users.setdefault(
            username, {"username": username, "role": role, "connections": 0}
        )
        entry["connections"] += 1
    return sorted(users.values(), key=lambda user: user["username"])


def presence_frame(thread_id, members: list[str]) -> StatusFrame:
    return StatusFrame(
        content={"state": "presence", "users": presence_users(members)},
        thread_id=thread_id,
    )
