"""realtime/transport.py: direct frame writes, the send backlog, close codes and the
start-up self-check, against a fake socket under Twisted's real buffering.

The fake is a subclass of Twisted's own FileDescriptor (its write buffer, its
producer pause/resume) over a socket that takes as many bytes as the test lets
it; the fake protocol stands in for daphne's WebSocketProtocol (autobahn's
`state`, `send_queue`, `sendCloseFrame`). The direct path itself runs under real
daphne in every integration test (tests/integration) and in `make bench`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import deque

import pytest
from channels.testing import WebsocketCommunicator
from django.core.management import call_command
from twisted.internet import abstract
from twisted.internet.main import CONNECTION_DONE
from twisted.python.failure import Failure
from websockets.frames import Opcode
from websockets.protocol import Protocol, Side, State

from chat.models import Role
from realtime import transport as adapter
from realtime.transport import SocketTransport, text_frame
from tests.eventually import eventually

STATE_OPEN, STATE_CLOSING = 3, 4


# --- fakes -------------------------------------------------------------------------


class FakeReactor:
    def __init__(self) -> None:
        self.writers: set = set()

    def addWriter(self, selectable) -> None:  # noqa: N802
        self.writers.add(selectable)

    def removeWriter(self, selectable) -> None:  # noqa: N802
        self.writers.discard(selectable)

    def addReader(self, selectable) -> None:  # noqa: N802
        pass

    def removeReader(self, selectable) -> None:  # noqa: N802
        pass


class FakeSocket:
    """Takes `room` bytes (None: everything), then would block."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.room: int | None = None
        self.broken = False

    def send(self, data) -> int:
        if self.broken:
            raise ConnectionResetError("reset by peer")
        if self.room == 0:
            raise BlockingIOError
        taken = len(data) if self.room is None else min(self.room, len(data))
        if self.room is not None:
            self.room -= taken
        self.received += bytes(data[:taken])
        return taken


class FakeTransport(abstract.FileDescriptor):
    """A TCP transport as Twisted's FileDescriptor buffers it, over FakeSocket."""

    TLS = False

    def __init__(self) -> None:
        super().__init__(reactor=FakeReactor())
        self.socket = FakeSocket()
        self.connected = 1

    def writeSomeData(self, data) -> int:  # noqa: N802
        try:
            return self.socket.send(data)
        except BlockingIOError:
            return 0

    def queued(self) -> int:
        return len(self.dataBuffer) - self.offset + self._tempDataLen

    def pump(self) -> None:
        """What the reactor does when the socket is writable."""
        for _ in range(1000):
            if self not in self.reactor.writers:
                return
            before = self.queued()
            result = self.doWrite()
            if result is not None:
                self.connectionLost(Failure(result))
                return
            if self.queued() == before and self in self.reactor.writers:
                return  # the socket takes nothing more for now


class FakeProtocol:
    """daphne's WebSocketProtocol as the adapter sees it (autobahn underneath)."""

    STATE_OPEN = STATE_OPEN

    def __init__(self, transport) -> None:
        self.transport = transport
        self.state = STATE_OPEN
        self.send_queue: deque = deque()
        self.closed_with: list[int | None] = []

    def handle_reply(self, message: dict) -> None:
        if message["type"] == "websocket.send":
            self.transport.write(text_frame(message["text"].encode()))
        elif message["type"] == "websocket.close":
            code = message.get("code") or 1000
            if code != 1000 and not 3000 <= code <= 4999:  # as autobahn's sendClose
                raise Exception(f"invalid close code {code}")
            self.sendCloseFrame(code=code)

    def sendCloseFrame(self, code=None, reasonUtf8=None, isReply=False) -> None:  # noqa: N802
        self.closed_with.append(code)
        self.state = STATE_CLOSING


class FakeServer:
    """daphne's Server.handle_reply; the handshake goes on to `handshake_send`."""

    def __init__(self, handshake_send=None) -> None:
        self.handshake_send = handshake_send

    async def handle_reply(self, protocol, message: dict) -> None:
        if self.handshake_send is not None and message["type"] in (
            "websocket.accept",
            "websocket.close",
        ):
            await self.handshake_send(message)
        if message["type"] != "websocket.accept":
            protocol.handle_reply(message)


