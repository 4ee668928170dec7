"""Receives on the Redis layer keep working from one test (event loop) to the next.

pytest gives every test a new event loop (production has one per process). These
two tests run in order on one channel: the first cancels receives while they
wait (as a test's teardown cancels its worker), the second needs contended
receives on that channel to work in its own loop (conftest's
`forget_receive_state` makes that so). Both check what a receiver notices:
every message sent arrives, exactly once.
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
    # One turn of the loop (not a wait for time): each receive runs to its first
    # wait, one on Redis, the others behind it for the channel.
    await asyncio.sleep(0)
    return receives


async def three_messages_through_contended_receives(layer) -> list[int]:
    receives = await start_receives(layer, 3)
    for index in range(3):
        await layer.send(CHANNEL, {"type": "test.message", "index": index})
    messages = await asyncio.wait_for(asyncio.gather(*receives), timeout=8)
    return sorted(message["index"] for message in messages)


async def test_receives_cancelled_while_waiting_do_not_stop_the_next_ones():
    layer = get_channel_layer()
    await layer.flush()
    waiting = await start_receives(layer, 3)
    for receive in waiting:
        receive.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert all(receive.cancelled() for receive in waiting)
    assert await three_messages_through_contended_receives(layer) == [0, 1, 2]


async def test_the_next_test_receives_on_the_same_channel():
    layer = get_channel_layer()
    assert await three_messages_through_contended_receives(layer) == [0, 1, 2]
