"""The socket under a thread WebSocket: the one module that knows daphne,
autobahn and Twisted internals.

Everything else talks ASGI. This module reaches past it for three things:

- **Direct frame writes.** Through daphne, each outgoing message costs daphne's
  checks, autobahn building the frame (and formatting debug-log arguments it
  then drops), and Twisted buffering the bytes, registering the socket for
  writing with epoll, writing on the next loop turn and unregistering it: two
  epoll_ctl calls and a loop turn per frame, most of the server's work when it
  streams to many sockets. For event frames Parley frames the text itself
  (RFC 6455: FIN and the text opcode; a server does not mask) and sends it at
  once when Twisted holds nothing unsent for that socket. What the kernel does
  not take goes into Twisted's buffer, so frames stay in order.
- **The send backlog** (bytes queued for a socket and not yet taken by the
  kernel), which the consumer compares with PARLEY_SEND_BUFFER_LIMIT_BYTES to
  resync a stalled reader instead of buffering for it without bound.
- **Close codes autobahn refuses.** autobahn lets an application close only with
  1000 or 3000-4999, so 1009 goes through its protocol object, as autobahn does
  itself for oversized messages.

Getting there relies on private details of channels (`real_send` of its session
wrapper), daphne (the ASGI send is `partial(server.handle_reply, protocol)`),
autobahn (`send_queue`, `state`, `sendCloseFrame`) and Twisted (`dataBuffer`,
`offset`, `_tempDataLen`, `socket`). `self_check()` inspects the installed
classes for each of them; chat/apps.py logs what it finds once at start-up and
reports it in `manage.py check` (parley.W001). Whatever is missing has a slower
path, chosen once per socket, never a silent one:

- no direct writes: frames go through daphne's `websocket.send`;
- no Twisted buffer attributes: the backlog is estimated from Twisted's public
  producer API (paused when it holds more than `bufferSize`, resumed when it has
  written everything) plus what was sent since the pause;
- nothing to measure with (another ASGI server, TLS inside daphne, daphne's
  protocol not found): the backlog reads 0, stalled readers are not resynced,
  and a WARNING says so once per process;
- no `sendCloseFrame`: `websocket.close` with the nearest code autobahn allows.
"""

from __future__ import annotations

import functools
import inspect
import logging
import struct
from dataclasses import dataclass

from django.conf import settings
from django.core import checks

logger = logging.getLogger(__name__)

# Extra bytes per frame in the backlog estimate: a WebSocket header is 2-10.
FRAME_OVERHEAD = 10
# Close codes autobahn accepts from an application; any other is refused.
CLOSE_NORMAL = 1000

SLOW_SENDS = "event frames go through daphne's websocket.send (slower)"
UNMEASURED = (
    "the send backlog is not measured: PARLEY_SEND_BUFFER_LIMIT_BYTES is not "
    "enforced and a stalled reader is buffered for without bound"
)
ESTIMATED = (
    "the send backlog is estimated from Twisted's producer pause/resume "
    "(stalled readers are still resynced, slow ones a little earlier)"
)
CLOSE_FALLBACK = (
    "close codes autobahn refuses (1009) are sent as websocket.close "
    f"{CLOSE_NORMAL}, after the error frame that says why"
)


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final text frame holding `payload`."""
    length = len(payload)
    if length <= 125:
        return bytes((0x81, length)) + payload
    if length <= 0xFFFF:
        return struct.pack("!BBH", 0x81, 126, length) + payload
    return struct.pack("!BBQ", 0x81, 127, length) + payload


def nearest_allowed_close_code(code: int) -> int:
    """The code autobahn lets an application send in place of `code`."""
    if code == CLOSE_NORMAL or 3000 <= code <= 4999:
        return code
    return CLOSE_NORMAL


# --- start-up self-check ---------------------------------------------------------


@dataclass(frozen=True)
class Capabilities:
    """What the installed daphne, autobahn and Twisted let this module do."""

    find_protocol: bool
    direct_writes: bool
    exact_backlog: bool
    drain_watch: bool
    close_codes: bool
    problems: tuple[str, ...]


def _assigns(function, name: str) -> bool:
    """Whether `function`'s own code refers to attribute or global `name`."""
    code = getattr(function, "__code__", None)
    return code is not None and name in code.co_names


def _parameters(function) -> list[str]:
    if function is None:
        return []
    try:
        return list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return []


