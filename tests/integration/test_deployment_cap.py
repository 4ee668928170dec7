"""PARLEY_MAX_ACTIVE_RUNS across a deployment of two workers: past the cap a
message is refused with `server_busy`; once replies end there is room again."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Socket

pytestmark = pytest.mark.integration


def complete(frame):
    return frame["type"] == "state_complete"


async def test_the_cap_holds_for_the_whole_deployment(tmp_path):
    from tests.integration.conftest import Stack

    stack = Stack(
        tmp_path, PARLEY_MAX_ACTIVE_RUNS="2", PARLEY_MAX_ACTIVE_RUNS_PER_USER="0"
    ).start()
    try:
        setup = stack.setup_thread(tokens_per_second=20)
        tokens = setup["tokens"]
        threads = [setup["thread"]] + stack.python(
            "from chat.models import Thread\n"
            f"first = Thread.objects.get(pk='{setup['thread']}')\n"
            "result = [str(Thread.objects.create(owner=first.owner, agent=first.agent).pk)"
            " for _ in range(2)]\n"
        )
        web_a, web_b = stack.daphne(), stack.daphne()
        stack.worker()
        stack.worker()
        words = " ".join(f"w{i}" for i in range(40))  # two seconds a reply
        sockets = [
            Socket(web.ws_url(thread), tokens["owner"])
            for web, thread in zip((web_a, web_b, web_a), threads, strict=True)
        ]
        async with sockets[0] as one, sockets[1] as two, sockets[2] as three:
            for socket in (one, two, three):
                assert (await socket.receive())["content"]["state"] == "connected"
                await socket.receive()  # the snapshot
            for socket in (one, two):
                await socket.send({"type": "message", "content": words})
                await socket.receive_until(lambda f: f["type"] == "message")
            await three.send(
                {"type": "message", "content": "me too", "request_id": "3"}
            )
            refused = (await three.receive_until(lambda f: f["type"] == "error"))[-1]
            assert refused["content"]["code"] == "server_busy"
            assert refused["request_id"] == "3"
            for socket in (one, two):
                done = (await socket.receive_until(complete))[-1]
                assert done["content"]["text"] == words
            await three.send({"type": "message", "content": "room now"})
            done = (await three.receive_until(complete))[-1]
            assert done["content"]["text"] == "room now"
    finally:
        stack.stop()