class PreviousProducer:
    """daphne's HTTP channel, left registered as the producer of the socket."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:  # noqa: N802
        self.calls.append("pause")

    def resumeProducing(self) -> None:  # noqa: N802
        self.calls.append("resume")

    def stopProducing(self) -> None:  # noqa: N802
        self.calls.append("stop")


def daphne_socket():
    transport = FakeTransport()
    protocol = FakeProtocol(transport)
    return transport, protocol, functools.partial(FakeServer().handle_reply, protocol)


def frames_read(data: bytes) -> list[str]:
    client = Protocol(Side.CLIENT, state=State.OPEN, max_size=None)
    client.receive_data(bytes(data))
    assert client.parser_exc is None
    return [frame.data.decode() for frame in client.events_received()]


def forced_fallback() -> adapter.Capabilities:
    """The self-check's result when Twisted no longer has its buffer attributes."""
    return adapter.Capabilities(
        find_protocol=True,
        direct_writes=False,
        exact_backlog=False,
        drain_watch=True,
        close_codes=True,
        problems=("twisted.internet.abstract.FileDescriptor has no _tempDataLen: x",),
    )


@pytest.fixture(autouse=True)
def fresh_warnings():
    adapter._warned.clear()
    yield
    adapter._warned.clear()


# --- frames ------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65_535, 65_536, 300_000])
def test_a_client_reads_the_text_frame_whole(length):
    text = ("é" + "x" * length)[:length] if length else ""
    client = Protocol(Side.CLIENT, state=State.OPEN, max_size=None)

    client.receive_data(text_frame(text.encode()))

    [frame] = client.events_received()
    assert frame.opcode is Opcode.TEXT
    assert frame.fin
    assert frame.data.decode() == text
    assert client.parser_exc is None


def test_frames_written_back_to_back_arrive_in_order():
    data = b"".join(text_frame(f"event {n}".encode()) for n in range(50))

    assert frames_read(data) == [f"event {n}" for n in range(50)]


# --- the self-check ----------------------------------------------------------------


def test_the_installed_libraries_have_everything_the_adapter_relies_on():
    assert adapter.self_check() == []
    assert adapter.check_socket_transport() == []


class TwistedWithoutTempDataLen(abstract.FileDescriptor):
    """Twisted as it would be after renaming a private attribute."""

    def __init__(self, reactor=None) -> None:
        self.reactor = reactor
        self._pending: list[bytes] = []


