"""Shared fixtures: users in every role, an echo agent, a thread, a fresh event log."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model

from agents.models import AgentConfig
from chat.models import Role, Thread, ThreadMember
from realtime.protocol import parse_server_frame

# Fixtures that start an embedded server (SQLite, in-process layer) in a process
# of its own: such tests test nothing of PostgreSQL or Redis, so the services
# pass (`make test-services`) leaves them to the embedded pass.
EMBEDDED_PROCESS_FIXTURES = frozenset({"embedded", "own_embedded"})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("integration"):
            continue
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (
            EMBEDDED_PROCESS_FIXTURES.intersection(item.fixturenames)
            or params.get("parley") == "embedded"
        ):
            item.add_marker(pytest.mark.embedded_process)


PASSWORD = "correct-horse-battery"


@pytest.fixture(autouse=True)
def fresh_process_state(settings):
    """Each test gets its own event log, runtime and cache (new event loop per test).

    Tests talk plain HTTP to the test client, also in the production-settings pass.
    """
    settings.SECURE_SSL_REDIRECT = False
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher"
    ]  # fast
    from django.core.cache import cache

    import agents.worker
    from agents.runtime import reset_runtime
    from realtime.eventlog import reset_event_log

    reset_event_log()
    reset_runtime()
    agents.worker._embedded = None
    cache.clear()
    forget_receive_state(get_channel_layer())
    yield
    reset_event_log()
    reset_runtime()


def forget_receive_state(layer) -> None:
    """Drop channels-redis's receive locks and buffers left by an earlier test.

    They are asyncio objects bound to the event loop that first waited on them,
    and pytest gives every test a new loop (production has one loop per process).
    A receive cancelled while waiting for a channel's lock never drops its count,
    so the lock outlives its loop, and the next test's receivers on that channel
    fail ("bound to a different event loop") or wait on it forever.
    """
    from channels_redis.core import ChannelLock, RedisChannelLayer

    if isinstance(layer, RedisChannelLayer):
        layer.receive_count = 0
        layer.receive_lock = None
        layer.receive_event_loop = None
        layer.receive_buffer.clear()
        layer.receive_cleaners = []
        layer.receive_clean_locks = ChannelLock()


@pytest.fixture
def make_user(db):
    def make(username: str, **extra):
        return get_user_model().objects.create_user(
            username=username, password=PASSWORD, **extra
        )

    return make


@pytest.fixture
def users(make_user):
    return {
        Role.OWNER: make_user("owner"),
        Role.PARTICIPANT: make_user("participant"),
        Role.OBSERVER: make_user("observer"),
        "stranger": make_user("stranger"),
        Role.STAFF: make_user("staff", is_staff=True),
    }


@pytest.fixture
def echo_agent(db):
    return AgentConfig.objects.create(
        name="echo", provider="echo", extra_params={"tokens_per_second": 200}
    )


@pytest.fixture
def thread(users, echo_agent):
    thread = Thread.objects.create(owner=users[Role.OWNER], agent=echo_agent, title="t")
    ThreadMember.objects.create(
        thread=thread, user=users[Role.PARTICIPANT], role=Role.PARTICIPANT
    )
    ThreadMember.objects.create(
        thread=thread, user=users[Role.OBSERVER], role=Role.OBSERVER
    )
    return thread


@pytest.fixture
async def worker():
    """The agent worker, running in the test's event loop (as in embedded mode)."""
    from agents.runtime import get_runtime
    from agents.worker import start_embedded_worker

    start_embedded_worker()
    runtime = get_runtime()
    for _ in range(100):
        if runtime.channel_name:
            break
        await asyncio.sleep(0.01)
    yield runtime
    import agents.worker

    task = agents.worker._embedded
    run_tasks = list(runtime.tasks.values())
    for run_task in run_tasks:
        run_task.cancel()
    # A cancelled run still finishes (run_finish, in a database thread): wait for
    # it, or its transaction races the test database's flush (a deadlock with
    # TRUNCATE, then every later test sees this one's rows).
    await asyncio.wait_for(
        asyncio.gather(*run_tasks, return_exceptions=True), timeout=20
    )
    for background in runtime._background:
        background.cancel()
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # Wait for the cancelled receives to let go of channels-redis's per-channel
    # locks, which outlive this test's event loop.
    await asyncio.gather(*runtime._background, return_exceptions=True)


class Client:
    """A WebsocketCommunicator that speaks the protocol (JSON frames)."""

    def __init__(
        self,
        thread_id,
        user=None,
        *,
        query: str = "",
        headers=None,
        subprotocols=None,
        presence: bool = False,
        path: str | None = None,
    ):
        from config.asgi import application

        path = path or f"/ws/threads/{thread_id}/"
        path += f"?{query}" if query else ""
        self.communicator = WebsocketCommunicator(
            application, path, headers=headers or [], subprotocols=subprotocols
        )
        if user is not None:
            self.communicator.scope["user"] = user
        self.frames: list[dict] = []
        # Presence announcements come whenever anyone joins or leaves; tests that
        # are not about presence do not see them.
        self.presence = presence

    async def connect(self):
        return await self.communicator.connect(timeout=5)

    async def join(self) -> tuple[dict, dict]:
        """Connect and read the greeting: (`connected` status, snapshot)."""
        connected, _ = await self.connect()
        assert connected
        status = await self.receive()
        assert status["type"] == "status" and status["content"]["state"] == "connected"
        snapshot = await self.receive()
        assert snapshot["content"]["state"] in ("snapshot", "resynced")
        return status, snapshot

    async def send(self, frame: dict | str) -> None:
        await self.communicator.send_to(
            text_data=frame if isinstance(frame, str) else json.dumps(frame)
        )

    async def receive(self, timeout: float = 5.0) -> dict:
        while True:
            text = await self.communicator.receive_from(timeout=timeout)
            parse_server_frame(text)  # every frame the server sends fits its model
            frame = json.loads(text)
            if self.presence or not _is_presence(frame):
                self.frames.append(frame)
                return frame

    async def receive_until(self, predicate, timeout: float = 10.0) -> list[dict]:
        seen = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.receive(timeout=max(deadline - loop.time(), 0.01))
            seen.append(frame)
            if predicate(frame):
                return seen

    async def receive_type(self, frame_type: str, timeout: float = 10.0) -> dict:
        return (await self.receive_until(lambda f: f["type"] == frame_type, timeout))[
            -1
        ]

    async def close(self):
        await self.communicator.disconnect()


def _is_presence(frame: dict) -> bool:
    content = frame.get("content")
    return (
        frame["type"] == "status"
        and isinstance(content, dict)
        and content.get("state") == "presence"
    )


@pytest.fixture
async def client_for():
    """Makes protocol clients; every one is disconnected when the test ends."""
    clients: list[Client] = []

    def make(thread_id, user=None, **kwargs) -> Client:
        client = Client(thread_id, user, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        try:
            await client.close()
        except (Exception, asyncio.CancelledError):
            # A test that timed out cancelled its application: closing it
            # raises. The teardown goes on (the database flush must run, or
            # every later test sees this one's rows).
            pass
    # Messages still on their way into the database finish before the flush.
    from chat.admission import message_admission

    admission = message_admission()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not admission.idle() and loop.time() < deadline:
        await asyncio.sleep(0.02)
