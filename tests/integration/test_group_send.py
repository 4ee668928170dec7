"""`group_send` to `thread.<uuid>` from a separate process reaches the thread's
sockets on every daphne process, as a thread event that resume replays."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.conftest import Socket

pytestmark = pytest.mark.integration


async def synced(socket: Socket) -> int:
    assert (await socket.receive())["content"]["state"] == "connected"
    snapshot = await socket.receive()
    return snapshot["content"]["last_event_id"]


async def test_a_management_command_group_sends_to_sockets_on_two_daphnes(stack):
    setup = stack.setup_thread()
    thread, tokens = setup["thread"], setup["tokens"]
    web_a, web_b = stack.daphne(), stack.daphne()
    async with (
        Socket(web_a.ws_url(thread), tokens["owner"]) as on_a,
        Socket(web_b.ws_url(thread), tokens["observer"]) as on_b,
    ):
        before = await synced(on_a)
        assert await synced(on_b) == before
        # Another process: `manage.py shell -c`, as a cron job or task would.
        await asyncio.to_thread(
            stack.python,
            "from asgiref.sync import async_to_sync\n"
            "from channels.layers import get_channel_layer\n"
            "send = async_to_sync(get_channel_layer().group_send)\n"
            "for n in range(3):\n"
            f"    send('thread.{thread}', {{'type': 'thread.event', 'frame': "
            "{'type': 'status', 'content': {'state': 'notice', 'text': f'notice {n}'}}})\n"
            "result = True\n",
        )
        for socket in (on_a, on_b):
            frames = [await socket.receive(timeout=10) for _ in range(3)]
            assert [f["content"] for f in frames] == [
                {"state": "notice", "text": f"notice {n}", "level": "info"}
                for n in range(3)
            ]
            assert [f["event_id"] for f in frames] == [
                before + 1,
                before + 2,
                before + 3,
            ]
    # A socket that reconnects with an older last_event_id gets them replayed.
    async with Socket(
        web_b.ws_url(thread, f"last_event_id={before + 1}"), tokens["participant"]
    ) as again:
        assert (await again.receive())["content"]["state"] == "connected"
        replayed = [await again.receive() for _ in range(2)]
        assert [f["event_id"] for f in replayed] == [before + 2, before + 3]
        assert [f["content"]["text"] for f in replayed] == ["notice 1", "notice 2"]
