"""Thread events: build the frame, then publish it to the thread's event log.

Services call `publish_on_commit` (and, for other I/O such as channel-layer
sends, `after_commit`) inside their transaction, so an event never announces
something the database does not hold.

Async code calls services through `call_service`: the database work runs in
the database thread and the I/O that follows the commit runs back on the event
loop, in order, so the database thread never waits for the (busy) loop. Sync
callers (DRF views, management commands) do that I/O at commit through
`async_to_sync`. The worker, which streams, calls `publish` directly.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import uuid
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from asgiref.sync import async_to_sync
from channels.db import DatabaseSyncToAsync, database_sync_to_async
from django.conf import settings
from django.db import connections, transaction
from django.db.transaction import TransactionManagementError

from ops import metrics
from realtime.eventlog import Chunk, get_event_log
from realtime.protocol import ServerFrame, StatusFrame, event_json

logger = logging.getLogger(__name__)

AfterCommitAction = Callable[[], Awaitable[object]]

# The actions a service run by `call_service` left for its caller (per thread).
_outbox = threading.local()


async def publish(
    thread_id,
    frame: ServerFrame | str,
    *,
    chunk: Chunk | None = None,
    run_ended: str | None = None,
) -> int:
    """Publish a frame, or a chunk's event JSON already made (the worker's
    `response` frames: `chunk` says which run and place)."""
    if isinstance(frame, str):
        payload, frame_type, run_id = frame, "response", chunk.run_id
    else:
        payload, frame_type = event_json(frame), frame.type
        run_id = str(frame.run_id) if frame.run_id else ""
    metrics.event_published()
    return await get_event_log().publish(
        str(thread_id),
        payload,
        type=frame_type,
        run_id=run_id,
        chunk=chunk,
        run_ended=run_ended,
    )


def after_commit(action: AfterCommitAction) -> None:
    """Await `action()` once the current transaction commits: in the async
    caller when the service runs under `call_service`, else at once."""

    def committed() -> None:
        pending = getattr(_outbox, "actions", None)
        if pending is not None:
            pending.append(action)
        else:
            async_to_sync(action)()

    transaction.on_commit(committed)


class _Batch:
    """Items left for one `send_batch` by consecutive `after_commit_batched`
    calls of a transaction: sent together, in one call."""

    def __init__(self, send_batch: Callable[[list], Awaitable[object]]) -> None:
        self.send_batch = send_batch
        self.items: list = []

    def __call__(self) -> Awaitable[object]:
        return self.send_batch(self.items)


def after_commit_batched(send_batch: Callable[[list], Awaitable[object]], item) -> None:
    """Await `send_batch([item, ...])` once the transaction commits, with the
    items that the calls right before and after it left for the same
    `send_batch`: a burst's 100 run dispatches are one channel-layer message,
    not 100 (each a round trip for the sender and for the receiving worker)."""

    def committed() -> None:
        pending = getattr(_outbox, "actions", None)
        if pending is None:
            async_to_sync(send_batch)([item])
            return
        last = pending[-1] if pending else None
        if not (isinstance(last, _Batch) and last.send_batch is send_batch):
            last = _Batch(send_batch)
            pending.append(last)
        last.items.append(item)

    transaction.on_commit(committed)


def publish_on_commit(
    thread_id, frame: ServerFrame, *, run_ended: str | None = None
) -> None:
    after_commit(partial(publish, thread_id, frame, run_ended=run_ended))


_service_executor: ThreadPoolExecutor | None = None


def _run_in_service_thread(function: Callable) -> Awaitable:
    """channels' database_sync_to_async (fresh connections around the call),
    on one thread (SQLite) or a pool of PARLEY_SERVICE_THREADS (PostgreSQL)."""
    global _service_executor
    if settings.PARLEY_SERVICE_THREADS <= 1:
        return database_sync_to_async(function)()
    if _service_executor is None:
        _service_executor = ThreadPoolExecutor(
            settings.PARLEY_SERVICE_THREADS, thread_name_prefix="parley-service"
        )
    return DatabaseSyncToAsync(
        function, thread_sensitive=False, executor=_service_executor
    )()


async def call_service(service: Callable, /, **kwargs):
    """Run a synchronous service (or selector) in a database thread, then the
    I/O it left for after its commit (events, channel sends) here, in order."""
    actions: list[AfterCommitAction] = []

    def run():
        _outbox.actions = actions
        depths = atomic_depths()
        try:
            return service(**kwargs)
        finally:
            _outbox.actions = None
            end_leaked_transactions(service, depths)

    try:
        return await _run_in_service_thread(run)
    finally:
        await _perform(actions)


def atomic_depths() -> dict[str, int]:
    """How many atomic blocks each open connection of this thread is inside."""
    return {
        connection.alias: len(connection.atomic_blocks)
        for connection in connections.all(initialized_only=True)
    }


def end_leaked_transactions(service: Callable, depths: dict[str, int]) -> None:
    """Roll back the atomic blocks `service` entered and left open (`depths`:
    `atomic_depths()` before it ran). A service thread serves every caller, and
    a connection handed back inside an atomic block would hold its row locks
    for good (every later `atomic` there only makes a savepoint). Each leaked
    block is exited as if it raised, so Django rolls it back."""
    for connection in connections.all(initialized_only=True):
        depth = depths.get(connection.alias, 0)
        leaked = connection.atomic_blocks[depth:]
        if not leaked:
            continue
        name = getattr(service, "__qualname__", repr(service))
        logger.error(
            "%s left its database connection inside %d atomic block(s); rolled back",
            name,
            len(leaked),
        )
        error = TransactionManagementError(f"{name} left an atomic block open")
        for block in reversed(list(leaked)):
            try:
                block.__exit__(type(error), error, None)
            except Exception:
                logger.exception("rolling back %s's atomic block failed", name)


async def _perform(actions: list[AfterCommitAction]) -> None:
    """Await the actions in order. A run of publishes starts together: they
    enter the event log's batch in order and share one Redis round trip."""
    for is_publish, group in itertools.groupby(actions, key=_is_publish):
        group = list(group)
        batches = [group] if is_publish else [[action] for action in group]
        for batch in batches:
            results = await asyncio.gather(
                *(action() for action in batch), return_exceptions=True
            )
            for action, result in zip(batch, results, strict=True):
                if isinstance(result, Exception):  # committed: a snapshot shows it
                    logger.error("after-commit action %r failed: %r", action, result)


