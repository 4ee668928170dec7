"""The event log: ids, replay window, run text so far, and (hypothesis) that a client
following docs/protocol.md never loses or doubles a chunk, however its
disconnects and reconnects interleave with the stream. Runs on the in-process
log always and on Redis when REDIS_URL is set."""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime.eventlog import Chunk, Event, MemoryEventLog, RedisEventLog
from tests.eventually import eventually


def make_logs():
    logs = [
        ("memory", lambda: MemoryEventLog(max_events=50, ttl_seconds=60, max_replay=40))
    ]
    if os.environ.get("REDIS_URL"):
        logs.append(
            (
                "redis",
                lambda: RedisEventLog(
                    url=os.environ["REDIS_URL"],
                    max_events=50,
                    ttl_seconds=60,
                    max_replay=40,
                ),
            )
        )
    return logs


LOGS = make_logs()


def chunk_frame(run_id: str, index: int, text: str) -> str:
    return json.dumps(
        {"type": "response", "content": text, "run_id": run_id, "stream_index": index},
        separators=(",", ":"),
    )


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[int, str]] = []
        self.records: list[Event] = []

    async def deliver(self, event: Event) -> None:
        self.records.append(event)
        self.events.append((event.event_id, event.text))

    def lost_continuity(self) -> None:
        self.events.append((-1, ""))


@pytest.mark.parametrize(("name", "make_log"), LOGS, ids=[name for name, _ in LOGS])
async def test_ids_replay_and_run_text(name, make_log):
    log = make_log()
    thread = str(uuid.uuid4())
    run = str(uuid.uuid4())
    recorder = Recorder()
    await log.subscribe(thread, recorder)
    text = ""
    for index, word in enumerate(["alpha ", "beta ", "gamma"]):
        await log.publish(
            thread,
            chunk_frame(run, index, word),
            type="response",
            run_id=run,
            chunk=Chunk(run, index, word, text),
        )
        text += word
    await eventually(lambda: len(recorder.events) >= 3, what="pub/sub delivery")
    assert [event_id for event_id, _ in recorder.events] == [1, 2, 3]
    assert json.loads(recorder.events[0][1])["event_id"] == 1
    # Each event's id, type and run travel beside its text, live and replayed.
    assert [(e.event_id, e.type, e.run_id) for e in recorder.records] == [
        (1, "response", run),
        (2, "response", run),
        (3, "response", run),
    ]
    replayed = await log.read_after(thread, 1)
    assert [(e.event_id, e.type, e.run_id) for e in replayed] == [
        (2, "response", run),
        (3, "response", run),
    ]
    assert [json.loads(e.text)["content"] for e in replayed] == ["beta ", "gamma"]
    assert await log.read_after(thread, 3) == []
    assert await log.read_after(thread, 99) is None  # from the future: the log was lost
    state = await log.thread_state(thread)
    assert state.last_event_id == 3
    assert (
        state.runs[run].text == "alpha beta gamma"
        and state.runs[run].next_stream_index == 3
    )
    # A retried publish of a chunk already in the log is not applied twice.
    assert (
        await log.publish(
            thread,
            chunk_frame(run, 1, "beta "),
            type="response",
            run_id=run,
            chunk=Chunk(run, 1, "beta "),
        )
        == 0
    )
    await log.publish(
        thread,
        '{"type":"state_complete"}',
        type="state_complete",
        run_id=run,
        run_ended=run,
    )
    assert run not in (await log.thread_state(thread)).runs
    await log.unsubscribe(thread, recorder)
    await log.close()


@pytest.mark.parametrize(("name", "make_log"), LOGS, ids=[name for name, _ in LOGS])
async def test_events_older_than_the_window_are_not_replayed(name, make_log):
    log = make_log()
    thread = str(uuid.uuid4())
    for _ in range(120):
        await log.publish(thread, '{"type":"status","content":{}}', type="status")
    assert await log.read_after(thread, 1) is None  # beyond max_replay / max_events
    assert len(await log.read_after(thread, 100)) == 20
    await log.close()