def _inspect() -> Capabilities:
    problems: list[str] = []

    def missing(what: str, consequence: str) -> bool:
        problems.append(f"{what}: {consequence}")
        return False

    try:
        from autobahn.twisted.websocket import WebSocketServerProtocol
        from autobahn.websocket.protocol import WebSocketProtocol as AutobahnProtocol
        from channels.sessions import InstanceSessionWrapper
        from daphne.server import Server
        from daphne.ws_protocol import WebSocketProtocol as DaphneProtocol
        from twisted.internet import tcp
        from twisted.internet.abstract import FileDescriptor
    except ImportError as error:
        missing(
            f"cannot import {error.name}",
            f"{SLOW_SENDS}; {UNMEASURED}; {CLOSE_FALLBACK}",
        )
        return Capabilities(False, False, False, False, False, tuple(problems))
    fd = FileDescriptor
    all_slow = f"{SLOW_SENDS}; {UNMEASURED}; {CLOSE_FALLBACK}"

    # Finding daphne's protocol object under the ASGI send.
    find_protocol = True
    if not _assigns(InstanceSessionWrapper.__init__, "real_send"):
        find_protocol = missing(
            "channels.sessions.InstanceSessionWrapper no longer keeps real_send",
            all_slow,
        )
    if not (
        _assigns(getattr(Server, "create_application", None), "partial")
        and _assigns(getattr(Server, "create_application", None), "handle_reply")
        and _parameters(getattr(Server, "handle_reply", None))[1:]
        == ["protocol", "message"]
    ):
        find_protocol = missing(
            "daphne.server.Server no longer sends through "
            "partial(handle_reply, protocol)",
            all_slow,
        )
    if not issubclass(DaphneProtocol, WebSocketServerProtocol):
        find_protocol = missing(
            "daphne.ws_protocol.WebSocketProtocol is not autobahn's "
            "WebSocketServerProtocol",
            all_slow,
        )

    # The Twisted buffer: read for the exact backlog and before a direct write.
    twisted_buffer = [
        name
        for name, present in (
            ("dataBuffer", isinstance(getattr(fd, "dataBuffer", None), bytes)),
            ("offset", isinstance(getattr(fd, "offset", None), int)),
            ("_tempDataLen", _assigns(fd.__init__, "_tempDataLen")),
        )
        if not present
    ]
    public = ("registerProducer", "unregisterProducer", "producer", "streamingProducer")
    not_public = [name for name in public if not hasattr(fd, name)]
    if not isinstance(getattr(fd, "bufferSize", None), int):
        not_public.append("bufferSize")
    drain_watch = find_protocol and not not_public
    exact_backlog = find_protocol
    if twisted_buffer:
        exact_backlog = missing(
            f"twisted.internet.abstract.FileDescriptor has no "
            f"{', '.join(twisted_buffer)}",
            f"{ESTIMATED if drain_watch else UNMEASURED}; {SLOW_SENDS}",
        )
        if not_public:
            missing(
                "twisted.internet.abstract.FileDescriptor has no "
                f"{', '.join(not_public)}",
                "no estimate of the send backlog either",
            )

    direct_writes = exact_backlog
    connection_made = getattr(AutobahnProtocol, "_connectionMade", None)
    socket_details = [
        f"{owner}.{name}"
        for owner, present, name in (
            ("tcp.Connection", _assigns(tcp.Connection.__init__, "socket"), "socket"),
            ("FileDescriptor", hasattr(fd, "connected"), "connected"),
            ("FileDescriptor", hasattr(fd, "disconnecting"), "disconnecting"),
            (
                "autobahn WebSocketProtocol",
                isinstance(getattr(AutobahnProtocol, "STATE_OPEN", None), int),
                "STATE_OPEN",
            ),
            (
                "autobahn WebSocketProtocol",
                _assigns(connection_made, "send_queue"),
                "send_queue",
            ),
            (
                "autobahn WebSocketProtocol",
                _assigns(connection_made, "state"),
                "state",
            ),
        )
        if not present
    ]
    if socket_details:
        direct_writes = missing(f"no {', '.join(socket_details)}", SLOW_SENDS)

    close_codes = find_protocol
    if _parameters(getattr(AutobahnProtocol, "sendCloseFrame", None))[1:] != [
        "code",
        "reasonUtf8",
        "isReply",
    ]:
        close_codes = missing(
            "autobahn WebSocketProtocol.sendCloseFrame(code, reasonUtf8, isReply) "
            "is gone",
            CLOSE_FALLBACK,
        )
    return Capabilities(
        find_protocol=find_protocol,
        direct_writes=direct_writes,
        exact_backlog=exact_backlog,
        drain_watch=drain_watch,
        close_codes=close_codes,
        problems=tuple(problems),
    )


@functools.cache
def capabilities() -> Capabilities:
    """What this process can use (inspected once)."""
    try:
        return _inspect()
    except Exception as error:  # a library changed beyond what _inspect expects
        problem = (
            f"the self-check itself failed ({error!r}): "
            f"{SLOW_SENDS}; {UNMEASURED}; {CLOSE_FALLBACK}"
        )
        return Capabilities(False, False, False, False, False, (problem,))


