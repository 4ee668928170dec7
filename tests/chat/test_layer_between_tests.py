"""Receives on the Redis layer keep working from one test (event loop) to the next.

channels-redis binds a channel's receive lock to the loop that first waited on it;
a receive cancelled while waiting leaves that lock behind. These two tests run in
order: the first leaves such a lock, the second needs contended receives to work
in its own loop (conftest's `forget_receive_state` makes that so).
"""

import asyncio

import pytest
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer

pytestmark = pytest.mark.skipif(
    not isinstance(get_channel_layer(), RedisChannelLayer),
    reason="the embedded layer keeps no per-loop receive state",
)

CHANNEL = "parley.test-layer-between-tests"


async def start_receives(layer, count: int) -> list[asyncio.Future]:
    receives = [asyncio.ensure_future(layer.receive(CHANNEL)) for _ in range(count)]
    await asyncio.sleep(0.2)  # all of them waiting, one holding the lock
    return receives


async def test_cancelled_receives_leave_a_lock_behind():
    layer = get_channel_layer()
    await layer.flush()
    receives = await start_receives(layer, 3)
    for receive in receives:
        receive.cancel()
    await asyncio.gather(*receives, return_exceptions=True)
    assert CHANNEL in str(list(layer.receive_clean_locks.locks))


async def test_the_next_test_receives_on_the_same_channel():
    layer = get_channel_layer()
    receives = await start_receives(layer, 3)
    for index in range(3):
        await layer.send(CHANNEL, {"type": "test.message", "index": index})
    messages = await asyncio.wait_for(asyncio.gather(*receives), timeout=8)
    assert sorted(message["index"] for message in messages) == [0, 1, 2]
