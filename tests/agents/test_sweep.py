"""The sweeper: runs whose worker died are failed with the text they had streamed,
and queued runs nobody picked up are dispatched again."""

from __future__ import annotations

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from agents.models import Run, RunStatus
from agents.sweep import sweep_stale_runs
from chat.models import Message, MessageRole, Role
from realtime.eventlog import Chunk
from realtime.events import publish
from realtime.protocol import ResponseFrame

pytestmark = pytest.mark.django_db(transaction=True)

DEAD_WORKER = "agents.worker.inmemory!deadbeef"


async def joined(client):
    await client.join()
    return client


def until_complete(frame) -> bool:
    return frame["type"] == "state_complete"


@database_sync_to_async
def make_run(thread, user, *, text: str, status: str, age: timedelta, **fields) -> Run:
    prompt = Message.objects.create(
        thread=thread, author=user, role=MessageRole.USER, text=text
    )
    run = Run.objects.create(
        thread=thread,
        agent=thread.agent,
        requested_by=user,
        prompt=prompt,
        status=status,
        **fields,
    )
    prompt.run = run
    prompt.save(update_fields=["run"])
    # created_at is set on insert; age the rows as if they were made long ago.
    long_ago = timezone.now() - age
    Run.objects.filter(pk=run.pk).update(created_at=long_ago)
    Message.objects.filter(pk=prompt.pk).update(created_at=long_ago)
    return Run.objects.get(pk=run.pk)


@database_sync_to_async
def reload(run: Run) -> Run:
    return Run.objects.get(pk=run.pk)


@database_sync_to_async
def assistant_texts(run: Run) -> list[str]:
    return list(
        Message.objects.filter(run=run, role=MessageRole.ASSISTANT).values_list(
            "text", flat=True
        )
    )


async def test_a_run_of_a_dead_worker_is_failed_with_its_streamed_text(
    thread, users, client_for, settings
):
    # No in-process worker: its own first sweep would race this test's.
    settings.PARLEY_EMBEDDED_WORKER = False
    owner_user = users[Role.OWNER]
    now = timezone.now()
    run = await make_run(
        thread,
        owner_user,
        text="tell me",
        status=RunStatus.RUNNING,
        age=timedelta(minutes=2),
        started_at=now - timedelta(minutes=2),
        worker_channel=DEAD_WORKER,
        lease_expires_at=now - timedelta(seconds=30),
    )
    owner = await joined(client_for(thread.id, owner_user))
    participant = await joined(client_for(thread.id, users[Role.PARTICIPANT]))
    # What the dead worker had published before it died.
    for index, (text, before) in enumerate([("Half ", ""), ("an answer", "Half ")]):
        await publish(
            thread.id,
            ResponseFrame(
                content=text, thread_id=thread.id, run_id=run.id, stream_index=index
            ),
            chunk=Chunk(
                run_id=str(run.id), stream_index=index, text=text, text_before=before
            ),
        )

    failed = await sweep_stale_runs()

    assert [str(swept.id) for swept in failed] == [str(run.id)]
    for client in (owner, participant):
        frames = await client.receive_until(until_complete)
        assert [
            frame["content"] for frame in frames if frame["type"] == "response"
        ] == [
            "Half ",
            "an answer",
        ]
        (error,) = [frame for frame in frames if frame["type"] == "error"]
        assert error["content"]["code"] == "worker_lost"
        assert error["run_id"] == str(run.id)
        done = frames[-1]["content"]
        assert done["status"] == "failed"
        assert done["text"] == "Half an answer"
        assert done["chunks"] == 2
        assert done["error"]["code"] == "worker_lost"
    stored = await reload(run)
    assert stored.status == RunStatus.FAILED and stored.error_code == "worker_lost"
    assert stored.lease_expires_at is None and stored.finished_at is not None
    assert await assistant_texts(run) == ["Half an answer"]


async def test_a_running_run_with_a_live_lease_is_left_alone(thread, users):
    now = timezone.now()
    run = await make_run(
        thread,
        users[Role.OWNER],
        text="still going",
        status=RunStatus.RUNNING,
        age=timedelta(minutes=2),
        started_at=now - timedelta(minutes=2),
        worker_channel="agents.worker.inmemory!alive",
        lease_expires_at=now + timedelta(seconds=30),
    )

    assert await sweep_stale_runs() == []
    assert (await reload(run)).status == RunStatus.RUNNING


async def test_a_stuck_queued_run_is_dispatched_again_and_completes(
    thread, users, worker, client_for, settings
):
    run = await make_run(
        thread,
        users[Role.OWNER],
        text="anyone home",
        status=RunStatus.QUEUED,
        age=timedelta(seconds=settings.PARLEY_LEASE_SECONDS + 5),
    )
    owner = await joined(client_for(thread.id, users[Role.OWNER]))

    await sweep_stale_runs()

    done = (await owner.receive_until(until_complete))[-1]
    assert done["run_id"] == str(run.id)
    assert done["content"]["status"] == "completed"
    assert done["content"]["text"] == "anyone home"
    assert (await reload(run)).status == RunStatus.COMPLETED
    assert await assistant_texts(run) == ["anyone home"]
