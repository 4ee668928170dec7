"""Access changes reach open connections at once, on every web process.

Every socket and SSE stream registers here with its thread, its user and the
API token it was opened with. Whatever may take access away or change a role
is broadcast after its commit to every web process (chat/signals.py, through
the event log's broadcasts, the same notices that drop chat/connectcache.py's
caches): who may open a thread changed (`access members <id>`: a member
removed, added or given another role, the thread deleted), or a user changed
(`access user <id>`: deactivated, made staff or not, a token deleted).

On hearing one, a process at once holds the live events of the connections it
may touch, so that nothing published after the change reaches them before
they are checked; the broadcast travels on the same Redis connection as thread
events, ahead of anything published after it. Then it reads what those users
may do now, in one trip to the database, and for each connection: closes it
after an `error` frame (4404 thread deleted, 4403 removed, 4401 deactivated or
token revoked), or tells it its new role, and lets its held events go.

When this process may have missed broadcasts (its Redis subscriber was down),
it checks every connection once broadcasts flow again.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass
from typing import Protocol

from chat.connectcache import CHANGED_MEMBERS_PREFIX, CHANGED_USER_PREFIX
from chat.models import Role
from chat.permissions import access_now
from realtime import errors as close_codes
from realtime.errors import ErrorCode
from realtime.eventlog import EventLog, bound_to_event_log
from realtime.events import call_service

logger = logging.getLogger(__name__)

# Waits between checks while the database does not answer (connections stay held).
RETRY_SECONDS = (0.1, 0.5, 1.0, 2.0)


class Connection(Protocol):
    """A socket or an SSE stream, as this module sees it."""

    thread_id: str
    user_id: int
    token_key: str | None
    role: Role

    def hold_live(self) -> None:
        """Keep live events back (buffer them) until `release_live`."""

    async def release_live(self) -> None:
        """Deliver what was held, then live events as usual."""

    async def access_lost(self, close_code: int, code: ErrorCode, message: str) -> None:
        """Tell the client why, then close."""

    async def role_changed(self, role: Role) -> None:
        """Tell the client its new role and act on it from now on."""


class QueuedConnection:
    """A Connection whose live side is a queue another task reads: an event-log
    subscriber that holds live events back while access is checked, resyncs
    (`("lost",)`) when the reader falls `queue_limit` events behind, and
    passes `("event", Event)` on. Announcements (presence) are the sockets'.
    Subclasses say how access loss and role changes reach their reader."""

    queue_limit = 10_000

    def __init__(self, *, thread_id: str, user, token_key: str | None, role) -> None:
        self.thread_id, self.user_id, self.token_key = thread_id, user.pk, token_key
        self.role = role
        self.queue: asyncio.Queue[tuple] = asyncio.Queue()
        self.held: list[tuple] | None = None

    # event log subscriber
    async def deliver(self, event) -> None:
        if event.event_id == 0:
            return  # announcements (presence) are the sockets' business
        if self.held is not None:
            self.held.append(("event", event))
        elif self.queue.qsize() >= self.queue_limit:
            self.lost_continuity()
        else:
            self.queue.put_nowait(("event", event))

    def lost_continuity(self) -> None:
        self.queue.put_nowait(("lost",))

    # Connection
    def hold_live(self) -> None:
        if self.held is None:
            self.held = []

    async def release_live(self) -> None:
        held, self.held = self.held or [], None
        for item in held:
            self.queue.put_nowait(item)


@dataclass(frozen=True)
class Verdict:
    """What becomes of one connection: closed (with why) or kept with `role`."""

    role: Role | None = None
    close_code: int | None = None
    code: ErrorCode | None = None
    message: str = ""


def verdict_for(connection: Connection, found: dict) -> Verdict:
    """The verdict for `connection` from `chat.permissions.access_now`'s answer."""
    roles = found["roles"].get(connection.thread_id)
    if roles is None:
        return Verdict(
            close_code=close_codes.CLOSE_NOT_FOUND,
            code=ErrorCode.THREAD_NOT_FOUND,
            message="This thread was deleted.",
        )
    if connection.user_id in found["inactive"]:
        return Verdict(
            close_code=close_codes.CLOSE_NOT_AUTHENTICATED,
            code=ErrorCode.NOT_AUTHENTICATED,
            message="Your account was deactivated.",
        )
    if connection.token_key is not None and (
        connection.token_key not in found["live_tokens"]
    ):
        return Verdict(
            close_code=close_codes.CLOSE_NOT_AUTHENTICATED,
            code=ErrorCode.NOT_AUTHENTICATED,
            message="Your token was revoked.",
        )
    role = roles.get(connection.user_id)
    if role is None:
        return Verdict(
            close_code=close_codes.CLOSE_FORBIDDEN,
            code=ErrorCode.FORBIDDEN,
            message="You no longer have access to this thread.",
        )
    return Verdict(role=role)