class ProtocolClient:
    """A client that follows docs/protocol.md's rules and may drop its connection."""

    def __init__(self, log, thread: str) -> None:
        self.log = log
        self.thread = thread
        self.connected = False
        self.last_event_id: int | None = None
        self.text = ""
        self.next_index = 0
        self.applied_indices: list[int] = []

    async def deliver(self, event: Event) -> None:
        if self.connected:
            self.apply(event.event_id, event.text)

    def lost_continuity(self) -> None:
        self.connected = False

    def apply(self, event_id: int, payload: str) -> None:
        if self.last_event_id is not None and event_id <= self.last_event_id:
            return
        frame = json.loads(payload)
        assert self.last_event_id is None or event_id == self.last_event_id + 1
        self.last_event_id = event_id
        if frame["stream_index"] == self.next_index:
            self.text += frame["content"]
            self.applied_indices.append(frame["stream_index"])
            self.next_index += 1
        else:
            assert frame["stream_index"] < self.next_index

    async def connect(self, run_id: str) -> None:
        # Join the live stream first, then read the log, as the consumer does.
        await self.log.subscribe(self.thread, self)
        events = None
        if self.last_event_id is not None:
            events = await self.log.read_after(self.thread, self.last_event_id)
        if events is None:
            state = await self.log.thread_state(self.thread)
            progress = state.runs.get(run_id)
            self.text = progress.text if progress else ""
            self.next_index = progress.next_stream_index if progress else 0
            self.applied_indices = list(range(self.next_index))
            self.last_event_id = state.last_event_id
        else:
            for event in events:
                self.apply(event.event_id, event.text)
        self.connected = True

    async def disconnect(self) -> None:
        self.connected = False
        await self.log.unsubscribe(self.thread, self)


@pytest.mark.parametrize(("name", "make_log"), LOGS, ids=[name for name, _ in LOGS])
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    words=st.lists(
        st.text(alphabet="abcxyz ", min_size=1, max_size=6), min_size=1, max_size=60
    ),
    drops=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 70)), max_size=6),
)
def test_random_disconnects_never_lose_or_double_a_chunk(name, make_log, words, drops):
    async def scenario():
        log = make_log()
        thread, run = str(uuid.uuid4()), str(uuid.uuid4())
        client = ProtocolClient(log, thread)
        await client.connect(run)
        # (drop before chunk i, come back before chunk j): windows may overlap.
        leave_at = {i for i, _ in drops}
        back_at = {max(i, j) for i, j in drops}
        text = ""
        for index, word in enumerate(words):
            if index in leave_at and client.connected:
                await client.disconnect()
            if index in back_at and not client.connected:
                await client.connect(run)
            await log.publish(
                thread,
                chunk_frame(run, index, word),
                type="response",
                run_id=run,
                chunk=Chunk(run, index, word, text),
            )
            text += word
            if name == "redis":
                # One turn of the loop (not a wait): lets the fan-out deliver
                # between publishes, so deliveries interleave with (dis)connects.
                await asyncio.sleep(0)
        if not client.connected:
            await client.connect(run)
        try:
            await eventually(
                lambda: client.next_index >= len(words),
                timeout=5,
                every=0.01,
                what="every chunk reaching the client",
            )
        finally:
            await client.disconnect()
            await log.close()
        return client, text

    client, text = asyncio.run(scenario())
    assert client.text == text
    assert client.applied_indices == list(range(len(words)))


redis_only = pytest.mark.skipif(
    not os.environ.get("REDIS_URL"), reason="needs REDIS_URL (a real Redis)"
)


def redis_url_with_db(db: int) -> str:
    base = os.environ["REDIS_URL"].rsplit("/", 1)
    return (
        f"{base[0]}/{db}" if base[-1].isdigit() else f"{os.environ['REDIS_URL']}/{db}"
    )


@redis_only
async def test_the_log_lives_in_the_database_its_url_names_and_survives_a_script_flush():
    import redis.asyncio as redis

    url = redis_url_with_db(11)
    log = RedisEventLog(url=url, max_events=50, ttl_seconds=60)
    other = redis.Redis.from_url(url)
    thread_id = str(uuid.uuid4())
    recorder = Recorder()
    try:
        await log.subscribe(thread_id, recorder)
        run_id = str(uuid.uuid4())
        first = await log.publish(
            thread_id,
            chunk_frame(run_id, 0, "a "),
            type="response",
            run_id=run_id,
            chunk=Chunk(run_id, 0, "a "),
        )
        # Redis forgets its scripts (as after a restart): publishing loads it again.
        await other.script_flush()
        second = await log.publish(
            thread_id,
            chunk_frame(run_id, 1, "b"),
            type="response",
            run_id=run_id,
            chunk=Chunk(run_id, 1, "b", "a "),
        )

        assert (first, second) == (1, 2)
        assert await other.get(f"parley:{{{thread_id}}}:seq") == b"2"
        assert await other.get(f"parley:{{{thread_id}}}:text:{run_id}") == b"a b"
        state = await log.thread_state(thread_id)
        assert state.runs[run_id].text == "a b"
        await eventually(lambda: len(recorder.events) >= 2, what="both events")
        assert [event_id for event_id, _ in recorder.events] == [1, 2]
    finally:
        await other.delete(
            *[key async for key in other.scan_iter(f"parley:{{{thread_id}}}*")]
        )
        await other.aclose()
        await log.close()


class ClosedSocket(Recorder):
    """A subscriber whose socket has just closed: every delivery raises."""

    async def deliver(self, event: Event) -> None:
        raise ConnectionError("Attempt to send on a closed protocol")


