"""A socket that cannot be served right now (Redis away) is refused with the
documented, retryable close code 4503 after an `error` frame, never 1011."""

from __future__ import annotations

import json

import pytest

from chat.models import Role
from realtime.eventlog import get_event_log

pytestmark = pytest.mark.django_db(transaction=True)


async def frames_until_close(client) -> tuple[list[dict], int]:
    frames = []
    while True:
        output = await client.communicator.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            return frames, output["code"]
        frames.append(json.loads(output["text"]))


@pytest.mark.parametrize("step", ["subscribe", "read_after", "presence_set"])
async def test_a_connect_while_the_log_is_unreachable_is_refused_4503(
    thread, users, client_for, monkeypatch, step
):
    log = get_event_log()

    async def unreachable(*args, **kwargs):
        raise TimeoutError("not connected to Redis")

    monkeypatch.setattr(log, step, unreachable)
    client = client_for(thread.id, users[Role.OBSERVER], query="last_event_id=0")
    assert (await client.connect())[0]
    frames, code = await frames_until_close(client)
    assert code == 4503
    assert frames[-1]["type"] == "error"
    assert frames[-1]["content"]["code"] == "service_unavailable"
