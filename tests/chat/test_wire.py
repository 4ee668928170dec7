"""chat/wire.py: the frames Parley writes itself are frames a WebSocket client reads.

The direct path itself runs under real daphne in every integration test
(tests/integration) and in `make bench`.
"""

import pytest
from websockets.frames import Opcode
from websockets.protocol import Protocol, Side, State

from chat.wire import text_frame


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
    client = Protocol(Side.CLIENT, state=State.OPEN)

    client.receive_data(b"".join(text_frame(f"event {n}".encode()) for n in range(50)))

    assert [frame.data.decode() for frame in client.events_received()] == [
        f"event {n}" for n in range(50)
    ]