@pytest.fixture
def renamed_twisted_attribute(monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(abstract, "FileDescriptor", TwistedWithoutTempDataLen)
        found = adapter._inspect()
    monkeypatch.setattr(adapter, "capabilities", lambda: found)
    return found


def test_a_missing_attribute_is_reported_with_the_slow_path_used(
    renamed_twisted_attribute, caplog
):
    [problem] = adapter.self_check()
    assert "FileDescriptor has no _tempDataLen" in problem
    assert "estimated from Twisted's producer" in problem
    assert not renamed_twisted_attribute.exact_backlog
    assert not renamed_twisted_attribute.direct_writes
    assert renamed_twisted_attribute.drain_watch

    with caplog.at_level(logging.WARNING, logger="realtime.transport"):
        adapter.log_self_check()
        adapter.log_self_check()  # once per process

    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "_tempDataLen" in record.getMessage()


def test_manage_py_check_warns_about_the_fallback(renamed_twisted_attribute, capsys):
    [warning] = adapter.check_socket_transport()
    assert warning.id == "parley.W001"
    assert "_tempDataLen" in warning.msg

    call_command("check")

    assert "parley.W001" in capsys.readouterr().err


def test_the_socket_falls_back_to_daphne_and_an_estimated_backlog(
    renamed_twisted_attribute,
):
    transport, protocol, send = daphne_socket()

    socket = SocketTransport.for_send(send, direct_writes=True)

    assert not socket.direct and not socket.exact_backlog
    assert socket.drain_watch is not None and socket.measures_backlog
    assert socket.send_text("hello") is False  # the caller sends it through daphne


def test_a_self_check_that_breaks_is_itself_a_reported_fallback(monkeypatch):
    def broken():
        raise AttributeError("type object 'Server' has no attribute 'x'")

    monkeypatch.setattr(adapter, "_inspect", broken)

    found = adapter.capabilities.__wrapped__()

    assert not (found.find_protocol or found.direct_writes or found.close_codes)
    assert "self-check itself failed" in found.problems[0]


def test_when_daphne_changed_its_send_everything_goes_through_asgi(monkeypatch):
    monkeypatch.setattr(
        adapter,
        "capabilities",
        lambda: adapter.Capabilities(False, False, False, False, False, ("x",)),
    )
    transport, protocol, send = daphne_socket()

    socket = SocketTransport.for_send(send, direct_writes=True)

    assert socket.protocol is None and socket.send is send
    assert socket.send_text("hello") is False and not socket.measures_backlog


def test_without_daphne_nothing_is_measured_and_it_is_said(caplog):
    async def some_other_server(message):
        pass

    with caplog.at_level(logging.WARNING, logger="realtime.transport"):
        socket = SocketTransport.for_send(some_other_server)
        SocketTransport.for_send(some_other_server)

    assert socket.send is some_other_server
    assert socket.send_text("hello") is False
    assert socket.backlog_bytes() == 0 and not socket.measures_backlog
    [record] = caplog.records
    assert "not enforced" in record.getMessage()


def test_tls_inside_daphne_is_said_to_be_unmeasured(caplog):
    class TLSTransport:  # twisted.protocols.tls wraps the TCP transport
        disconnecting = False

    protocol = FakeProtocol(TLSTransport())
    send = functools.partial(FakeServer().handle_reply, protocol)

    with caplog.at_level(logging.WARNING, logger="realtime.transport"):
        socket = SocketTransport.for_send(send)

    assert not socket.direct and not socket.measures_backlog
    assert "TLS" in caplog.text and "not enforced" in caplog.text


# --- direct writes -----------------------------------------------------------------


def test_an_event_goes_straight_to_the_socket():
    transport, protocol, send = daphne_socket()
    socket = SocketTransport.for_send(send, direct_writes=True)

    assert socket.send_text("hello") is True

    assert frames_read(transport.socket.received) == ["hello"]
    assert socket.backlog_bytes() == 0
    assert transport not in transport.reactor.writers  # no loop turn needed


def test_middleware_wrappers_are_seen_through():
    transport, protocol, send = daphne_socket()

    class SessionWrapper:  # channels.sessions.InstanceSessionWrapper
        def __init__(self, send) -> None:
            self.real_send = send

        async def send(self, message) -> None:
            await self.real_send(message)

    socket = SocketTransport.for_send(SessionWrapper(send).send, direct_writes=True)

    assert socket.send is send and socket.direct


def test_a_partial_write_leaves_the_rest_to_twisted_in_order():
    transport, protocol, send = daphne_socket()
    socket = SocketTransport.for_send(send, direct_writes=True)
    transport.socket.room = 5
    first = "a" * 300

    assert socket.send_text(first) is True
    assert socket.send_text("second") is True  # behind what Twisted holds

    assert len(transport.socket.received) == 5
    assert socket.backlog_bytes() == len(text_frame(first.encode())) - 5 + len(
        text_frame(b"second")
    )
    transport.socket.room = None
    transport.pump()
    assert frames_read(transport.socket.received) == [first, "second"]
    assert socket.backlog_bytes() == 0


def test_frames_autobahn_has_queued_go_first_through_daphne():
    transport, protocol, send = daphne_socket()
    socket = SocketTransport.for_send(send, direct_writes=True)
    protocol.send_queue.append((b"queued by autobahn", True))

    assert socket.send_text("hello") is False
    assert transport.socket.received == b""


def test_a_closed_or_closing_socket_is_left_to_daphne():
    transport, protocol, send = daphne_socket()
    socket = SocketTransport.for_send(send, direct_writes=True)

    protocol.state = STATE_CLOSING
    assert socket.send_text("closing") is False
    protocol.state = STATE_OPEN
    transport.disconnecting = True
    assert socket.send_text("disconnecting") is False
    transport.disconnecting, transport.connected = False, 0
    assert socket.send_text("closed") is False
    assert transport.socket.received == b""


def test_a_broken_socket_is_left_for_twisted_to_find():
    transport, protocol, send = daphne_socket()
    socket = SocketTransport.for_send(send, direct_writes=True)
    transport.socket.broken = True

    assert socket.send_text("hello") is True

    assert transport.queued() == len(text_frame(b"hello"))


def test_direct_writes_can_be_switched_off():
    transport, protocol, send = daphne_socket()

    socket = SocketTransport.for_send(send, direct_writes=False)

    assert socket.send_text("hello") is False
    assert socket.exact_backlog  # the backlog is still measured exactly


# --- the backlog -------------------------------------------------------------------


async def test_the_backlog_counts_what_twisted_holds():
    transport, protocol, send = daphne_socket()
    socket = SocketTransport.for_send(send, direct_writes=True)
    transport.socket.room = 0

    socket.send_text("x" * 1000)
    await socket.send({"type": "websocket.send", "text": "y" * 2000})

    assert socket.backlog_bytes() == len(text_frame(b"x" * 1000)) + len(
        text_frame(b"y" * 2000)
    )


async def test_the_estimated_backlog_grows_while_twisted_is_paused_and_clears_when_drained(
    renamed_twisted_attribute,
):
    transport, protocol, send = daphne_socket()
    previous = PreviousProducer()
    transport.registerProducer(previous, True)  # daphne's HTTP channel
    socket = SocketTransport.for_send(send)
    transport.socket.room = 0

    async def send_event(text: str) -> None:
        if not socket.send_text(text):
            await socket.send({"type": "websocket.send", "text": text})

    await send_event("x" * 60_000)
    assert socket.backlog_bytes() == 0  # under Twisted's bufferSize (64 KiB)
    await send_event("x" * 10_000)  # over it: Twisted pauses its producer
    assert socket.backlog_bytes() == transport.bufferSize
    for _ in range(10):
        await send_event("x" * 10_000)
    assert socket.backlog_bytes() >= transport.bufferSize + 100_000
    assert socket.backlog_bytes() <= transport.queued() + 200

    transport.socket.room = None
    transport.pump()

    assert socket.backlog_bytes() == 0
    assert len(frames_read(transport.socket.received)) == 12
    assert previous.calls[0] == "pause" and previous.calls[-1] == "resume"


def test_a_paused_socket_still_closes_once_drained(renamed_twisted_attribute):
    transport, protocol, send = daphne_socket()
    socket = SocketTransport.for_send(send)
    transport.socket.room = 0
    transport.write(b"x" * 100_000)
    assert socket.drain_watch.paused

    transport.loseConnection()
    transport.socket.room = None
    transport.pump()

    assert transport.disconnected  # Twisted did not wait on the watch for ever


def test_a_pull_producer_in_the_way_is_said(renamed_twisted_attribute, caplog):
    transport, protocol, send = daphne_socket()
    transport.registerProducer(PreviousProducer(), False)

    with caplog.at_level(logging.WARNING, logger="realtime.transport"):
        socket = SocketTransport.for_send(send)

    assert not socket.measures_backlog
    assert "not enforced" in caplog.text


def test_twisted_stopping_the_connection_is_passed_on(renamed_twisted_attribute):
    transport, protocol, send = daphne_socket()
    previous = PreviousProducer()
    transport.registerProducer(previous, True)
    SocketTransport.for_send(send)

    transport.connectionLost(Failure(CONNECTION_DONE))

    assert previous.calls == ["stop"]


# --- close codes -------------------------------------------------------------------


async def test_1009_goes_through_autobahns_close_frame():
    transport, protocol, send = daphne_socket()
    socket = SocketTransport.for_send(send)

    await socket.close_with(1009, "frame too large")

    assert protocol.closed_with == [1009]


async def test_without_sendcloseframe_autobahn_gets_the_nearest_allowed_code(
    monkeypatch,
):
    monkeypatch.setattr(
        adapter,
        "capabilities",
        lambda: adapter.Capabilities(True, True, True, True, False, ("x",)),
    )
    transport, protocol, send = daphne_socket()
    socket = SocketTransport.for_send(send)

    await socket.close_with(1009, "frame too large")
    await socket.close_with(4403, "forbidden")

    assert protocol.closed_with == [1000, 4403]


async def test_another_server_gets_the_code_itself_or_the_nearest_it_takes(caplog):
    sent = []

    async def permissive(message):
        sent.append(message)

    await SocketTransport.for_send(permissive).close_with(1009, "frame too large")
    assert sent == [{"type": "websocket.close", "code": 1009}]

    class Refusing:  # daphne's protocol not recognised, autobahn underneath
        async def send(self, message):
            if message["code"] not in (1000, 4403):
                raise Exception(f"invalid close code {message['code']}")
            sent.append(message)

    with caplog.at_level(logging.WARNING, logger="realtime.transport"):
        await SocketTransport.for_send(Refusing().send).close_with(1009, "too large")
    assert sent[-1] == {"type": "websocket.close", "code": 1000}
    assert "refused close code 1009" in caplog.text


# --- a stalled reader, through the consumer ----------------------------------------


class OverFakeDaphne:
    """The ASGI application as daphne runs it: its `send` is
    partial(server.handle_reply, protocol) over a Twisted transport, here the
    fake. The handshake still goes to the communicator."""

    def __init__(self, application, protocol) -> None:
        self.application, self.protocol = application, protocol

    async def __call__(self, scope, receive, send):
        server = FakeServer(handshake_send=send)
        daphne_send = functools.partial(server.handle_reply, self.protocol)
        return await self.application(scope, receive, daphne_send)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["exact", "fallback"])