def self_check() -> list[str]:
    """What this module relies on and the installed libraries no longer have,
    each with the slower path used instead. Empty when everything is there."""
    return list(capabilities().problems)


_warned: set[str] = set()


def _warn_once(key: str, message: str, *args) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


def log_self_check() -> None:
    """Log the self-check's findings, once per process (chat/apps.py, start-up)."""
    for problem in self_check():
        _warn_once(
            f"self-check: {problem}",
            "realtime/transport.py self-check: %s (installed daphne, autobahn or "
            "Twisted changed; see docs/deploy.md)",
            problem,
        )


def check_socket_transport(app_configs=None, **kwargs) -> list[checks.Warning]:
    """`manage.py check`: what the socket adapter falls back from (parley.W001)."""
    return [
        checks.Warning(
            f"realtime/transport.py relies on something the installed libraries lack: "
            f"{problem}",
            hint="Pin daphne, autobahn and Twisted to the versions in "
            "requirements.txt, or update realtime/transport.py for the new ones.",
            id="parley.W001",
        )
        for problem in self_check()
    ]


# --- one socket ----------------------------------------------------------------


def _daphne_send(send):
    """daphne's own send, `partial(server.handle_reply, protocol)`, under the
    wrappers middleware put around it (channels' session wrapper keeps the one
    it wraps in `real_send`); None when `send` is not daphne's."""
    for _ in range(6):
        if isinstance(send, functools.partial):
            if len(send.args) == 1 and not send.keywords:
                return send
            return None
        owner = getattr(send, "__self__", None)
        send = getattr(owner, "real_send", None)
        if send is None:
            return None
    return None


class DrainWatch:
    """Twisted's public backpressure signal on one transport (IPushProducer).

    Twisted pauses a registered producer when it holds more than `bufferSize`
    bytes for the socket and resumes it once it has written everything. While
    paused, the backlog is estimated as `bufferSize` plus what was sent since.
    daphne leaves its HTTP channel registered as the producer of an upgraded
    socket; the watch takes its place and passes every signal on to it.
    """

    def __init__(self, transport) -> None:
        self.transport = transport
        self.buffer_size = transport.bufferSize
        self.paused = False
        self.sent_while_paused = 0
        self.previous = transport.producer
        if self.previous is not None:
            if not transport.streamingProducer:
                raise ValueError(f"a pull producer is registered: {self.previous!r}")
            transport.unregisterProducer()
        transport.registerProducer(self, True)

    def backlog_bytes(self) -> int:
        if not self.paused:
            return 0
        return self.buffer_size + self.sent_while_paused

    def pauseProducing(self) -> None:  # noqa: N802 (Twisted's interface)
        if not self.paused:
            self.paused = True
            self.sent_while_paused = 0
        if self.previous is not None:
            self.previous.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused = False
        self.sent_while_paused = 0
        if self.previous is not None:
            self.previous.resumeProducing()
        if self.transport.disconnecting:
            # With a producer registered Twisted waits for it before closing.
            self.transport.unregisterProducer()

    def stopProducing(self) -> None:  # noqa: N802
        if self.previous is not None:
            self.previous.stopProducing()


