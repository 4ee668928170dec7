"""What a socket needs to open a thread, kept per web process.

A connect used to cost five database queries (the API token, the thread, the
caller's membership, the latest messages, the runs in flight), about 7 ms of CPU
in Django's ORM on the thread that shares the GIL with the event loop: a burst
of connects was bound by it (bench/README.md, "Connections"). Connects to a
thread mostly ask for what the previous connect just read, so:

* `AccessCache`: API token -> user; thread -> the thread (with its agent and
  owner) and its members' roles. Any change to a Token, user, Thread,
  ThreadMember or AgentConfig is broadcast after its commit to every web
  process (chat/signals.py, the event log's broadcasts) and drops what it may
  touch. Nothing is cached while this process might miss a broadcast (its
  Redis subscriber is down), and entries expire after
  PARLEY_CONNECT_CACHE_SECONDS for changes made behind Django's back
  (`QuerySet.update`, SQL).
* `SnapshotCache`: thread -> the database part of its snapshot (latest
  messages, runs in flight), valid while the thread's last event id is the one
  it was read after. Every change to those rows is followed by an event
  (services publish after commit), so an unchanged id means rows a fresh read
  would also return, up to changes whose event is still on its way; a socket
  subscribes before it reads the id, so those reach it live, as they would
  after a fresh read. A lost Redis subscriber (Redis restarted: event ids start
  again) empties it.

Both are bounded in entries; the snapshot cache also in stored text.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from django.conf import settings

from chat.permissions import thread_role_for
from chat.selectors import (
    SocketAccess,
    snapshot_with_progress,
    thread_access_for_socket,
    thread_snapshot_rows,
)
from realtime.eventlog import (
    EventLog,
    ThreadLogState,
    bound_to_event_log,
    get_event_log,
)
from realtime.events import call_service

logger = logging.getLogger(__name__)

MAX_TOKENS = 10_000
MAX_THREADS = 5_000
MAX_SNAPSHOTS = 2_000
MAX_SNAPSHOT_CHARS = 8_000_000  # message text held by all cached snapshots

# Broadcast messages (chat/signals.py sends them).
CHANGED_EVERYTHING = "access *"
CHANGED_TOKENS = "access tokens"
CHANGED_THREAD_PREFIX = "access thread "
CHANGED_MEMBERS_PREFIX = "access members "
CHANGED_USER_PREFIX = "access user "


def changed_thread(thread_id) -> str:
    """The thread's row changed (title, config, agent)."""
    return f"{CHANGED_THREAD_PREFIX}{thread_id}"


def changed_members(thread_id) -> str:
    """Who may open the thread changed: a member added, removed or given another
    role, or the thread deleted (chat/access.py acts on open connections)."""
    return f"{CHANGED_MEMBERS_PREFIX}{thread_id}"


def changed_thread_id(message: str) -> str | None:
    """The thread a thread or members notice names, else None."""
    for prefix in (CHANGED_THREAD_PREFIX, CHANGED_MEMBERS_PREFIX):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return None


def changed_user(user_id) -> str:
    """A user changed (deactivated, staff or not, renamed, a token deleted)."""
    return f"{CHANGED_USER_PREFIX}{user_id}"


@dataclass
class _ThreadEntry:
    expires_at: float
    thread: object
    member_roles: dict


class AccessCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.lock = threading.Lock()
        self.generation = 0  # bumped by every drop: a read older than it is stale
        self.tokens: OrderedDict[str, tuple[float, object]] = OrderedDict()
        self.threads: OrderedDict[str, _ThreadEntry] = OrderedDict()

    def lookup(self, *, thread_id: str, user, token_key: str | None):
        now = time.monotonic()
        with self.lock:
            if token_key is not None:
                cached = self.tokens.get(token_key)
                if cached is None or cached[0] < now:
                    return None
                user = cached[1]
            entry = self.threads.get(thread_id)
            if entry is None or entry.expires_at < now:
                return None
        # Each socket gets its own copy: services assign to the thread they get.
        return SocketAccess(
            user=user,
            thread=copy.copy(entry.thread),
            role=thread_role_for(
                thread=entry.thread,
                user=user,
                member_role=entry.member_roles.get(user.pk),
            ),
        )

    def store(self, *, generation: int, token_key: str | None, access: SocketAccess):
        expires_at = time.monotonic() + self.ttl
        with self.lock:
            if generation != self.generation:
                return  # something changed while it was read
            if token_key is not None and access.user.is_authenticated:
                self.tokens[token_key] = (expires_at, access.user)
                _trim(self.tokens, MAX_TOKENS)
            if access.thread is not None and access.member_roles is not None:
                self.threads[str(access.thread.pk)] = _ThreadEntry(
                    expires_at, copy.copy(access.thread), access.member_roles
                )
                _trim(self.threads, MAX_THREADS)

    def drop(self, message: str | None) -> None:
        with self.lock:
            self.generation += 1
            if message == CHANGED_TOKENS:
                self.tokens.clear()
            elif message is not None and changed_thread_id(message):
                self.threads.pop(changed_thread_id(message), None)
            else:
                self.tokens.clear()
                self.threads.clear()


