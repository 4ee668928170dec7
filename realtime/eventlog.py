"""The per-thread event log: ids, retention, live fan-out, resume.

Every event a thread broadcasts goes through `EventLog.publish`, which, in one
atomic step, assigns the thread's next `event_id`, appends the frame to a
bounded log, updates the text-so-far of the run a `response` chunk belongs to,
and fans the frame out to every live subscriber (one per socket).

* `MemoryEventLog` (embedded mode): all of it inside the process.
* `RedisEventLog` (production): one Lua script per event (INCR, XADD to a
  capped stream with a TTL, APPEND, PUBLISH), pipelined per process; each web
  process holds ONE subscriber connection and fans frames out to its own
  sockets, so a frame crosses Redis once per process, not once per socket. The
  subscriber fills gaps from the log, and when its connection drops (Redis
  restarted) it tells every local socket that continuity is lost, so each
  resynchronises from a snapshot instead of silently missing events.

Beside thread events the log carries broadcasts: short notices to every web
process (chat/connectcache.py drops cached access data with them). Only while
`broadcasts_live()` is true does a process hear every broadcast made from then
on; listeners get None when that stops (the subscriber lost Redis).

Frames are serialized once, by the producer, without `event_id`; the log
adds `"event_id":N` when it assigns N, and sockets forward the text as is. What
the log itself needs to know of an event (its id, type and run) travels beside
the text in an `Event`, never read back out of the JSON.
"""

from __future__ import annotations

import abc
import asyncio
import binascii
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from realtime.redis_connections import (
    CommandBatch,
    CommandPipe,
    Script,
    ScriptMissing,
    Subscription,
    settle,
)
from realtime.retry import Backoff

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """A thread event as the log carries it: id, type and run beside the
    frame's JSON (`text`, `event_id` included: sockets send it as is).
    `event_id` 0: an announcement, outside the log (see `EventLog.announce`)."""

    event_id: int
    type: str
    run_id: str  # "" when the frame belongs to no run
    text: str


class EventCursor:
    """One client's place in a thread's events (a socket's or an SSE stream's):
    the id it has been sent last, and the rules of docs/protocol.md that every
    event goes by — replay what it missed if the log still has all of it
    (else it needs a snapshot), then each live event once and in order: one
    already sent is skipped, the next is sent, one past a gap means events
    were lost (resync)."""

    SEEN, NEXT, GAP = "seen", "next", "gap"

    def __init__(self, last_event_id: int = 0) -> None:
        self.last_event_id = last_event_id

    async def missed(
        self, log: EventLog, thread_id: str, after: int | None
    ) -> list[Event] | None:
        """The events after `after` (the client's last event id), the cursor
        placed at `after`; None when the client needs a snapshot instead (no
        id, or the log no longer holds them all)."""
        if after is None:
            return None
        events = await log.read_after(thread_id, after)
        if events is not None:
            self.last_event_id = after
        return events

    def place(self, event: Event) -> str:
        if event.event_id <= self.last_event_id:
            return self.SEEN
        if event.event_id != self.last_event_id + 1:
            return self.GAP
        return self.NEXT

    def sent(self, event: Event) -> None:
        self.last_event_id = event.event_id


class Subscriber(Protocol):
    async def deliver(self, event: Event) -> None:
        """Forward one event; must not block for long (sockets apply back-pressure)."""

    def lost_continuity(self) -> None:
        """Events may have been lost (log gone, subscription dropped): resync."""


@dataclass(frozen=True)
class Chunk:
    """A `response` event's place in its run, so the log keeps the run's text so far."""

    run_id: str
    stream_index: int
    text: str
    text_before: str = ""  # the run's text before this chunk, to re-seed a lost log


@dataclass
class RunProgress:
    run_id: str
    next_stream_index: int
    text: str


@dataclass
class ThreadLogState:
    last_event_id: int
    runs: dict[str, RunProgress] = field(default_factory=dict)


def with_event_id(payload: str, event_id: int) -> str:
    """The frame's JSON (made without `event_id`) with its `event_id` added."""
    return f'{payload[:-1]},"event_id":{event_id}}}'


BroadcastListener = Callable[[str | None], None]


