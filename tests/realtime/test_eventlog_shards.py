"""The event log spread over several Redis servers (REDIS_EVENT_LOG_URLS): each
thread lives on one server, every thread works as on one Redis, broadcasts
reach every listener."""

from __future__ import annotations

import shutil
import uuid

import pytest
import redis.asyncio as redis

from realtime.eventlog import Chunk, Event, RedisEventLog, ShardedEventLog
from tests.eventually import eventually
from tests.integration.conftest import RedisServer

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server"
)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def deliver(self, event: Event) -> None:
        self.events.append(event)

    def lost_continuity(self) -> None:
        raise AssertionError("no continuity was lost")


@pytest.fixture
def two_servers(tmp_path):
    servers = []
    for n in range(2):
        (tmp_path / str(n)).mkdir()
        servers.append(RedisServer(tmp_path / str(n)))
        servers[-1].start()
    yield servers
    for server in servers:
        server.kill()


async def test_threads_spread_over_the_servers_and_each_streams_as_on_one(
    two_servers,
):
    log = ShardedEventLog(
        [
            RedisEventLog(url=server.url, max_events=50, ttl_seconds=60)
            for server in two_servers
        ]
    )
    clients = [redis.Redis.from_url(server.url) for server in two_servers]
    threads = [str(uuid.uuid4()) for _ in range(16)]
    recorders = {thread: Recorder() for thread in threads}
    heard: list[str | None] = []
    log.add_broadcast_listener(heard.append)
    try:
        for thread in threads:
            await log.subscribe(thread, recorders[thread])
        for thread in threads:
            run = str(uuid.uuid4())
            for index, word in enumerate(["one ", "two"]):
                frame = f'{{"type":"response","content":"{word}"}}'
                await log.publish(
                    thread,
                    frame,
                    type="response",
                    run_id=run,
                    chunk=Chunk(run, index, word, "one " if index else ""),
                )
        await eventually(
            lambda: all(len(recorder.events) == 2 for recorder in recorders.values())
        )

        # Each thread's log is on exactly the server it hashes to; both are used.
        homes = []
        for thread in threads:
            keys = [
                await client.exists(f"parley:{{{thread}}}:seq") for client in clients
            ]
            home = log.shards.index(log.shard_of(thread))
            assert keys == [1 if n == home else 0 for n in range(2)]
            homes.append(home)
        assert set(homes) == {0, 1}
        # Replay, state and presence as on one Redis.
        thread = threads[0]
        assert [e.event_id for e in await log.read_after(thread, 0)] == [1, 2]
        state = await log.thread_state(thread)
        assert (
            state.last_event_id == 2 and list(state.runs.values())[0].text == "one two"
        )
        assert await log.presence_set(thread, "c!1|ada|owner", True) == [
            "c!1|ada|owner"
        ]
        # Broadcasts (cache and access news) reach this process.
        await eventually(log.broadcasts_live)
        await log.broadcast("access user 7")
        await eventually(lambda: "access user 7" in heard)
    finally:
        for thread in threads:
            await log.unsubscribe(thread, recorders[thread])
        await log.close()
        for client in clients:
            await client.aclose()
