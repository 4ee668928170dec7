"""A run cancelled over the WebSocket is recorded with the member who did it."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from audit.models import AuditAction, AuditEvent
from chat.models import Role
from tests.eventually import eventually

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_cancel_over_the_socket_is_recorded_with_its_actor(
    thread, users, worker, client_for
):
    participant = client_for(thread.id, users[Role.PARTICIPANT])
    await participant.join()
    words = " ".join(f"word{i}" for i in range(400))  # 200 words a second: 2 s
    await participant.send({"type": "message", "content": words})
    first = await participant.receive_type("response")
    await participant.send(
        {"type": "cancel", "content": {"run_id": first["run_id"]}, "request_id": "c1"}
    )
    complete = await participant.receive_type("state_complete")
    assert complete["content"]["status"] == "cancelled"

    @database_sync_to_async
    def cancels():
        return list(
            AuditEvent.objects.filter(action=AuditAction.RUN_CANCEL).values(
                "actor_username", "target_id", "thread_id"
            )
        )

    recorded = await eventually(cancels, what="the cancel recorded")
    assert recorded == [
        {
            "actor_username": "participant",
            "target_id": first["run_id"],
            "thread_id": thread.id,
        }
    ]