async def test_a_stalled_reader_is_resynced_and_its_buffer_stays_bounded(
    path, thread, users, worker, client_for, settings, monkeypatch
):
    from channels.db import database_sync_to_async

    from config.asgi import application

    if path == "fallback":
        monkeypatch.setattr(adapter, "capabilities", forced_fallback)
    made: list[SocketTransport] = []
    for_send = SocketTransport.for_send.__func__

    def recording(cls, base_send, **options):
        made.append(for_send(cls, base_send, **options))
        return made[-1]

    monkeypatch.setattr(SocketTransport, "for_send", classmethod(recording))
    limit = 256 * 1024
    settings.PARLEY_SEND_BUFFER_LIMIT_BYTES = limit
    settings.PARLEY_MESSAGES_PER_MINUTE = 1000
    settings.PARLEY_MAX_ACTIVE_RUNS_PER_USER = 1000
    settings.PARLEY_MAX_MESSAGE_CHARS = 30_000
    agent = thread.agent
    agent.extra_params = {"tokens_per_second": 0, "repeat": 5}
    await database_sync_to_async(agent.save)()

    transport = FakeTransport()
    protocol = FakeProtocol(transport)
    stalled = WebsocketCommunicator(
        OverFakeDaphne(application, protocol), f"/ws/threads/{thread.id}/"
    )
    stalled.scope["user"] = users[Role.OBSERVER]
    owner = client_for(thread.id, users[Role.OWNER])
    reading = asyncio.get_running_loop().create_task(_keep_pumping(transport))
    try:
        connected, _ = await stalled.connect(timeout=5)
        assert connected
        await eventually(
            lambda: len(frames_read(transport.socket.received)) >= 2,
            what="the stalled socket's greeting",
        )
        [socket] = [made for made in made if made.protocol is protocol]
        assert socket.exact_backlog is (path == "exact")
        assert (socket.drain_watch is not None) is (path == "fallback")
        await owner.join()

        transport.socket.room = 0  # the reader stops reading
        message = " ".join(f"stall{i:03d}" + "x" * 1000 for i in range(19))
        reply = " ".join([message] * 5)
        for _ in range(12):  # about 1.2 MB of replies: over four times the limit
            await owner.send({"type": "message", "content": message})
        finals = []
        while len(finals) < 12:
            frame = await owner.receive(timeout=30)
            if frame["type"] == "state_complete":
                finals.append(frame)
        held = transport.queued()
        # Bounded: the limit, what Twisted took before pausing, one reply's chunk.
        assert held < limit + 2 * transport.bufferSize + len(reply)

        transport.socket.room = None  # it reads again
        resynced = await eventually(
            lambda: _resynced(frames_read(transport.socket.received)),
            timeout=20,
            what="a resynced snapshot on the stalled socket",
        )
    finally:
        reading.cancel()
        await stalled.disconnect()

    # The snapshot (up to PARLEY_SNAPSHOT_MAX_CHARS) has the replies whole.
    replies = [
        m["text"] for m in resynced["content"]["messages"] if m["role"] == "assistant"
    ]
    assert replies and set(replies) == {reply}


async def _keep_pumping(transport: FakeTransport) -> None:
    while True:
        transport.pump()
        await asyncio.sleep(0.01)


def _resynced(texts: list[str]):
    for text in texts:
        frame = json.loads(text)
        if frame["type"] == "status" and frame["content"].get("state") == "resynced":
            return frame
    return None