def _is_publish(action: AfterCommitAction) -> bool:
    return isinstance(action, partial) and action.func is publish


def run_status_frame(run, *, state: str, **extra) -> StatusFrame:
    """A `status` event about a run: queued, running, cancelling; `agent`
    names the run's agent (read from `run.agent`, which callers on the hot
    path have loaded with the run)."""
    return StatusFrame(
        content={"state": state, "run_id": str(run.id), **extra},
        thread_id=run.thread_id,
        run_id=run.id,
        agent=run.agent.name if run.agent_id else None,
    )


# Presence names connections "<process>!<n>": unique across processes without a
# uuid4 (a system call) per socket.
_process_prefix = uuid.uuid4().hex[:12]
_connection_numbers = itertools.count(1)


def new_connection_id() -> str:
    return f"{_process_prefix}!{next(_connection_numbers)}"


def presence_member(connection_id: str, user, role) -> str:
    """One connection's entry in a thread's presence (sockets and SSE streams)."""
    return f"{connection_id}|{user.username}|{role.value}"


def presence_users(members: list[str]) -> list[dict]:
    """Who is connected: one entry per user, from "<connection>|<username>|<role>"."""
    users: dict[str, dict] = {}
    for member in members:
        _, username, role = member.rsplit("|", 2)
        entry = users.setdefault(
            username, {"username": username, "role": role, "connections": 0}
        )
        entry["connections"] += 1
    return sorted(users.values(), key=lambda user: user["username"])


def presence_frame(thread_id, members: list[str]) -> StatusFrame:
    return StatusFrame(
        content={"state": "presence", "users": presence_users(members)},
        thread_id=thread_id,
    )


# A thread's presence news leaves a process at most this often (seconds).
PRESENCE_ANNOUNCE_INTERVAL = 0.2


class PresenceNews:
    """Presence announcements of one process (event loop), coalesced per thread.

    A change is announced at once when the thread's last announcement from
    this process is older than PRESENCE_ANNOUNCE_INTERVAL; otherwise one
    announcement follows at the end of the interval, with the list read again
    then, so a burst of N connects costs a few announcements instead of N (each
    to every socket of the thread), and the last one always carries the list
    as it is after the burst.
    """

    def __init__(self, log) -> None:
        self.log = log
        self.last_sent: dict[str, float] = {}
        self.trailing: dict[str, asyncio.Task] = {}

    async def changed(self, thread_id: str, present: list[str]) -> None:
        """`present`: the thread's presence list just returned by presence_set."""
        if thread_id in self.trailing:
            return  # an announcement with a fresh list is due anyway
        loop = asyncio.get_running_loop()
        now = loop.time()
        last = self.last_sent.get(thread_id)
        if last is None or now - last >= PRESENCE_ANNOUNCE_INTERVAL:
            self._sent(thread_id, now)
            await self._announce(thread_id, present)
            return
        self.trailing[thread_id] = loop.create_task(
            self._trailing(thread_id, last + PRESENCE_ANNOUNCE_INTERVAL - now)
        )

    async def _trailing(self, thread_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        # From here a new change schedules another announcement: this one may
        # have read the list before it.
        del self.trailing[thread_id]
        self._sent(thread_id, asyncio.get_running_loop().time())
        try:
            await self._announce(thread_id, await self.log.presence_list(thread_id))
        except Exception as error:  # Redis away: the next change or snapshot tells
            logger.info("presence of thread %s not announced: %s", thread_id, error)

    async def _announce(self, thread_id: str, present: list[str]) -> None:
        from realtime.protocol import frame_json

        await self.log.announce(
            thread_id, frame_json(presence_frame(thread_id, present)), type="status"
        )

    def _sent(self, thread_id: str, now: float) -> None:
        self.last_sent[thread_id] = now
        if len(self.last_sent) > 10_000:
            horizon = now - PRESENCE_ANNOUNCE_INTERVAL
            self.last_sent = {
                key: sent for key, sent in self.last_sent.items() if sent >= horizon
            }


_presence_news: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def presence_news() -> PresenceNews:
    """This event loop's PresenceNews, for the process's current event log."""
    loop = asyncio.get_running_loop()
    log = get_event_log()
    news = _presence_news.get(loop)
    if news is None or news.log is not log:
        news = _presence_news[loop] = PresenceNews(log)
    return news