class EventLog(abc.ABC):
    def __init__(self, *, max_events: int, ttl_seconds: int, max_replay: int = 10_000):
        self.max_events = max_events
        self.ttl_seconds = ttl_seconds
        self.max_replay = max_replay
        self._broadcast_listeners: list[BroadcastListener] = []

    def add_broadcast_listener(self, listener: BroadcastListener) -> None:
        """Call `listener(message)` for every broadcast this process hears, and
        `listener(None)` when broadcasts may have been missed."""
        self._broadcast_listeners.append(listener)

    def _notify(self, message: str | None) -> None:
        for listener in list(self._broadcast_listeners):
            try:
                listener(message)
            except Exception:
                logger.exception("broadcast listener failed")

    def broadcasts_live(self) -> bool:
        """True while every broadcast made from now on reaches this process."""
        return True

    async def broadcast(self, message: str) -> None:
        """Send `message` to every web process (this one included)."""
        self._notify(message)

    @abc.abstractmethod
    async def publish(
        self,
        thread_id: str,
        payload: str,
        *,
        type: str,
        run_id: str = "",
        chunk: Chunk | None = None,
        run_ended: str | None = None,
    ) -> int:
        """Append one event (a frame's JSON without event_id, the frame's
        `type` and `run_id` beside it); return its event_id (0: a chunk
        already published, by a retried publish)."""

    @abc.abstractmethod
    async def read_after(self, thread_id: str, event_id: int) -> list[Event] | None:
        """Events after `event_id` in order, or None when they are not all in the window."""

    @abc.abstractmethod
    async def thread_state(self, thread_id: str) -> ThreadLogState:
        """The last event id and the text so far of runs in flight, read atomically."""

    @abc.abstractmethod
    async def subscribe(self, thread_id: str, subscriber: Subscriber) -> None:
        """Deliver the thread's live events to `subscriber`; returns once active."""

    @abc.abstractmethod
    async def unsubscribe(self, thread_id: str, subscriber: Subscriber) -> None: ...

    @abc.abstractmethod
    async def announce(self, thread_id: str, payload: str, *, type: str) -> None:
        """Send a frame (with `event_id` null) to the thread's live sockets, all
        processes, without logging it: ephemeral news such as presence."""

    @abc.abstractmethod
    async def presence_list(self, thread_id: str) -> list[str]:
        """Every connection present in the thread, all processes."""

    @abc.abstractmethod
    async def presence_set(
        self, thread_id: str, member: str, present: bool
    ) -> list[str]:
        """Add or remove one connection (`member`: "<connection>|<username>|<role>")
        from the thread's presence; return every connection present, all processes."""

    async def close(self) -> None:
        return None


# --- Embedded ---------------------------------------------------------------


@dataclass
class _MemoryThread:
    sequence: int = 0
    events: deque = field(default_factory=deque)
    runs: dict[str, RunProgress] = field(default_factory=dict)
    run_parts: dict[str, list[str]] = field(default_factory=dict)
    subscribers: set = field(default_factory=set)
    expires_at: float = 0.0


