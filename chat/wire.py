"""Text frames written straight to a daphne WebSocket's socket (the hot path).

Through daphne, each outgoing message costs: daphne's checks, autobahn building
the frame (and formatting debug-log arguments it then drops), and Twisted
buffering the bytes, registering the socket for writing with epoll, writing on
the next loop turn and unregistering it: two epoll_ctl calls and a loop turn per
frame, most of the server's work when it streams to many sockets.

For event frames to open sockets, Parley frames the text itself (RFC 6455: FIN
and the text opcode; a server does not mask) and sends it at once when Twisted
holds nothing unsent for that socket. What the kernel does not take goes into
Twisted's buffer, so frames stay in order and the socket's backlog is measured
as before. Anything unusual (TLS inside daphne, a socket not open, a changed
private attribute) returns False and the caller uses daphne's own path.
"""

from __future__ import annotations

import logging
import struct

logger = logging.getLogger(__name__)


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final text frame holding `payload`."""
    length = len(payload)
    if length <= 125:
        return bytes((0x81, length)) + payload
    if length <= 0xFFFF:
        return struct.pack("!BBH", 0x81, 126, length) + payload
    return struct.pack("!BBQ", 0x81, 127, length) + payload


class DirectSender:
    """Writes text frames to one daphne WebSocket connection."""

    def __init__(self, protocol) -> None:
        self.protocol = protocol
        self.transport = protocol.transport
        self.open_state = protocol.STATE_OPEN

    @classmethod
    def for_protocol(cls, protocol) -> DirectSender | None:
        """A sender for daphne's WebSocketProtocol, or None where it cannot work."""
        transport = getattr(protocol, "transport", None)
        try:
            usable = (
                protocol.send_queue is not None
                and isinstance(protocol.STATE_OPEN, int)
                and not getattr(transport, "TLS", False)
                and isinstance(transport.dataBuffer, bytes)
                and isinstance(transport.offset, int)
                and isinstance(transport._tempDataLen, int)
                and transport.socket is not None
            )
        except AttributeError:
            return None
        return cls(protocol) if usable else None

    def send_text(self, text: str) -> bool:
        """Send `text` as one frame; False when the caller must use daphne's path."""
        protocol, transport = self.protocol, self.transport
        if (
            protocol.state != self.open_state
            or protocol.send_queue
            or not transport.connected
            or transport.disconnecting
        ):
            return False
        data = text_frame(text.encode())
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