class SocketTransport:
    """One WebSocket's way to the network, from its ASGI `send`.

    `send` is the ASGI send to use for everything not written directly
    (daphne's own, under middleware wrappers, where it was found).
    """

    def __init__(
        self,
        send,
        protocol=None,
        *,
        direct: bool = False,
        exact_backlog: bool = False,
        drain_watch: DrainWatch | None = None,
        close_frames: bool = False,
    ) -> None:
        self.send = send
        self.protocol = protocol
        self.transport = getattr(protocol, "transport", None)
        self.direct = direct
        self.exact_backlog = exact_backlog
        self.drain_watch = drain_watch
        self.close_frames = close_frames
        self.open_state = protocol.STATE_OPEN if direct else None

    @property
    def measures_backlog(self) -> bool:
        return self.exact_backlog or self.drain_watch is not None

    @classmethod
    def for_send(cls, base_send, *, direct_writes: bool | None = None):
        """The transport of the socket `base_send` sends to."""
        found = capabilities()
        log_self_check()
        if direct_writes is None:
            direct_writes = settings.PARLEY_DIRECT_WEBSOCKET_WRITES
        daphne_send = _daphne_send(base_send) if found.find_protocol else None
        if daphne_send is None:
            if found.find_protocol:
                _warn_once(
                    "not daphne",
                    "realtime/transport.py: a socket's ASGI send (%r) is not daphne's: "
                    "%s; %s",
                    base_send,
                    SLOW_SENDS,
                    UNMEASURED,
                )
            return cls(base_send)
        protocol = daphne_send.args[0]
        transport = getattr(protocol, "transport", None)
        if transport is None:  # already gone: nothing to measure or write to
            return cls(daphne_send, protocol)
        if getattr(transport, "TLS", False) or not _is_file_descriptor(transport):
            _warn_once(
                "tls",
                "realtime/transport.py: TLS is terminated inside daphne (%s): %s; %s. "
                "Terminate TLS in a proxy in front of daphne (docs/deploy.md).",
                type(transport).__name__,
                SLOW_SENDS,
                UNMEASURED,
            )
            return cls(daphne_send, protocol, close_frames=_can_close(found, protocol))
        exact = found.exact_backlog and _has_twisted_buffer(transport)
        if found.exact_backlog and not exact:
            _warn_once(
                "buffer",
                "realtime/transport.py: a socket's transport (%s) lacks Twisted's "
                "dataBuffer, offset or _tempDataLen: %s; %s",
                type(transport).__name__,
                ESTIMATED if found.drain_watch else UNMEASURED,
                SLOW_SENDS,
            )
        watch = None
        if not exact and found.drain_watch:
            try:
                watch = DrainWatch(transport)
            except Exception as error:  # another producer that will not share
                _warn_once(
                    "drain watch",
                    "realtime/transport.py: cannot watch a socket's send buffer (%s): %s",
                    error,
                    UNMEASURED,
                )
        direct = (
            direct_writes
            and exact
            and found.direct_writes
            and _can_write_directly(protocol, transport)
        )
        return cls(
            daphne_send,
            protocol,
            direct=direct,
            exact_backlog=exact,
            drain_watch=watch,
            close_frames=_can_close(found, protocol),
        )

    def send_text(self, payload: str) -> bool:
        """Write `payload` as one text frame straight to the socket; False when
        the caller must send it through daphne (`self.send`) instead."""
        if not self.direct:
            watch = self.drain_watch
            if watch is not None and watch.paused:
                watch.sent_while_paused += len(payload.encode()) + FRAME_OVERHEAD
            return False
        protocol, transport = self.protocol, self.transport
        if (
            protocol.state != self.open_state
            or protocol.send_queue
            or not transport.connected
            or transport.disconnecting
        ):
            return False
        data = text_frame(payload.encode())
        if transport._tempDataLen or len(transport.dataBuffer) > transport.offset:
            transport.write(data)  # behind what Twisted holds: keep the order
            return True
        try:
            sent = transport.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            # Let Twisted find the broken connection and close it as usual.
            transport.write(data)
            return True
        if sent < len(data):
            transport.write(data[sent:])
        return True

    def backlog_bytes(self) -> int:
        """Bytes queued for this socket that the kernel has not taken yet
        (an estimate on the drain-watch path; 0 when nothing measures it)."""
        if self.exact_backlog:
            transport = self.transport
            return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        if self.drain_watch is not None:
            return self.drain_watch.backlog_bytes()
        return 0

    async def close_with(self, code: int, reason: str) -> None:
        """Close the socket with `code`, also one autobahn refuses to an
        application (1009), through its protocol object where possible."""
        if self.close_frames:
            self.protocol.sendCloseFrame(
                code=code, reasonUtf8=reason.encode()[:123], isReply=False
            )
            return
        allowed = nearest_allowed_close_code(code)
        if self.protocol is not None and allowed != code:
            # autobahn, without a way round its check: the nearest code it allows.
            await self.send({"type": "websocket.close", "code": allowed})
            return
        try:
            await self.send({"type": "websocket.close", "code": code})
        except Exception as error:  # autobahn under a daphne we did not recognise
            if allowed == code:
                raise
            _warn_once(
                "close code",
                "realtime/transport.py: the server refused close code %s (%s); "
                "closing with %s",
                code,
                error,
                allowed,
            )
            await self.send({"type": "websocket.close", "code": allowed})


def _is_file_descriptor(transport) -> bool:
    from twisted.internet.abstract import FileDescriptor

    return isinstance(transport, FileDescriptor)


def _has_twisted_buffer(transport) -> bool:
    try:
        return (
            isinstance(transport.dataBuffer, bytes)
            and isinstance(transport.offset, int)
            and isinstance(transport._tempDataLen, int)
        )
    except AttributeError:
        return False


def _can_write_directly(protocol, transport) -> bool:
    try:
        return (
            protocol.send_queue is not None
            and isinstance(protocol.STATE_OPEN, int)
            and transport.socket is not None
        )
    except AttributeError:
        return False


def _can_close(found: Capabilities, protocol) -> bool:
    return found.close_codes and callable(getattr(protocol, "sendCloseFrame", None))