class LiveAccess:
    """The open connections of one process (event loop) and their checks."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.by_thread: dict[str, set[Connection]] = {}
        self.by_user: dict[int, set[Connection]] = {}
        # Bumped by every notice heard: a connect that read its access before
        # a notice and registers after it is checked again (see `add`).
        self.generation = 0
        self.pending_threads: set[str] = set()
        self.pending_users: set[int] = set()
        self.pending_everything = False
        self.task: asyncio.Task | None = None
        log.add_broadcast_listener(self._heard)

    # --- registry -------------------------------------------------------------
    def add(self, connection: Connection, *, read_at_generation: int) -> None:
        """Register a connection whose access was read at `read_at_generation`."""
        self.by_thread.setdefault(connection.thread_id, set()).add(connection)
        self.by_user.setdefault(connection.user_id, set()).add(connection)
        if read_at_generation != self.generation:
            connection.hold_live()
            self.pending_threads.add(connection.thread_id)
            self._start()

    def remove(self, connection: Connection) -> None:
        for index, key in (
            (self.by_thread, connection.thread_id),
            (self.by_user, connection.user_id),
        ):
            connections = index.get(key)
            if connections is not None:
                connections.discard(connection)
                if not connections:
                    del index[key]

    # --- notices --------------------------------------------------------------
    def _heard(self, message: str | None) -> None:
        """A broadcast (None: some may have been missed). Runs in the event
        log's reader: hold what is touched now, check in a task of its own."""
        if message is None:
            self.pending_everything = True
        elif message.startswith(CHANGED_MEMBERS_PREFIX):
            thread_id = message[len(CHANGED_MEMBERS_PREFIX) :]
            self._hold(self.by_thread.get(thread_id, ()))
            self.pending_threads.add(thread_id)
        elif message.startswith(CHANGED_USER_PREFIX):
            try:
                user_id = int(message[len(CHANGED_USER_PREFIX) :])
            except ValueError:
                return
            self._hold(self.by_user.get(user_id, ()))
            self.pending_users.add(user_id)
        else:
            return
        self.generation += 1
        self._start()

    @staticmethod
    def _hold(connections) -> None:
        for connection in connections:
            connection.hold_live()

    def _start(self) -> None:
        if self.task is None or self.task.done():
            # A context of its own: a notice may be heard inside a caller's
            # async_to_sync (embedded mode), whose executor is gone by the time
            # the check calls into the database.
            self.task = asyncio.get_running_loop().create_task(
                self._check_pending(), context=contextvars.Context()
            )

    def _touched(self, connection: Connection) -> bool:
        return (
            connection.thread_id in self.pending_threads
            or connection.user_id in self.pending_users
        )

    async def _check_pending(self) -> None:
        attempt = 0
        while self.pending_threads or self.pending_users or self.pending_everything:
            if self.pending_everything and not self.log.broadcasts_live():
                await asyncio.sleep(RETRY_SECONDS[-1])  # notices may still be lost
                continue
            threads, users = self.pending_threads, self.pending_users
            everything = self.pending_everything
            self.pending_threads, self.pending_users = set(), set()
            self.pending_everything = False
            touched = {
                connection
                for connections in (
                    self.by_thread.values()
                    if everything
                    else [self.by_thread.get(thread_id, ()) for thread_id in threads]
                    + [self.by_user.get(user_id, ()) for user_id in users]
                )
                for connection in connections
            }
            try:
                await self._check(touched)
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database is away: keep holding
                logger.warning("checking access of open connections failed: %s", error)
                self.pending_threads |= threads
                self.pending_users |= users
                self.pending_everything |= everything
                await asyncio.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
                attempt += 1

    async def _check(self, connections: set[Connection]) -> None:
        if not connections:
            return
        user_ids_by_thread: dict[str, set[int]] = {}
        for connection in connections:
            user_ids_by_thread.setdefault(connection.thread_id, set()).add(
                connection.user_id
            )
        found = await call_service(
            access_now,
            user_ids_by_thread=user_ids_by_thread,
            token_keys={c.token_key for c in connections if c.token_key is not None},
        )
        for connection in connections:
            verdict = verdict_for(connection, found)
            try:
                if verdict.close_code is not None:
                    self.remove(connection)
                    await connection.access_lost(
                        verdict.close_code, verdict.code, verdict.message
                    )
                    continue
                if verdict.role != connection.role:
                    await connection.role_changed(verdict.role)
                if not self._touched(connection):  # else the next round releases
                    await connection.release_live()
            except Exception:  # that connection's failure is its own
                logger.exception("acting on an access change of a connection failed")


# The process's LiveAccess, for its current event log (tests replace the log).
live_access = bound_to_event_log(LiveAccess)