class MemoryEventLog(EventLog):
    """The event log of one process (embedded mode, tests)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._threads: dict[str, _MemoryThread] = {}
        self._presence: dict[str, set[str]] = {}

    def _thread(self, thread_id: str) -> _MemoryThread:
        thread = self._threads.get(thread_id)
        if thread is None:
            thread = self._threads[thread_id] = _MemoryThread(
                events=deque(maxlen=self.max_events)
            )
        return thread

    async def publish(
        self, thread_id, payload, *, type, run_id="", chunk=None, run_ended=None
    ) -> int:
        thread = self._thread(thread_id)
        now = time.monotonic()
        if thread.expires_at and thread.expires_at < now:
            thread.events.clear()
            thread.runs.clear()
            thread.run_parts.clear()
        thread.expires_at = now + self.ttl_seconds
        if chunk is not None:
            progress = thread.runs.get(chunk.run_id)
            if progress is None:
                progress = thread.runs[chunk.run_id] = RunProgress(chunk.run_id, 0, "")
                thread.run_parts[chunk.run_id] = []
            if chunk.stream_index < progress.next_stream_index:
                return 0  # already published (a retried publish)
            thread.run_parts[chunk.run_id].append(chunk.text)
            progress.next_stream_index = chunk.stream_index + 1
        if run_ended is not None:
            thread.runs.pop(run_ended, None)
            thread.run_parts.pop(run_ended, None)
        thread.sequence += 1
        event_id = thread.sequence
        event = Event(event_id, type, run_id, with_event_id(payload, event_id))
        thread.events.append(event)
        # Deliver in the publisher's task: sends to sockets complete without
        # suspending, so events reach every subscriber in event_id order.
        await deliver_to_each(thread.subscribers, thread_id, event)
        return event_id

    async def read_after(self, thread_id, event_id):
        thread = self._threads.get(thread_id)
        sequence = thread.sequence if thread else 0
        if event_id > sequence:
            return None
        if event_id == sequence:
            return []
        if sequence - event_id > self.max_replay or not thread.events:
            return None
        if thread.events[0].event_id > event_id + 1:
            return None
        return [event for event in thread.events if event.event_id > event_id]

    async def thread_state(self, thread_id):
        thread = self._threads.get(thread_id)
        if thread is None:
            return ThreadLogState(last_event_id=0)
        runs = {
            run_id: RunProgress(
                run_id, progress.next_stream_index, "".join(thread.run_parts[run_id])
            )
            for run_id, progress in thread.runs.items()
        }
        return ThreadLogState(last_event_id=thread.sequence, runs=runs)

    async def subscribe(self, thread_id, subscriber):
        self._thread(thread_id).subscribers.add(subscriber)

    async def unsubscribe(self, thread_id, subscriber):
        thread = self._threads.get(thread_id)
        if thread is not None:
            thread.subscribers.discard(subscriber)

    async def announce(self, thread_id, payload, *, type):
        thread = self._threads.get(thread_id)
        if thread is not None:
            await deliver_to_each(
                thread.subscribers, thread_id, Event(0, type, "", payload)
            )

    async def presence_list(self, thread_id):
        return sorted(self._presence.get(thread_id, ()))

    async def presence_set(self, thread_id, member, present):
        members = self._presence.setdefault(thread_id, set())
        (members.add if present else members.discard)(member)
        return sorted(members)


# --- Redis ------------------------------------------------------------------

# KEYS: 1 sequence, 2 log stream, 3 runs hash (run_id -> next stream_index),
#       4 the run's text (chunk/end only; else any key of the thread)
# ARGV: 1 payload, 2 pub/sub channel, 3 max events, 4 ttl, 5 mode (""|chunk|end),
#       6 run_id of chunk/end, 7 stream_index, 8 chunk text, 9 "1" when 10 is a
#       seed, 10 seed text, 11 the frame's type, 12 the frame's run_id
# The log keeps each event's type and run beside its text; pub/sub carries
# "<event_id> <type> <run_id> <text>" (the record `_event_of_message` reads).
PUBLISH_SCRIPT = """
local mode = ARGV[5]
if mode == 'chunk' then
  local index = tonumber(ARGV[7])
  local expected = redis.call('HGET', KEYS[3], ARGV[6])
  if expected then
    expected = tonumber(expected)
  elseif index > 0 then
    if ARGV[9] ~= '1' then return -1 end
    redis.call('SET', KEYS[4], ARGV[10])
    expected = index
  else
    expected = 0
  end
  if index < expected then return 0 end
  redis.call('APPEND', KEYS[4], ARGV[8])
  redis.call('HSET', KEYS[3], ARGV[6], index + 1)
  redis.call('EXPIRE', KEYS[4], ARGV[4])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
elseif mode == 'end' then
  redis.call('HDEL', KEYS[3], ARGV[6])
  redis.call('DEL', KEYS[4])
end
local id = redis.call('INCR', KEYS[1])
if id == 1 then redis.call('DEL', KEYS[2]) end
local payload = string.sub(ARGV[1], 1, -2) .. ',"event_id":' .. id .. '}'
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], id .. '-0',
  'p', payload, 't', ARGV[11], 'r', ARGV[12])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[2], id .. ' ' .. ARGV[11] .. ' ' .. ARGV[12] .. ' ' .. payload)
