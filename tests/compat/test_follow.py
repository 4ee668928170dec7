"""compat/follow.py in-process: a run followed through the event log gives its
text once and in order, also when deliveries or the log itself were lost
(the process's own event log: in memory, or Redis in the PostgreSQL pass)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.db import database_sync_to_async

from agents.models import Run, RunStatus
from chat.access import live_access
from chat.models import Role
from compat.follow import Ended, RunFollower, TextDelta
from realtime.eventlog import Chunk
from realtime.events import publish
from realtime.protocol import (
    RunCompleteContent,
    StateCompleteFrame,
    StatusFrame,
    response_event_json,
)
from tests.eventually import eventually

pytestmark = pytest.mark.django_db(transaction=True)

WORDS = ["one ", "two ", "three ", "four ", "five"]


@pytest.fixture
def run(thread):
    return Run.objects.create(
        thread=thread, agent=thread.agent, status=RunStatus.RUNNING
    )


async def chunk(run, index: int) -> None:
    text = WORDS[index]
    await publish(
        run.thread_id,
        response_event_json(
            thread_id=run.thread_id, run_id=run.id, stream_index=index, text=text
        ),
        chunk=Chunk(str(run.id), index, text, "".join(WORDS[:index])),
    )


async def complete(run) -> None:
    frame = StateCompleteFrame(
        content=RunCompleteContent(text="".join(WORDS), status="completed", chunks=5),
        thread_id=run.thread_id,
        run_id=run.id,
    )
    await publish(run.thread_id, frame, run_ended=str(run.id))


async def other_event(run) -> None:
    frame = StatusFrame(
        content={"state": "notice", "text": "meanwhile", "level": "info"},
        thread_id=run.thread_id,
    )
    await publish(run.thread_id, frame)


async def follower_of(run, user) -> RunFollower:
    follower = RunFollower(
        thread_id=str(run.thread_id),
        run_id=str(run.id),
        user=user,
        token_key=None,
        role=Role.OWNER,
    )
    await follower.open(read_at_generation=live_access().generation)
    return follower


async def followed(follower: RunFollower, after: int = 0) -> tuple[str, Ended]:
    async def follow() -> tuple[str, Ended]:
        text = ""
        async for update in follower.updates(after=after):
            if isinstance(update, TextDelta):
                text += update.text
            elif isinstance(update, Ended):
                return text, update
        raise AssertionError("the updates ended without the run's end")

    return await asyncio.wait_for(follow(), 10)


async def test_the_run_is_replayed_then_followed_live(run, users):
    await chunk(run, 0)  # before the follower subscribed: the replay has it
    follower = await follower_of(run, users[Role.OWNER])
    try:
        await other_event(run)
        for index in range(1, 5):
            await chunk(run, index)
        await complete(run)
        text, ended = await followed(follower)
    finally:
        await follower.close()
    assert text == "".join(WORDS)
    assert (ended.status, ended.text) == ("completed", "".join(WORDS))


async def test_lost_deliveries_are_filled_from_the_log_without_doubling(run, users):
    follower = await follower_of(run, users[Role.OWNER])
    try:
        for index in range(3):
            await chunk(run, index)
        # Two deliveries go missing, then the subscription says it lost some.
        follower.queue.get_nowait()
        follower.queue.get_nowait()
        follower.lost_continuity()
        await chunk(run, 3)
        await chunk(run, 4)
        await complete(run)
        text, ended = await followed(follower)
    finally:
        await follower.close()
    assert text == "".join(WORDS) == ended.text


async def test_events_the_log_no_longer_holds_come_from_its_state(run, users, settings):
    settings.PARLEY_EVENT_LOG_MAXLEN = 3
    from realtime.eventlog import reset_event_log

    reset_event_log()  # made again with the small window
    follower = await follower_of(run, users[Role.OWNER])
    try:
        await chunk(run, 0)
        await chunk(run, 1)
        for _ in range(4):  # the window moves past the run's chunks
            await other_event(run)
        while not follower.queue.empty():
            follower.queue.get_nowait()  # ... and this follower missed them all
        following = asyncio.create_task(followed(follower))
        await eventually(lambda: follower.text == "one two ", what="the resync")
        for index in range(2, 5):
            await chunk(run, index)
        await complete(run)
        text, ended = await following
    finally:
        await follower.close()
    assert text == "".join(WORDS) == ended.text


async def test_a_run_that_ended_while_unseen_is_read_from_the_database(
    run, users, settings
):
    settings.PARLEY_EVENT_LOG_MAXLEN = 2
    from realtime.eventlog import reset_event_log

    reset_event_log()
    follower = await follower_of(run, users[Role.OWNER])
    try:
        for index in range(5):
            await chunk(run, index)
        await database_sync_to_async(_finish)(run)
        await complete(run)
        for _ in range(3):
            await other_event(run)
        while not follower.queue.empty():
            follower.queue.get_nowait()
        follower.lost_continuity()
        text, ended = await followed(follower)
    finally:
        await follower.close()
    assert text == "".join(WORDS) == ended.text
    assert ended.status == "completed"


def _finish(run) -> None:
    from chat.models import Message, MessageRole

    Run.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED)
    Message.objects.create(
        id=uuid.uuid4(),
        thread_id=run.thread_id,
        agent_id=run.agent_id,
        role=MessageRole.ASSISTANT,
        text="".join(WORDS),
        run=run,
    )
