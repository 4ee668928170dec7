"""Run dispatch in batches: the runs one transaction starts are one `run.start`
message on `agent-runs`, and a worker takes what it has room for from it and
puts the rest back for the others."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction

from agents.models import AgentConfig
from agents.runtime import get_runtime, reset_runtime
from agents.services import AGENT_RUNS_CHANNEL
from agents.worker import AgentWorkerServer, run_ids_of, worker_application
from chat.models import Role, Thread
from chat.services import MessageRequest, messages_post
from realtime.events import after_commit_batched, call_service
from tests.eventually import eventually

pytestmark = pytest.mark.django_db(transaction=True)


async def received(channel: str, timeout: float = 5.0) -> dict:
    return await asyncio.wait_for(get_channel_layer().receive(channel), timeout)


async def nothing_more_on(channel: str) -> bool:
    try:
        await asyncio.wait_for(get_channel_layer().receive(channel), 0.3)
    except TimeoutError:
        return True
    return False


def test_run_ids_of_reads_both_forms_and_nothing_else():
    assert run_ids_of({"type": "run.start", "run_ids": ["a", "b"]}) == ["a", "b"]
    assert run_ids_of({"type": "run.start", "run_id": "a"}) == ["a"]
    assert run_ids_of({"type": "run.start", "run_ids": []}) == []
    assert run_ids_of({"type": "run.start"}) == []
    assert run_ids_of({"type": "run.cancel", "run_id": "a"}) == []


async def test_items_batched_in_one_transaction_go_in_one_call():
    calls: list[list] = []

    async def send_batch(items: list) -> None:
        calls.append(items)

    def service() -> None:
        with transaction.atomic():
            for item in ("a", "b", "c"):
                after_commit_batched(send_batch, item)

    await call_service(service)
    assert calls == [["a", "b", "c"]]


def test_outside_call_service_each_item_is_sent_at_its_commit():
    calls: list[list] = []

    async def send_batch(items: list) -> None:
        calls.append(items)

    for item in ("a", "b"):
        with transaction.atomic():
            after_commit_batched(send_batch, item)
    assert calls == [["a"], ["b"]]


async def test_a_burst_posted_together_is_one_run_start_message(
    thread, users, echo_agent
):
    owner = users[Role.OWNER]
    others = [
        await Thread.objects.acreate(owner=owner, agent=echo_agent) for _ in range(2)
    ]
    requests = [
        MessageRequest(each.pk, owner, f"hello {n}")
        for n, each in enumerate([thread, *others])
    ]

    runs = await call_service(messages_post, requests=requests)

    message = await received(AGENT_RUNS_CHANNEL)
    assert message == {"type": "run.start", "run_ids": [str(run.pk) for run in runs]}
    assert await nothing_more_on(AGENT_RUNS_CHANNEL)


async def test_a_worker_takes_what_it_has_room_for_and_puts_the_rest_back(
    settings, users
):
    if not isinstance(get_channel_layer(), InMemoryChannelLayer):
        # A worker started inside a test leaves channels-redis receives that can
        # outlive the test's event loop (its teardown then hangs); on Redis the
        # batches are covered by real worker processes in
        # tests/integration/test_burst.py.
        pytest.skip("the in-memory layer only: see tests/integration/test_burst.py")
    settings.PARLEY_WORKER_CONCURRENCY = 2
    reset_runtime()
    owner = users[Role.OWNER]
    slow = await AgentConfig.objects.acreate(
        name="slow", provider="echo", extra_params={"tokens_per_second": 2}
    )
    threads = [await Thread.objects.acreate(owner=owner, agent=slow) for _ in range(3)]
    runs = await call_service(
        messages_post,
        requests=[MessageRequest(each.pk, owner, "a long reply") for each in threads],
    )
    # The batch's message is on the channel; a worker with two slots takes it.
    layer = get_channel_layer()
    server = AgentWorkerServer(worker_application(), layer)
    serving = asyncio.create_task(server.arun())
    try:
        runtime = get_runtime()
        await eventually(lambda: len(runtime.tasks) == 2, what="two runs started")
        assert sorted(runtime.tasks) == sorted(str(run.pk) for run in runs[:2])
        # Its receivers wait for a free slot: the third run waits on the channel.
        server.stopping.set()
        assert await received(AGENT_RUNS_CHANNEL) == {
            "type": "run.start",
            "run_ids": [str(runs[2].pk)],
        }
    finally:
        server.stopping.set()
        for run in runs:
            runtime.cancel(str(run.pk))
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await asyncio.gather(*runtime.tasks.values(), return_exceptions=True)
        # As the `worker` fixture does: the runtime's background tasks (leases,
        # sweep, control channel) hold channel-layer receives; cancelled and
        # awaited here, they let go before this test's event loop closes.
        for background in runtime._background:
            background.cancel()
        await asyncio.gather(*runtime._background, return_exceptions=True)
        reset_runtime()
