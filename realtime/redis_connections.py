"""Redis connections of the hot paths, through redis-py.

The event log publishes every chunk, reads on every connect and holds one
pub/sub subscription per process. All of it goes through redis-py: its
connection class (every URL kind it knows: `redis://`, `rediss://` with TLS,
`unix://`; AUTH and SELECT), its reply parser (hiredis's when installed), and
its errors. What is ours is only the batching: many commands written at once
and their replies read in order, because redis-py's pipeline object costs the
worker more CPU per command than Redis spends running the publish script.

Commands are packed by hiredis's `pack_command` (C) when hiredis is installed
(requirements.txt pins it); without it redis-py's own packer is used and
`packer_problem()` says so (in the log at start-up and in `manage.py check`),
since publishing then costs several times the CPU.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

try:
    from hiredis import pack_command as _hiredis_pack_command
except ImportError:  # pragma: no cover - hiredis is pinned; see packer_problem()
    _hiredis_pack_command = None

logger = logging.getLogger(__name__)

Command = Sequence[str | int | bytes]


class RedisReplyError(ConnectionError):
    """Redis answered a command with an error (loading, out of memory, ...);
    publishers retry as they do while the connection is down."""


class ScriptMissing(RedisReplyError):
    """NOSCRIPT: Redis restarted and forgot the script."""


def packer_problem() -> str | None:
    """Why commands are packed the slow way, or None when hiredis packs them."""
    if _hiredis_pack_command is None:
        return (
            "hiredis is not installed: the event log packs Redis commands with "
            "redis-py's Python packer, several times the CPU per published chunk"
        )
    return None


def check_packer(app_configs=None, **kwargs) -> list:
    """`manage.py check`: publishing on the slow packer (parley.W002)."""
    from django.conf import settings
    from django.core import checks

    problem = packer_problem()
    if problem is None or not settings.REDIS_URL:
        return []
    return [
        checks.Warning(
            problem,
            hint="pip install the hiredis version pinned in requirements.txt.",
            id="parley.W002",
        )
    ]


def log_packer_problem() -> None:
    """Say it at start-up (chat/apps.py), where it costs: on Redis."""
    from django.conf import settings

    problem = packer_problem()
    if problem is not None and settings.REDIS_URL:
        logger.warning("realtime/redis_connections.py: %s", problem)


def pack(connection: redis.Connection, commands: Iterable[Command]) -> list[bytes]:
    """Commands in RESP, ready for one write."""
    if _hiredis_pack_command is not None:
        return [b"".join(_hiredis_pack_command(tuple(c)) for c in commands)]
    return connection.pack_commands(commands)


def _reply_error(error: ResponseError) -> RedisReplyError:
    if isinstance(error, NoScriptError):
        return ScriptMissing(str(error))
    return RedisReplyError(str(error))


def connection_for(url: str, *, socket_timeout: float | None) -> redis.Connection:
    """A single redis-py connection (not pooled) to what `url` names."""
    # RESP2: pub/sub messages are replies read in order (redis-py 8 speaks
    # RESP3 by default, where they are push messages handled aside).
    options = {"decode_responses": True, "health_check_interval": 0, "protocol": 2}
    if not url.startswith("unix:"):  # TCP only: redis-py refuses it for unix://
        options["socket_keepalive"] = True
    pool = redis.ConnectionPool.from_url(
        url, socket_timeout=socket_timeout, socket_connect_timeout=10, **options
    )
    return pool.make_connection()


class CommandPipe:
    """One connection on one event loop: a batch of commands is written at once
    and their replies read in order. An error reply is that command's result
    (a `RedisReplyError`); any other failure closes the connection (replies
    would misalign) and raises a `ConnectionError` to every caller."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._connection: redis.Connection | None = None

    async def call(self, commands: list[Command]) -> list:
        try:
            async with asyncio.timeout(self.timeout):
                if self._connection is None:
                    self._connection = connection_for(self.url, socket_timeout=None)
                    await self._connection.connect()
                connection = self._connection
                await connection.send_packed_command(
                    pack(connection, commands), check_health=False
                )
                results = []
                for _ in commands:
                    try:
                        results.append(await connection.read_response(timeout=math.inf))
                    except ResponseError as error:
                        results.append(_reply_error(error))
                return results
        except BaseException as error:
            await self.close()
            if isinstance(error, RedisError):
                raise ConnectionError(str(error)) from error
            raise

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect(nowait=True)


@dataclass(frozen=True)
class Script:
    """A Lua script and its sha, run with EVALSHA (EVAL when Redis forgot it)."""

    text: str
    sha: str

    @classmethod
    def of(cls, text: str) -> Script:
        return cls(text, hashlib.sha1(text.encode()).hexdigest())


class CommandBatch:
    """Calls of one event loop gathered per loop turn onto one `CommandPipe`:
    a burst of connects (presence, the log's state, announcements) shares
    round trips."""

    def __init__(self, pipe: CommandPipe) -> None:
        self.pipe = pipe
        self.pending: list[tuple[Command, asyncio.Future]] = []
        self.flushing = False

    def call(self, *parts: str | int) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((parts, future))
        if not self.flushing:
            self.flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        return future

    async def _flush(self) -> None:
        try:
            while self.pending:
                await asyncio.sleep(0)  # let this loop turn's callers join in
                batch, self.pending = self.pending, []
                try:
                    results = await self.pipe.call([command for command, _ in batch])
                except Exception as error:  # connection lost: every caller fails
                    results = [error] * len(batch)
                settle([future for _, future in batch], results)
        finally:
            self.flushing = False

    async def script(self, script: Script, keys: list[str], args: list) -> object:
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except ScriptMissing:  # Redis restarted: EVAL loads it again
            return await self.call("EVAL", script.text, len(keys), *keys, *args)


def settle(futures: list[asyncio.Future], results: list) -> None:
    """Hand each caller of a batch its reply (an exception is raised to it)."""
    for future, result in zip(futures, results, strict=True):
        if future.done():
            continue
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)


class Subscription:
    """A pub/sub connection that never reconnects by itself (redis-py's PubSub
    reconnects and resubscribes silently): when it drops, `read` raises, and
    the caller knows events may be lost."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: redis.Connection | None = None

    async def connect(self) -> None:
        # No read timeout: a subscription is idle for as long as nothing is said.
        self._connection = connection_for(self.url, socket_timeout=None)
        try:
            await self._connection.connect()
        except RedisError as error:
            await self.close()
            raise ConnectionError(str(error)) from error

    async def send(self, *parts: str) -> None:
        """SUBSCRIBE / UNSUBSCRIBE (confirmed later, by `read`); another task
        may be reading meanwhile, as with redis-py's own PubSub."""
        connection = self._connection
        if connection is None or not connection.is_connected:
            raise ConnectionError("not connected to Redis")
        try:
            await connection.send_packed_command(
                pack(connection, [parts]), check_health=False
            )
        except RedisError as error:
            raise ConnectionError(str(error)) from error

    async def read(self) -> list:
        """The next message: `["message", channel, data]`, `["subscribe",
        channel, count]`, ...; ConnectionError when the connection is gone."""
        if self._connection is None:
            raise ConnectionError("not connected to Redis")
        try:
            return await self._connection.read_response(timeout=math.inf)
        except RedisError as error:
            raise ConnectionError(str(error)) from error

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect(nowait=True)
