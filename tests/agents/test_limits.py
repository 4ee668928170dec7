"""Limits a user notices: too many replies of one user at once, too many sockets on
one thread, and a worker process that runs only so many replies at a time."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from agents.models import AgentConfig, Run
from chat.models import Role, Thread

pytestmark = pytest.mark.django_db(transaction=True)


async def joined(client):
    await client.join()
    return client


def until_complete(frame) -> bool:
    return frame["type"] == "state_complete"


@database_sync_to_async
def slow_echo(agent: AgentConfig, tokens_per_second: int) -> None:
    agent.extra_params = {"tokens_per_second": tokens_per_second}
    agent.save()


@database_sync_to_async
def second_thread(thread: Thread) -> Thread:
    return Thread.objects.create(owner=thread.owner, agent=thread.agent, title="other")


async def test_a_user_over_the_active_run_limit_gets_too_many_runs(
    thread, users, worker, client_for, settings
):
    settings.PARLEY_MAX_ACTIVE_RUNS_PER_USER = 1
    await slow_echo(thread.agent, 20)
    other = await second_thread(thread)
    owner = await joined(client_for(thread.id, users[Role.OWNER]))
    elsewhere = await joined(client_for(other.id, users[Role.OWNER]))
    participant = await joined(client_for(thread.id, users[Role.PARTICIPANT]))

    await owner.send({"type": "message", "content": "a b c d e f g h i j"})
    await owner.receive_type("response")
    await elsewhere.send({"type": "message", "content": "me too", "request_id": "x"})
    error = await elsewhere.receive_type("error")

    assert error["content"]["code"] == "too_many_runs"
    assert error["request_id"] == "x"
    # Another user is not held back by the owner's limit.
    await participant.send({"type": "message", "content": "mine"})
    frames = await participant.receive_until(
        lambda frame: until_complete(frame) and frame["content"]["text"] == "mine",
        timeout=15,
    )
    assert frames[-1]["content"]["status"] == "completed"
    assert await database_sync_to_async(Run.objects.filter(thread=other).count)() == 0


async def test_a_socket_over_the_thread_client_limit_is_told_and_closed_4429(
    thread, users, client_for, settings
):
    settings.PARLEY_MAX_CLIENTS_PER_THREAD = 2
    await joined(client_for(thread.id, users[Role.OWNER]))
    await joined(client_for(thread.id, users[Role.PARTICIPANT]))

    extra = client_for(thread.id, users[Role.OBSERVER])
    connected, _ = await extra.connect()
    assert connected
    error = await extra.receive()
    assert error["type"] == "error"
    assert error["content"]["code"] == "too_many_clients"
    assert await extra.communicator.receive_output(timeout=5) == {
        "type": "websocket.close",
        "code": 4429,
    }


@pytest.fixture
def worker_slots(request, settings):
    """PARLEY_WORKER_CONCURRENCY, set before the worker starts (it sizes its slots then)."""
    settings.PARLEY_WORKER_CONCURRENCY = request.param
    return request.param


@pytest.fixture
async def sized_worker(worker_slots, worker):
    return worker


@pytest.mark.parametrize("worker_slots", [1, 4], indirect=True)
async def test_worker_concurrency_bounds_runs_in_flight(
    thread, users, worker_slots, sized_worker, client_for
):
    await slow_echo(thread.agent, 25)
    other = await second_thread(thread)
    first = await joined(client_for(thread.id, users[Role.OWNER]))
    second = await joined(client_for(other.id, users[Role.OWNER]))

    await first.send({"type": "message", "content": "one two three four five six"})
    await first.receive_type("response")
    await second.send({"type": "message", "content": "seven eight nine ten eleven"})
    first_done = (await first.receive_until(until_complete, timeout=15))[-1]
    second_done = (await second.receive_until(until_complete, timeout=15))[-1]

    assert (
        first_done["content"]["status"]
        == second_done["content"]["status"]
        == "completed"
    )
    runs = {
        run.thread_id: run
        for run in await database_sync_to_async(list)(
            Run.objects.filter(thread__in=[thread, other])
        )
    }
    earlier, later = runs[thread.id], runs[other.id]
    if worker_slots == 1:
        # The second reply waits for the worker's only slot.
        assert later.started_at >= earlier.finished_at
    else:
        assert later.started_at < earlier.finished_at


async def test_a_user_over_the_message_rate_gets_rate_limited_and_nothing_is_stored(
    thread, users, worker, client_for, settings
):
    settings.PARLEY_MESSAGES_PER_MINUTE = 2
    owner = await joined(client_for(thread.id, users[Role.OWNER]))

    for text in ("one", "two"):
        await owner.send({"type": "message", "content": text})
        await owner.receive_until(
            lambda frame, text=text: (
                until_complete(frame) and frame["content"]["text"] == text
            )
        )
    await owner.send({"type": "message", "content": "three", "request_id": "r3"})
    error = await owner.receive_type("error")

    assert error["content"]["code"] == "rate_limited"
    assert error["request_id"] == "r3"
    texts = await database_sync_to_async(
        lambda: list(thread.messages.values_list("text", flat=True))
    )()
    assert "three" not in texts and {"one", "two"} <= set(texts)
    # The limit is the user's: another participant still gets through.
    participant = await joined(client_for(thread.id, users[Role.PARTICIPANT]))
    await participant.send({"type": "message", "content": "mine"})
    frames = await participant.receive_until(
        lambda frame: until_complete(frame) and frame["content"]["text"] == "mine"
    )
    assert frames[-1]["content"]["status"] == "completed"


def test_counters_count_up_and_start_again_when_they_expire(settings):
    import time

    from realtime.caching import counter_increment

    key = f"test-counter-{time.monotonic_ns()}"
    assert [counter_increment(key, timeout=1) for _ in range(3)] == [1, 2, 3]
    time.sleep(1.2)
    assert counter_increment(key, timeout=1) == 1
