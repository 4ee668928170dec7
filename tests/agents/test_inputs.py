"""Questions a run asks the thread: a page opened while one is open sees it
(who may answer, time left); once it ends, the history keeps what was asked,
the answer and who gave it; a run that ends closes what it left open."""

from __future__ import annotations

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone
from rest_framework.test import APIClient

from agents.models import RunInput, RunInputStatus, RunStatus
from agents.sweep import sweep_stale_runs
from chat.models import Role
from tests.agents.test_sweep import DEAD_WORKER, joined, make_run, until_complete

pytestmark = pytest.mark.django_db(transaction=True)


async def ask(client, question: str) -> dict:
    await client.send({"type": "message", "content": f"/ask {question}"})
    return await client.receive_type("input_request")


@database_sync_to_async
def history(thread, user) -> list[dict]:
    client = APIClient()
    client.force_authenticate(user)
    response = client.get(f"/api/threads/{thread.id}/messages/")
    assert response.status_code == 200, response.content
    return response.json()["results"]


@database_sync_to_async
def input_row(input_id: str) -> RunInput:
    return RunInput.objects.get(input_id=input_id)


@pytest.fixture
async def asking_agent(thread):
    thread.agent.extra_params = {"tokens_per_second": 200, "input_timeout": 30}
    await database_sync_to_async(thread.agent.save)()
    return thread.agent


async def test_a_snapshot_taken_while_a_question_is_open_carries_it(
    thread, users, asking_agent, worker, client_for
):
    owner = await joined(client_for(thread.id, users[Role.OWNER]))
    request = await ask(owner, "Which colour?")

    _, snapshot = await client_for(thread.id, users[Role.OBSERVER]).join()

    (run,) = snapshot["content"]["runs"]
    assert run["run_id"] == request["run_id"] and run["status"] == "running"
    (open_question,) = run["input_requests"]
    assert open_question["input_id"] == request["content"]["input_id"]
    assert open_question["question"] == "Which colour?"
    assert open_question["kind"] == "question"
    assert open_question["answerable_by"] == "writers"
    assert open_question["timeout"] == 30
    assert 0 < open_question["seconds_left"] <= 30
    assert open_question["expires_at"].endswith("Z")


async def test_an_answered_question_stays_in_the_history(
    thread, users, asking_agent, worker, client_for
):
    owner = await joined(client_for(thread.id, users[Role.OWNER]))
    participant = await joined(client_for(thread.id, users[Role.PARTICIPANT]))
    request = await ask(owner, "Which colour?")
    await participant.receive_type("input_request")
    await participant.send(
        {
            "type": "input",
            "content": {
                "run_id": request["run_id"],
                "input_id": request["content"]["input_id"],
                "text": "blue",
            },
        }
    )
    done = (await owner.receive_until(until_complete))[-1]
    assert done["content"]["text"] == "You answered: blue"

    expected = {
        "input_id": request["content"]["input_id"],
        "kind": "question",
        "question": "Which colour?",
        "status": "answered",
        "answer": "blue",
        "answered_by": {"username": "participant"},
    }
    _, snapshot = await client_for(thread.id, users[Role.OBSERVER]).join()
    assert snapshot["content"]["runs"] == []
    reply = snapshot["content"]["messages"][-1]
    assert reply["role"] == "assistant" and reply["run_id"] == request["run_id"]
    (asked,) = reply["inputs"]
    assert asked == {**asked, **expected} and asked["answered_at"]
    assert snapshot["content"]["messages"][0]["inputs"] == []  # the user's message

    prompt, answer = await history(thread, users[Role.OBSERVER])
    assert prompt["inputs"] == []
    (asked,) = answer["inputs"]
    assert asked == {**asked, **expected} and asked["asked_at"]
    row = await input_row(expected["input_id"])
    assert row.answered_by_id == users[Role.PARTICIPANT].pk


async def test_a_question_nobody_answers_is_kept_as_timed_out(
    thread, users, worker, client_for
):
    thread.agent.extra_params = {"tokens_per_second": 200, "input_timeout": 0.3}
    await database_sync_to_async(thread.agent.save)()
    owner = await joined(client_for(thread.id, users[Role.OWNER]))
    request = await ask(owner, "Anyone?")
    await owner.receive_until(until_complete)

    (_, reply) = await history(thread, users[Role.OWNER])
    (asked,) = reply["inputs"]
    assert asked["input_id"] == request["content"]["input_id"]
    assert (asked["status"], asked["answer"], asked["answered_by"]) == (
        "timed_out",
        None,
        None,
    )


async def test_a_cancelled_run_closes_its_open_question(
    thread, users, asking_agent, worker, client_for
):
    owner = await joined(client_for(thread.id, users[Role.OWNER]))
    request = await ask(owner, "Still there?")

    await owner.send({"type": "cancel", "content": {"run_id": request["run_id"]}})
    done = (await owner.receive_until(until_complete))[-1]

    assert done["content"]["status"] == "cancelled"
    row = await input_row(request["content"]["input_id"])
    assert row.status == RunInputStatus.CANCELLED
    # Too late to answer now: the writer hears so.
    await owner.send(
        {
            "type": "input",
            "content": {
                "run_id": request["run_id"],
                "input_id": request["content"]["input_id"],
                "text": "yes",
            },
        }
    )
    assert (await owner.receive_type("error"))["content"]["code"] == (
        "input_not_pending"
    )


async def test_an_answer_to_no_open_question_is_refused(
    thread, users, asking_agent, worker, client_for
):
    owner = await joined(client_for(thread.id, users[Role.OWNER]))
    request = await ask(owner, "Which colour?")

    await owner.send(
        {
            "type": "input",
            "content": {
                "run_id": request["run_id"],
                "input_id": "not-a-question",
                "text": "blue",
            },
        }
    )

    assert (await owner.receive_type("error"))["content"]["code"] == (
        "input_not_pending"
    )
    row = await input_row(request["content"]["input_id"])
    assert row.status == RunInputStatus.OPEN


async def test_a_swept_run_closes_its_open_question(thread, users, settings):
    settings.PARLEY_EMBEDDED_WORKER = False
    now = timezone.now()
    run = await make_run(
        thread,
        users[Role.OWNER],
        text="/ask Hello?",
        status=RunStatus.RUNNING,
        age=timedelta(minutes=2),
        started_at=now - timedelta(minutes=2),
        worker_channel=DEAD_WORKER,
        lease_expires_at=now - timedelta(seconds=30),
    )
    await database_sync_to_async(RunInput.objects.create)(
        run=run,
        input_id=f"{run.id}:1",
        question="Hello?",
        asked_at=now - timedelta(seconds=40),
        timeout_seconds=60,
        expires_at=now + timedelta(seconds=20),
    )

    await sweep_stale_runs()

    row = await input_row(f"{run.id}:1")
    assert row.status == RunInputStatus.CANCELLED
    (_, reply) = await history(thread, users[Role.OWNER])
    assert reply["status"] == "failed" and reply["error"]["code"] == "worker_lost"
    assert [asked["status"] for asked in reply["inputs"]] == ["cancelled"]