return id
"""

# KEYS: 1 sequence, 2 log stream. ARGV: 1 after, 2 max events to replay.
# Returns {sequence, complete (1|0), event_id, type, run_id, payload, ...}
READ_AFTER_SCRIPT = """
local sequence = tonumber(redis.call('GET', KEYS[1]) or '0')
local after = tonumber(ARGV[1])
if after > sequence then return {sequence, 0} end
if after == sequence then return {sequence, 1} end
if sequence - after > tonumber(ARGV[2]) then return {sequence, 0} end
local entries = redis.call('XRANGE', KEYS[2], (after + 1) .. '-0', '+')
if #entries == 0 then return {sequence, 0} end
local first = tonumber(string.match(entries[1][1], '^(%d+)'))
if first ~= after + 1 then return {sequence, 0} end
local out = {sequence, 1}
for i = 1, #entries do
  local fields = {}
  local values = entries[i][2]
  for j = 1, #values, 2 do fields[values[j]] = values[j + 1] end
  -- an entry without its type (written before types were kept): no replay
  if not fields['t'] then return {sequence, 0} end
  out[#out + 1] = string.match(entries[i][1], '^(%d+)')
  out[#out + 1] = fields['t']
  out[#out + 1] = fields['r'] or ''
  out[#out + 1] = fields['p']
end
return out
"""

# KEYS: 1 sequence, 2 runs hash. ARGV: 1 prefix of run text keys.
# Returns {sequence, run_id, next_index, text, run_id, ...}
STATE_SCRIPT = """
local out = {tonumber(redis.call('GET', KEYS[1]) or '0')}
local runs = redis.call('HGETALL', KEYS[2])
for i = 1, #runs, 2 do
  out[#out + 1] = runs[i]
  out[#out + 1] = runs[i + 1]
  out[#out + 1] = redis.call('GET', ARGV[1] .. runs[i]) or ''
end
return out
"""


# KEYS: 1 presence zset. ARGV: 1 now, 2 ttl, 3 member, 4 "1" add / "0" remove.
PRESENCE_SCRIPT = """
local now = tonumber(ARGV[1])
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
else
  redis.call('ZREM', KEYS[1], ARGV[3])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
# A process re-announces its connections this often; a dead process's vanish
# PRESENCE_TTL_SECONDS after its last announcement.
PRESENCE_REFRESH_SECONDS = 20
PRESENCE_TTL_SECONDS = 60


# The pub/sub channel of broadcasts (no thread: not under a `{thread}` hash tag).
BROADCAST_CHANNEL = "parley:broadcast"


def _keys(thread_id: str) -> tuple[str, str, str, str, str]:
    base = f"parley:{{{thread_id}}}"
    return (
        f"{base}:seq",
        f"{base}:log",
        f"{base}:runs",
        f"{base}:text:",
        f"{base}:events",
    )


def _event_message(event: Event) -> str:
    """An event as one pub/sub message (the format PUBLISH_SCRIPT writes)."""
    return f"{event.event_id} {event.type} {event.run_id} {event.text}"


def _event_of_message(message: str) -> Event:
    event_id, type, run_id, text = message.split(" ", 3)
    return Event(int(event_id), type, run_id, text)


# Once batches hold PUBLISH_BATCH_BUSY publishes or more, a process starts one
# at most every PUBLISH_BATCH_INTERVAL seconds.
PUBLISH_BATCH_INTERVAL = 0.002
PUBLISH_BATCH_BUSY = 8


class _LoopConnection:
    """A Redis client, the publish connection and the publish batch, and the
    connect path's command batch of one event loop: connections belong to the
    loop that opened them, and synchronous callers (`async_to_sync` outside a
    server) each bring a loop of their own."""

    def __init__(self, client, pipe: CommandPipe, commands: CommandBatch) -> None:
        self.client = client
        self.pipe = pipe
        self.commands = commands
        self.pending: list[tuple[tuple, list, asyncio.Future]] = []
        self.flushing = False
        self.last_batch_at = float("-inf")
        self.last_batch_size = 0


class RedisEventLog(EventLog):
    def __init__(self, *, url: str, socket_timeout: float = 30.0, **kwargs) -> None:
        super().__init__(**kwargs)
        from redis.asyncio.connection import parse_url

        parse_url(url)  # a URL redis-py cannot use fails here, naming the schemes
        self.url = url
        self._client_options = {
            "decode_responses": True,
            "socket_timeout": socket_timeout,
            "health_check_interval": 30,
        }
        if not url.startswith("unix:"):  # TCP only: redis-py refuses it for unix://
            self._client_options["socket_keepalive"] = True
        self._loops: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._publish_script = Script.of(PUBLISH_SCRIPT)
        self._read_script = Script.of(READ_AFTER_SCRIPT)
        self._state_script = Script.of(STATE_SCRIPT)
        self._presence_script = Script.of(PRESENCE_SCRIPT)
        self._local_presence: dict[str, set[str]] = {}
        self._presence_task: asyncio.Task | None = None
        self._socket_timeout = socket_timeout
        self._listener = _RedisFanOut(self)

    @property
    def _connection(self) -> _LoopConnection:
        loop = asyncio.get_running_loop()
        connection = self._loops.get(loop)
        if connection is None:
            import redis.asyncio as redis

            # A burst of connects asks for many connections at once: wait for
            # one (redis-py's default pool fails past 100 instead).
            pool = redis.BlockingConnectionPool.from_url(
                self.url, max_connections=64, timeout=20, **self._client_options
            )
            client = redis.Redis.from_pool(pool)
            pipe = CommandPipe(self.url, self._socket_timeout)
            commands = CommandBatch(CommandPipe(self.url, self._socket_timeout))
            connection = self._loops[loop] = _LoopConnection(client, pipe, commands)
        return connection

    @property
    def _redis(self):
        return self._connection.client

    # Producer side: every publish of this process in one batch per loop turn.
    async def publish(
        self, thread_id, payload, *, type, run_id="", chunk=None, run_ended=None
    ) -> int:
        seq_key, log_key, runs_key, text_prefix, channel = _keys(thread_id)
        entry_run = chunk.run_id if chunk else (run_ended or "")
        mode = "chunk" if chunk else ("end" if run_ended else "")
        keys = (seq_key, log_key, runs_key, text_prefix + entry_run)
        args = [
            payload,
            channel,
            self.max_events,
            self.ttl_seconds,
            mode,
            entry_run,
            chunk.stream_index if chunk else 0,
            chunk.text if chunk else "",
            "0",
            "",
            type,
            run_id,
        ]
        event_id = await self._enqueue(keys, args)
        if event_id == -1:  # the log lost the run's text (Redis restarted): re-seed
            args[8:10] = ["1", chunk.text_before]
            event_id = await self._enqueue(keys, args)
        return int(event_id)

    def _enqueue(self, keys, args) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        connection = self._connection
        future = loop.create_future()
        connection.pending.append((keys, args, future))
        if not connection.flushing:
            connection.flushing = True
            loop.create_task(self._flush(connection))
        return future

    async def _flush(self, connection: _LoopConnection) -> None:
        loop = asyncio.get_running_loop()
        script = self._publish_script
        try:
            while connection.pending:
                # Under a heavy stream (the last batch was full), gather
                # publishes for a moment: a batch costs about one write however
                # many it holds. At light load each goes at once.
                if connection.last_batch_size >= PUBLISH_BATCH_BUSY:
                    wait = (
                        connection.last_batch_at + PUBLISH_BATCH_INTERVAL - loop.time()
                    )
                    if wait > 0:
                        await asyncio.sleep(wait)
                connection.last_batch_at = loop.time()
                batch, connection.pending = connection.pending, []
                connection.last_batch_size = len(batch)
                try:
                    results = await connection.pipe.call(
                        [
                            ("EVALSHA", script.sha, len(keys), *keys, *args)
                            for keys, args, _ in batch
                        ]
                    )
                    if any(isinstance(result, ScriptMissing) for result in results):
                        # Redis restarted and forgot the script: load it, run again.
                        await connection.pipe.call([("SCRIPT", "LOAD", script.text)])
                        results = await connection.pipe.call(
                            [
                                ("EVALSHA", script.sha, len(keys), *keys, *args)
                                for keys, args, _ in batch
                            ]
                        )
                except Exception as error:  # connection lost: every caller retries
                    results = [error] * len(batch)
                settle([future for _, _, future in batch], results)
        finally:
            connection.flushing = False

    async def read_after(self, thread_id, event_id):
        seq_key, log_key, *_ = _keys(thread_id)
        result = await self._connection.commands.script(
            self._read_script, [seq_key, log_key], [event_id, self.max_replay]
        )
        if int(result[1]) != 1:
            return None
        return [
            Event(int(result[index]), *result[index + 1 : index + 4])
            for index in range(2, len(result), 4)
        ]

    async def thread_state(self, thread_id):
        seq_key, _, runs_key, text_prefix, _ = _keys(thread_id)
        result = await self._connection.commands.script(
            self._state_script, [seq_key, runs_key], [text_prefix]
        )
        state = ThreadLogState(last_event_id=int(result[0]))
        for index in range(1, len(result), 3):
            run_id = result[index]
            state.runs[run_id] = RunProgress(
                run_id, int(result[index + 1]), result[index + 2]
            )
        return state

    async def subscribe(self, thread_id, subscriber):
        await self._listener.add(thread_id, subscriber)

    async def unsubscribe(self, thread_id, subscriber):
        await self._listener.remove(thread_id, subscriber)

    async def announce(self, thread_id, payload, *, type):
        await self._connection.commands.call(
            "PUBLISH", _keys(thread_id)[4], _event_message(Event(0, type, "", payload))
        )

    def broadcasts_live(self) -> bool:
        self._listener._ensure_running()
        return self._listener.broadcast_ready

    async def broadcast(self, message: str) -> None:
        await self._redis.publish(BROADCAST_CHANNEL, message)

    async def presence_list(self, thread_id):
        key = f"parley:{{{thread_id}}}:presence"
        return await self._connection.commands.call(
            "ZRANGEBYSCORE", key, repr(time.time()), "+inf"
        )

    async def presence_set(self, thread_id, member, present):
        local = self._local_presence.setdefault(thread_id, set())
        (local.add if present else local.discard)(member)
        if not local:
            del self._local_presence[thread_id]
        if self._presence_task is None or self._presence_task.done():
            self._presence_task = asyncio.get_running_loop().create_task(
                self._refresh_presence()
            )
        key = f"parley:{{{thread_id}}}:presence"
        return await self._connection.commands.script(
            self._presence_script,
            [key],
            [repr(time.time()), PRESENCE_TTL_SECONDS, member, "1" if present else "0"],
        )

    async def _refresh_presence(self) -> None:
        while True:
            await asyncio.sleep(PRESENCE_REFRESH_SECONDS)
            try:
                expires = time.time() + PRESENCE_TTL_SECONDS
                async with self._redis.pipeline(transaction=False) as pipe:
                    for thread_id, members in list(self._local_presence.items()):
                        if members:
                            pipe.zadd(
                                f"parley:{{{thread_id}}}:presence",
                                dict.fromkeys(members, expires),
                            )
                    await pipe.execute()
            except Exception as error:
                logger.info("refreshing presence failed: %s", error)

    async def close(self) -> None:
        if self._presence_task is not None:
            self._presence_task.cancel()
        await self._listener.close()
        connection = self._loops.pop(asyncio.get_running_loop(), None)
        if connection is not None:
            await connection.pipe.close()
            await connection.commands.pipe.close()
            await connection.client.aclose()


class _RedisFanOut:
    """One pub/sub connection per process, fanning events out to local sockets.

    On a `Subscription` (realtime/redis_connections.py), which never reconnects by
    itself, so that a dropped connection is always noticed and turned into
    resyncs.
    """

    def __init__(self, log: RedisEventLog) -> None:
        self.log = log
        self.subscribers: dict[str, set[Subscriber]] = {}
        self.last_seen: dict[str, int] = {}
        self._confirmations: dict[str, asyncio.Future] = {}
        self._subscription: Subscription | None = None
        self._connected: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        # Subscribed to BROADCAST_CHANNEL on the live connection.
        self.broadcast_ready = False

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._connected = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def add(self, thread_id: str, subscriber: Subscriber) -> None:
        self._ensure_running()
        subscribers = self.subscribers.setdefault(thread_id, set())
        subscribers.add(subscriber)
        await self._subscribe([thread_id])

    async def remove(self, thread_id: str, subscriber: Subscriber) -> None:
        subscribers = self.subscribers.get(thread_id)
        if not subscribers:
            return
        subscribers.discard(subscriber)
        if not subscribers:
            del self.subscribers[thread_id]
            self.last_seen.pop(thread_id, None)
            self._confirmations.pop(thread_id, None)
            if self._subscription is not None:
                try:
                    await self._subscription.send("UNSUBSCRIBE", _keys(thread_id)[4])
                except (ConnectionError, RuntimeError):
                    pass

    async def _subscribe(self, thread_ids: Iterable[str]) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout=10)
        loop = asyncio.get_running_loop()
        waits, channels = [], []
        for thread_id in thread_ids:
            future = self._confirmations.get(thread_id)
            if future is None:
                future = self._confirmations[thread_id] = loop.create_future()
                channels.append(_keys(thread_id)[4])
            waits.append(future)
        if channels:
            await self._subscription.send("SUBSCRIBE", *channels)
        await asyncio.wait_for(asyncio.gather(*waits), timeout=10)

    async def _run(self) -> None:
        backoff = Backoff(0.1)
        first = True
        while True:
            try:
                subscription = Subscription(self.log.url)
                await subscription.connect()
                self._subscription = subscription
                backoff.reset()
                self._confirmations.clear()
                await subscription.send("SUBSCRIBE", BROADCAST_CHANNEL)
                self._connected.set()
                if self.subscribers:
                    resubscribe = asyncio.get_running_loop().create_task(
                        self._resubscribe(resync=not first)
                    )
                    resubscribe.add_done_callback(_log_failure)
                first = False
                await self._read(subscription)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning("event subscriber lost Redis (%s); reconnecting", error)
                if self.broadcast_ready:
                    self.broadcast_ready = False
                    self.log._notify(None)
                # Events may be lost from now on: every socket holds its live
                # stream and resyncs (retrying until Redis answers again).
                for subscribers in list(self.subscribers.values()):
                    for subscriber in list(subscribers):
                        subscriber.lost_continuity()
                self._connected.clear()
                if self._subscription is not None:
                    await self._subscription.close()
                self._subscription = None
                for future in self._confirmations.values():
                    if not future.done():
                        future.cancel()
                self._confirmations.clear()
                self.last_seen.clear()
                await backoff.wait()

    async def _resubscribe(self, *, resync: bool) -> None:
        thread_ids = list(self.subscribers)
        await self._subscribe(thread_ids)
        if resync:
            # Events published while we were away may be gone from the log too.
            for thread_id in thread_ids:
                for subscriber in list(self.subscribers.get(thread_id, ())):
                    subscriber.lost_continuity()

    async def _read(self, subscription: Subscription) -> None:
        """Until the connection drops (it raises ConnectionError then)."""
        prefix_length = len("parley:{")
        while True:
            message = await subscription.read()
            if not isinstance(message, list) or len(message) < 3:
                continue
            kind, channel = message[0], message[1]
            if channel == BROADCAST_CHANNEL:
                if kind == "message":
                    self.log._notify(message[2])
                elif kind == "subscribe":
                    self.broadcast_ready = True
                continue
            if kind == "message":
                thread_id = channel[prefix_length : channel.index("}")]
                try:
                    await self._dispatch(thread_id, _event_of_message(message[2]))
                except Exception:  # never the subscription's end (see deliver_to_each)
                    logger.exception("dispatching an event of thread %s", thread_id)
            elif kind == "subscribe":
                thread_id = channel[prefix_length : channel.index("}")]
                future = self._confirmations.get(thread_id)
                if future is not None and not future.done():
                    future.set_result(True)

    async def _dispatch(self, thread_id: str, event: Event) -> None:
        subscribers = self.subscribers.get(thread_id)
        if not subscribers:
            return
        event_id = event.event_id
        if event_id == 0:  # an announcement: not part of the log
            await deliver_to_each(subscribers, thread_id, event)
            return
        last = self.last_seen.get(thread_id)
        events = [event]
        if last is not None:
            if event_id <= last:
                return  # duplicate
            if event_id > last + 1:  # a gap: fill it from the log
                try:
                    missed = await self.log.read_after(thread_id, last)
                except Exception as error:  # the log unreadable: resync these
                    logger.warning("filling a gap in thread %s: %s", thread_id, error)
                    missed = None
                if missed is None:
                    for subscriber in list(subscribers):
                        subscriber.lost_continuity()
                    self.last_seen[thread_id] = event_id
                    return
                events = [item for item in missed if item.event_id <= event_id]
        self.last_seen[thread_id] = event_id
        for item in events:
            await deliver_to_each(subscribers, thread_id, item)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._subscription is not None:
            await self._subscription.close()
            self._subscription = None


async def deliver_to_each(
    subscribers: Iterable[Subscriber], thread_id: str, event: Event
) -> None:
    """Deliver to every subscriber; what one raises (a socket closed meanwhile)
    is that subscriber's alone: logged, and it resyncs. It never reaches the
    loop that serves every other subscriber of the process."""
    for subscriber in list(subscribers):
        try:
            await subscriber.deliver(event)
        except Exception as error:
            logger.info(
                "delivering event %s of thread %s to one subscriber failed: %r",
                event.event_id,
                thread_id,
                error,
            )
            try:
                subscriber.lost_continuity()
            except Exception:
                logger.exception("a subscriber failed to resync")


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("resubscribing failed: %s", task.exception())


class ShardedEventLog(EventLog):
    """Threads spread over several Redis servers: each thread's keys, log and
    channel live on one of them, chosen by a stable hash of its id (crc32, as
    channels-redis shards its groups); broadcasts go through the first. Every
    server carries its share of the per-chunk load (one script call and one
    delivery per web process per chunk)."""

    def __init__(self, shards: list[RedisEventLog]) -> None:
        first = shards[0]
        super().__init__(
            max_events=first.max_events,
            ttl_seconds=first.ttl_seconds,
            max_replay=first.max_replay,
        )
        self.shards = shards

    def shard_of(self, thread_id: str) -> RedisEventLog:
        return self.shards[binascii.crc32(thread_id.encode()) % len(self.shards)]

    def add_broadcast_listener(self, listener: BroadcastListener) -> None:
        self.shards[0].add_broadcast_listener(listener)

    def broadcasts_live(self) -> bool:
        return self.shards[0].broadcasts_live()

    async def broadcast(self, message: str) -> None:
        await self.shards[0].broadcast(message)

    async def publish(self, thread_id, payload, **kwargs) -> int:
        return await self.shard_of(thread_id).publish(thread_id, payload, **kwargs)

    async def read_after(self, thread_id, event_id):
        return await self.shard_of(thread_id).read_after(thread_id, event_id)

    async def thread_state(self, thread_id):
        return await self.shard_of(thread_id).thread_state(thread_id)

    async def subscribe(self, thread_id, subscriber):
        await self.shard_of(thread_id).subscribe(thread_id, subscriber)

    async def unsubscribe(self, thread_id, subscriber):
        await self.shard_of(thread_id).unsubscribe(thread_id, subscriber)

    async def announce(self, thread_id, payload, *, type):
        await self.shard_of(thread_id).announce(thread_id, payload, type=type)

    async def presence_list(self, thread_id):
        return await self.shard_of(thread_id).presence_list(thread_id)

    async def presence_set(self, thread_id, member, present):
        return await self.shard_of(thread_id).presence_set(thread_id, member, present)

    async def close(self) -> None:
        for shard in self.shards:
            await shard.close()


# --- The process's event log --------------------------------------------------

_event_log: EventLog | None = None


def get_event_log() -> EventLog:
    global _event_log
    if _event_log is None:
        from django.conf import settings

        options = {
            "max_events": settings.PARLEY_EVENT_LOG_MAXLEN,
            "ttl_seconds": settings.PARLEY_EVENT_LOG_TTL_SECONDS,
        }
        if settings.REDIS_URL:
            shards = [
                RedisEventLog(
                    url=url, socket_timeout=settings.REDIS_SOCKET_TIMEOUT, **options
                )
                for url in settings.REDIS_EVENT_LOG_URLS
            ]
            _event_log = shards[0] if len(shards) == 1 else ShardedEventLog(shards)
        else:
            _event_log = MemoryEventLog(**options)
    return _event_log


def bound_to_event_log(make: Callable[[EventLog], object]) -> Callable[[], object]:
    """`get()` for one object per process made by `make(log)` (it keeps `.log`),
    made again when the process's event log is replaced (tests do, per test)."""
    current = None

    def get():
        nonlocal current
        log = get_event_log()
        if current is None or current.log is not log:
            current = make(log)
        return current

    return get


def reset_event_log() -> None:
    """Forget the process's event log (tests switch event loops between cases)."""
    global _event_log
    _event_log = None
