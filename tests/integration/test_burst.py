"""A burst: 100 messages sent at once over many sockets on PostgreSQL and Redis
each get exactly one run, in order per thread, and every reply is complete.
(No timing is asserted: bench/ measures how fast.)"""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.conftest import Socket

pytestmark = pytest.mark.integration

THREADS = 50
PER_THREAD = 2


@pytest.fixture
def burst_stack(tmp_path):
    """One owner sends the whole burst: the per-user abuse limits are lifted."""
    from tests.integration.conftest import Stack

    stack = Stack(
        tmp_path, PARLEY_MESSAGES_PER_MINUTE="0", PARLEY_MAX_ACTIVE_RUNS_PER_USER="0"
    ).start()
    try:
        yield stack
    finally:
        stack.stop()


async def test_a_burst_of_100_messages_gets_one_complete_run_each(burst_stack):
    stack = burst_stack
    setup = stack.setup_thread(tokens_per_second=200)
    tokens = setup["tokens"]
    threads = stack.python(
        "from chat.models import Thread, ThreadMember\n"
        f"first = Thread.objects.get(pk='{setup['thread']}')\n"
        "result = [str(first.pk)]\n"
        f"for n in range({THREADS - 1}):\n"
        "    t = Thread.objects.create(owner=first.owner, agent=first.agent, title=f'b{n}')\n"
        "    result.append(str(t.pk))\n"
    )
    web = stack.daphne()
    stack.worker()
    sockets = [Socket(web.ws_url(thread), tokens["owner"]) for thread in threads]
    for socket in sockets:
        await socket.__aenter__()
    try:
        for socket in sockets:
            assert (await socket.receive())["content"]["state"] == "connected"
            await socket.receive()  # the snapshot
        # Every message of the burst leaves before any reply is read.
        await asyncio.gather(
            *(
                socket.send({"type": "message", "content": f"{index} {n} done"})
                for n in range(PER_THREAD)
                for index, socket in enumerate(sockets)
            )
        )

        async def replies(socket: Socket) -> list[str]:
            texts = []
            while len(texts) < PER_THREAD:
                frame = await socket.receive(timeout=60)
                if frame["type"] == "state_complete":
                    assert frame["content"]["status"] == "completed", frame
                    texts.append(frame["content"]["text"])
            return texts

        results = await asyncio.gather(*(replies(socket) for socket in sockets))
    finally:
        for socket in sockets:
            await socket.__aexit__(None, None, None)
    for index, texts in enumerate(results):
        assert texts == [f"{index} {n} done" for n in range(PER_THREAD)]
    counts = stack.python(
        "from agents.models import Run\n"
        "from chat.models import Message\n"
        "result = [Run.objects.count(), Message.objects.filter(role='user').count(),"
        " Run.objects.exclude(status='completed').count()]\n"
    )
    assert counts == [THREADS * PER_THREAD, THREADS * PER_THREAD, 0]