@pytest.mark.parametrize(("name", "make_log"), LOGS, ids=[name for name, _ in LOGS])
async def test_a_subscriber_that_raises_never_touches_the_others(name, make_log):
    """A socket closed while announcements and events reach it: every other
    subscriber of the process keeps its stream, with no resync."""
    log = make_log()
    thread_id = str(uuid.uuid4())
    closed, healthy = ClosedSocket(), Recorder()
    try:
        await log.subscribe(thread_id, closed)
        await log.subscribe(thread_id, healthy)
        run_id = str(uuid.uuid4())
        for index in range(3):
            await log.announce(
                thread_id, '{"type":"status","event_id":null}', type="status"
            )
            await log.publish(
                thread_id,
                chunk_frame(run_id, index, f"t{index} "),
                type="response",
                run_id=run_id,
                chunk=Chunk(run_id, index, f"t{index} "),
            )
        await eventually(lambda: len([e for e, _ in healthy.events if e > 0]) == 3)
        assert [e for e, _ in healthy.events] == [0, 1, 0, 2, 0, 3]  # no -1: resync
        # The subscription itself is alive: later events still arrive.
        await log.publish(
            thread_id,
            chunk_frame(run_id, 3, "t3"),
            type="response",
            run_id=run_id,
            chunk=Chunk(run_id, 3, "t3"),
        )
        await eventually(lambda: healthy.events[-1][0] == 4)
    finally:
        await log.unsubscribe(thread_id, closed)
        await log.unsubscribe(thread_id, healthy)
        await log.close()


@pytest.mark.parametrize(
    "url, expected",
    [
        ("redis://:pw@10.0.0.5:6380/3", ("Connection", "10.0.0.5", 6380, "pw", 3)),
        ("rediss://u:p@h.example:6390/1", ("SSLConnection", "h.example", 6390, "p", 1)),
        ("unix:///run/redis.sock?db=2", ("UnixDomainSocketConnection", None, None, None, 2)),
    ],
)  # fmt: skip
def test_the_event_logs_own_connections_read_every_redis_url_kind(url, expected):
    """They are redis-py's connections: TLS and unix sockets as redis-py reads them."""
    from realtime.redis_connections import connection_for

    connection = connection_for(url, socket_timeout=None)
    assert (
        type(connection).__name__,
        getattr(connection, "host", None),
        getattr(connection, "port", None),
        connection.password,
        connection.db,
    ) == expected


def test_a_redis_url_of_another_kind_is_refused():
    with pytest.raises(ValueError, match="rediss://"):
        RedisEventLog(url="redis+sentinel://h:26379/0", max_events=50, ttl_seconds=60)


@pytest.mark.parametrize(("name", "make_log"), LOGS, ids=[name for name, _ in LOGS])
async def test_presence_lists_every_connection_until_it_leaves(name, make_log):
    log = make_log()
    thread_id = str(uuid.uuid4())
    try:
        assert await log.presence_set(thread_id, "c!1|ada|owner", True) == [
            "c!1|ada|owner"
        ]
        both = await log.presence_set(thread_id, "c!2|bob|observer", True)
        assert sorted(both) == ["c!1|ada|owner", "c!2|bob|observer"]
        assert sorted(await log.presence_list(thread_id)) == sorted(both)
        assert await log.presence_set(thread_id, "c!1|ada|owner", False) == [
            "c!2|bob|observer"
        ]
        assert await log.presence_list(str(uuid.uuid4())) == []  # another thread
    finally:
        await log.presence_set(thread_id, "c!2|bob|observer", False)
        await log.close()


@pytest.mark.parametrize(("name", "make_log"), LOGS, ids=[name for name, _ in LOGS])
async def test_a_broadcast_reaches_the_listeners_once_broadcasts_are_live(
    name, make_log
):
    log = make_log()
    heard: list = []
    log.add_broadcast_listener(heard.append)
    try:
        await eventually(log.broadcasts_live, what="broadcasts live")
        await log.broadcast("access user 7")
        await eventually(lambda: "access user 7" in heard, what="the broadcast")
        assert heard == ["access user 7"]
    finally:
        await log.close()


@pytest.mark.parametrize(("name", "make_log"), LOGS, ids=[name for name, _ in LOGS])
async def test_an_announcement_reaches_live_subscribers_and_is_not_replayed(
    name, make_log
):
    log = make_log()
    thread_id = str(uuid.uuid4())
    recorder = Recorder()
    try:
        await log.subscribe(thread_id, recorder)
        await log.announce(
            thread_id, '{"type":"status","event_id":null}', type="status"
        )
        await eventually(lambda: recorder.events, what="the announcement")
        assert recorder.events == [(0, '{"type":"status","event_id":null}')]
        assert await log.read_after(thread_id, 0) == []
        assert (await log.thread_state(thread_id)).last_event_id == 0
    finally:
        await log.unsubscribe(thread_id, recorder)
        await log.close()