@dataclass
class _Snapshot:
    last_event_id: int
    expires_at: float
    rows: dict
    chars: int


class SnapshotCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.generation = 0
        self.entries: OrderedDict[str, _Snapshot] = OrderedDict()
        self.chars = 0
        self.reading: dict[tuple[str, int, int], asyncio.Future] = {}

    async def rows(self, *, thread, last_event_id: int, live: bool) -> dict:
        thread_id = str(thread.pk)
        entry = self.entries.get(thread_id)
        if (
            live
            and entry is not None
            and entry.last_event_id == last_event_id
            and entry.expires_at >= time.monotonic()
        ):
            return entry.rows
        key = (thread_id, last_event_id, self.generation)
        reading = self.reading.get(key)
        if reading is not None:  # a connect of the same thread is reading them
            return await asyncio.shield(reading)
        future = asyncio.get_running_loop().create_future()
        self.reading[key] = future
        try:
            rows = await call_service(thread_snapshot_rows, thread=thread)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: no warning when nobody else waits
            raise
        finally:
            if self.reading.get(key) is future:
                del self.reading[key]
        future.set_result(rows)
        if live and key[2] == self.generation:
            self._store(thread_id, last_event_id, rows)
        return rows

    def _store(self, thread_id: str, last_event_id: int, rows: dict) -> None:
        chars = sum(len(message["text"]) for message in rows["messages"])
        if chars > MAX_SNAPSHOT_CHARS // 8:
            return
        old = self.entries.pop(thread_id, None)
        if old is not None:
            self.chars -= old.chars
        self.entries[thread_id] = _Snapshot(
            last_event_id, time.monotonic() + self.ttl, rows, chars
        )
        self.chars += chars
        while self.entries and (
            len(self.entries) > MAX_SNAPSHOTS or self.chars > MAX_SNAPSHOT_CHARS
        ):
            _, evicted = self.entries.popitem(last=False)
            self.chars -= evicted.chars

    def drop(self, message: str | None) -> None:
        if (
            message is None
            or message == CHANGED_EVERYTHING
            or message.startswith(CHANGED_USER_PREFIX)  # author names
        ):
            self.generation += 1
            self.entries.clear()
            self.chars = 0
        elif changed_thread_id(message):
            # Not needed for correctness (rows follow event ids), but a
            # changed thread's rows are worth reading again.
            old = self.entries.pop(changed_thread_id(message), None)
            if old is not None:
                self.chars -= old.chars


def _trim(entries: OrderedDict, limit: int) -> None:
    while len(entries) > limit:
        entries.popitem(last=False)


class _Caches:
    def __init__(self, log: EventLog) -> None:
        ttl = settings.PARLEY_CONNECT_CACHE_SECONDS
        self.log = log
        self.access = AccessCache(ttl)
        self.snapshots = SnapshotCache(ttl)
        log.add_broadcast_listener(self._heard)

    def _heard(self, message: str | None) -> None:
        if message is None or message.startswith("access "):
            self.access.drop(message)
            self.snapshots.drop(message)


# The caches of the process's event log (tests replace the log).
_current = bound_to_event_log(_Caches)


def _enabled() -> bool:
    return settings.PARLEY_CONNECT_CACHE_SECONDS > 0


async def socket_access(*, thread_id: str, user, token_key: str | None):
    """`chat.selectors.thread_access_for_socket`, from the cache when it can."""
    if not _enabled():
        return await call_service(
            thread_access_for_socket,
            thread_id=thread_id,
            user=user,
            token_key=token_key,
        )
    caches = _current()
    live = caches.log.broadcasts_live()
    if live:
        found = caches.access.lookup(
            thread_id=thread_id, user=user, token_key=token_key
        )
        if found is not None:
            return found
    generation = caches.access.generation
    access = await call_service(
        thread_access_for_socket,
        thread_id=thread_id,
        user=user,
        token_key=token_key,
        with_member_roles=live,
    )
    if live and caches.log.broadcasts_live():
        caches.access.store(generation=generation, token_key=token_key, access=access)
    return access


async def socket_snapshot(*, thread, log_state: ThreadLogState) -> dict:
    """`chat.selectors.thread_snapshot`, its database part from the cache when
    the thread has had no event since it was read."""
    if not _enabled():
        rows = await call_service(thread_snapshot_rows, thread=thread)
    else:
        caches = _current()
        rows = await caches.snapshots.rows(
            thread=thread,
            last_event_id=log_state.last_event_id,
            live=caches.log.broadcasts_live(),
        )
    return snapshot_with_progress(rows, log_state)


def broadcast_change(message: str) -> None:
    """Tell every web process, after the current transaction commits, that
    cached access data changed (chat/signals.py)."""
    from realtime.events import after_commit

    async def tell_everyone() -> None:
        _current()._heard(message)  # this process at once, whatever Redis does
        try:
            await get_event_log().broadcast(message)
        except Exception as error:  # the entries expire by themselves
            logger.warning("could not broadcast %r: %s", message, error)

    after_commit(tell_everyone)
