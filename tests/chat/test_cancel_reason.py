"""`cancel` may say why: the reason is kept with the run and shown in its
`state_complete` (socket and API, running and queued runs)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from agents.models import Run
from chat.models import Role
from tests.eventually import eventually

pytestmark = pytest.mark.django_db(transaction=True)


def complete(frame: dict) -> bool:
    return frame["type"] == "state_complete"


async def test_a_running_reply_stopped_with_a_reason_says_it_to_everyone(
    thread, users, worker, client_for
):
    thread.agent.extra_params = {"tokens_per_second": 20}
    await thread.agent.asave()
    owner = client_for(thread.id, users[Role.OWNER])
    observer = client_for(thread.id, users[Role.OBSERVER])
    await owner.join()
    await observer.join()
    await owner.send({"type": "message", "content": " ".join(["word"] * 200)})
    await owner.receive_until(lambda f: f["type"] == "response")

    await owner.send(
        {"type": "cancel", "content": {"reason": "wrong question"}, "request_id": "c"}
    )

    done = (await observer.receive_until(complete))[-1]
    assert done["content"]["status"] == "cancelled"
    assert done["content"]["reason"] == "wrong question"
    run = await Run.objects.aget(pk=done["run_id"])
    assert run.cancel_reason == "wrong question"


def test_a_queued_run_cancelled_through_the_api_keeps_its_reason(thread, users):
    api = APIClient()
    api.force_authenticate(users[Role.OWNER])
    posted = api.post(
        f"/api/threads/{thread.id}/runs/", {"content": "hi"}, format="json"
    )
    run_id = posted.json()["id"]

    cancelled = api.post(
        f"/api/runs/{run_id}/cancel/", {"reason": "changed my mind"}, format="json"
    )

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancel_reason"] == "changed my mind"


async def test_a_reason_longer_than_200_characters_is_an_invalid_frame(
    thread, users, client_for
):
    client = client_for(thread.id, users[Role.OWNER])
    await client.join()
    await client.send({"type": "cancel", "content": {"reason": "x" * 201}})
    error = await client.receive_until(lambda f: f["type"] == "error")
    assert error[-1]["content"]["code"] == "invalid_frame"
    assert "reason" in error[-1]["content"]["message"]


async def test_a_cancel_without_a_reason_has_none(thread, users, worker, client_for):
    thread.agent.extra_params = {"tokens_per_second": 20}
    await thread.agent.asave()
    owner = client_for(thread.id, users[Role.OWNER])
    await owner.join()
    await owner.send({"type": "message", "content": " ".join(["word"] * 200)})
    await owner.receive_until(lambda f: f["type"] == "response")
    await owner.send({"type": "cancel", "content": None})
    done = (await owner.receive_until(complete))[-1]
    assert done["content"]["reason"] is None
    await eventually(
        lambda: Run.objects.filter(pk=done["run_id"], cancel_reason="").aexists()
    )
