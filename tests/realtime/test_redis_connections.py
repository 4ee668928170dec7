"""The event log's Redis connections (realtime/redis_connections.py): redis-py's
connections and parser, commands packed by hiredis, and the slow packer said
out loud."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid

import pytest
import redis.asyncio as redis
from django.core.management import call_command

from realtime import redis_connections
from realtime.redis_connections import (
    CommandPipe,
    RedisReplyError,
    ScriptMissing,
    Subscription,
    pack,
)

redis_only = pytest.mark.skipif(
    not os.environ.get("REDIS_URL"), reason="needs REDIS_URL (a real Redis)"
)
COMMANDS = [
    ("EVALSHA", "f" * 40, 2, "parley:{t}:seq", "parley:{t}:log", "é ünïcode", 7),
    ("PUBLISH", "channel", '{"type":"response","content":"hi"}'),
]


def test_hiredis_packs_exactly_what_redis_py_packs():
    connection = redis_connections.connection_for(
        "redis://127.0.0.1:6379/0", socket_timeout=None
    )
    assert redis_connections.packer_problem() is None
    assert b"".join(pack(connection, COMMANDS)) == b"".join(
        connection.pack_commands(COMMANDS)
    )


def test_without_hiredis_the_slow_packer_is_used_and_said(monkeypatch, settings):
    connection = redis_connections.connection_for(
        "redis://127.0.0.1:6379/0", socket_timeout=None
    )
    fast = b"".join(pack(connection, COMMANDS))
    monkeypatch.setattr(redis_connections, "_hiredis_pack_command", None)
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"

    assert b"".join(pack(connection, COMMANDS)) == fast
    assert "hiredis is not installed" in redis_connections.packer_problem()
    [warning] = redis_connections.check_packer()
    assert warning.id == "parley.W002"
    with pytest.raises(Exception, match="parley.W002|hiredis"):
        call_command("check", "--fail-level", "WARNING")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_a_pipe_to_a_closed_port_raises_connection_error():
    pipe = CommandPipe(f"redis://127.0.0.1:{_closed_port()}/0", timeout=5)
    with pytest.raises(ConnectionError):
        await pipe.call([("PING",)])


@redis_only
async def test_a_pipe_answers_each_command_in_order_and_an_error_is_its_own():
    pipe = CommandPipe(os.environ["REDIS_URL"], timeout=5)
    key = f"parley:test:{uuid.uuid4()}"
    try:
        results = await pipe.call(
            [
                ("SET", key, "a"),
                ("EVALSHA", "0" * 40, 0),  # a script Redis does not know
                ("INCR", key),  # not a number: an error reply
                ("GET", key),
            ]
        )
        assert results[0] == "OK"
        assert isinstance(results[1], ScriptMissing)
        assert isinstance(results[2], RedisReplyError)
        assert results[3] == "a"  # the replies after an error stay aligned
        assert await pipe.call([("DEL", key)]) == [1]
    finally:
        await pipe.close()


@redis_only
async def test_a_subscription_says_when_redis_drops_it():
    subscription = Subscription(os.environ["REDIS_URL"])
    channel = f"parley:test:{uuid.uuid4()}"
    admin = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        await subscription.connect()
        await subscription.send("CLIENT", "ID")
        client_id = await subscription.read()
        await subscription.send("SUBSCRIBE", channel)
        assert await subscription.read() == ["subscribe", channel, 1]
        await admin.publish(channel, "hello")
        assert await subscription.read() == ["message", channel, "hello"]
        # Idle for longer than redis-py's default socket timeout would allow
        # is fine (no read timeout) ...
        read = asyncio.ensure_future(subscription.read())
        await asyncio.sleep(0.2)
        assert not read.done()
        # ... and a dropped connection is an error, not a silent reconnect.
        await admin.execute_command("CLIENT", "KILL", "ID", client_id)
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(read, 5)
    finally:
        await subscription.close()
        await admin.aclose()
