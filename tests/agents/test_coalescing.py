"""The worker's token coalescer, `agents.streaming.ChunkStream`, on its own (no DB).

What a reader of the thread notices: chunks arrive in order, numbered 0, 1, 2 ...
with no gap, their text joined is exactly what the provider produced, small
tokens are grouped (by size, or by age when they trickle), and nothing is left
behind when the stream closes.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from agents.runtime import WorkerRuntime
from agents.streaming import ChunkStream

LONG = 60.0  # a flush window no test waits for


class Published:
    """Records what the stream publishes: (stream_index, text, text_before)."""

    def __init__(self, *, delay: float = 0.0, jitter: bool = False) -> None:
        self.chunks: list[tuple[int, str, str]] = []
        self.timeline: list[str] = []  # chunks and outside events, in publish order
        self.delay = delay
        self.jitter = jitter
        self.arrived = asyncio.Event()

    async def __call__(self, index: int, text: str, text_before: str) -> None:
        if self.delay:
            await asyncio.sleep(self.delay * (random.random() if self.jitter else 1))
        self.chunks.append((index, text, text_before))
        self.timeline.append(f"chunk:{text}")
        self.arrived.set()

    @property
    def texts(self) -> list[str]:
        return [text for _index, text, _before in self.chunks]

    async def wait_for(self, count: int, timeout: float = 2.0) -> None:
        async def enough() -> None:
            while len(self.chunks) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), timeout)


def stream_for(published: Published, **options) -> ChunkStream:
    options = {"chunk_size": 1000, "window": LONG, "buffered": True, **options}
    window = options.pop("window")
    return ChunkStream(published, window=lambda: window, **options)


async def settle() -> None:
    """Let the stream's publishing task run what is already queued."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_first_token_goes_out_at_once():
    published = Published()
    stream = stream_for(published, chunk_size=1000)
    stream.add("First")
    await published.wait_for(1)
    assert published.chunks == [(0, "First", "")]
    stream.add(" then")
    await settle()
    assert len(published.chunks) == 1  # later tokens are coalesced
    await stream.close()
    assert published.texts == ["First", " then"]


async def test_tokens_are_held_until_chunk_size_characters_wait():
    published = Published()
    stream = stream_for(published, chunk_size=10)
    stream.add(">")
    await published.wait_for(1)

    stream.add("Hello")
    stream.add(", ")
    await settle()
    assert len(published.chunks) == 1

    stream.add("world")  # 12 characters wait now: one chunk, tokens never split
    await published.wait_for(2)
    assert published.chunks[1] == (1, "Hello, world", ">")

    stream.add("!")
    await settle()
    assert len(published.chunks) == 2
    await stream.close()
    assert published.texts == [">", "Hello, world", "!"]


async def test_trickling_tokens_are_flushed_once_the_oldest_is_a_window_old():
    published = Published()
    window = 0.1
    stream = stream_for(published, window=window)
    loop = asyncio.get_running_loop()

    stream.add("Some ")  # the first token goes out at once
    await published.wait_for(1)
    first_added = loop.time()
    stream.add("slow ")
    await asyncio.sleep(window / 3)
    stream.add("tokens ")
    await settle()
    assert len(published.chunks) == 1  # younger than the window: still waiting

    await published.wait_for(2)
    # The window runs from the oldest waiting token, not the newest.
    assert loop.time() - first_added < window * 3
    assert loop.time() - first_added >= window * 0.9
    assert published.chunks[1] == (1, "slow tokens ", "Some ")

    stream.add("more")
    await published.wait_for(3)
    await stream.close()
    assert published.texts == ["Some ", "slow tokens ", "more"]


async def test_unbuffered_stream_sends_every_token_as_its_own_chunk():
    published = Published()
    stream = stream_for(published, buffered=False, chunk_size=1000)
    tokens = ["a", "b", "cd", " ", "efg"]

    for token in tokens:
        stream.add(token)
    await published.wait_for(len(tokens))
    await stream.close()

    assert published.texts == tokens
    assert [index for index, _text, _before in published.chunks] == [0, 1, 2, 3, 4]
    assert stream.chunks == len(tokens)


async def test_empty_tokens_publish_nothing():
    published = Published()
    stream = stream_for(published, buffered=False)
    stream.add("")
    await stream.close()
    assert published.chunks == [] and stream.chunks == 0 and stream.text == ""


async def test_many_tokens_keep_their_order_and_gap_free_indices_with_a_slow_publisher():
    random.seed(3)
    published = Published(delay=0.002, jitter=True)
    stream = stream_for(published, chunk_size=7, window=0.005)
    tokens = [f"t{number} " for number in range(300)]

    for number, token in enumerate(tokens):
        stream.add(token)
        if number % 17 == 0:
            await asyncio.sleep(0.006)  # let the window flush some chunks
    await stream.close()

    indices = [index for index, _text, _before in published.chunks]
    assert indices == list(range(len(published.chunks)))
    assert "".join(published.texts) == "".join(tokens) == stream.text
    assert stream.chunks == len(published.chunks)
    for index, _text, text_before in published.chunks:
        assert text_before == "".join(published.texts[:index])


async def test_drain_is_an_ordering_barrier_for_events_published_outside_the_stream():
    published = Published(delay=0.01)
    stream = stream_for(published, chunk_size=1000)

    stream.add("Just ")
    stream.add("before ")
    stream.add("the tool call ")
    await stream.drain()
    # Everything added before drain() is published by the time it returns...
    assert "".join(published.texts) == "Just before the tool call "
    published.timeline.append("state:tool_call")
    stream.add("after")
    await stream.close()

    # ...so an event published right after it sits between the two texts.
    assert published.timeline == [
        "chunk:Just ",
        "chunk:before the tool call ",
        "state:tool_call",
        "chunk:after",
    ]
    assert [index for index, _text, _before in published.chunks] == [0, 1, 2]


async def test_drain_with_nothing_waiting_returns_at_once():
    published = Published()
    stream = stream_for(published)
    await asyncio.wait_for(stream.drain(), 1)
    await stream.close()
    assert published.chunks == []


async def test_close_publishes_the_waiting_tail_and_waits_for_it():
    published = Published(delay=0.02)
    stream = stream_for(published, chunk_size=5)

    stream.add("12345")  # flushed by size
    stream.add("tail")  # waits for a window that never comes
    await stream.close()

    assert published.texts == ["12345", "tail"]
    assert stream.text == "12345tail"
    assert stream.chunks == 2


async def test_a_publisher_failure_surfaces_instead_of_hanging_the_stream():
    async def broken(index: int, text: str, text_before: str) -> None:
        raise RuntimeError("event log rejected the chunk")

    stream = stream_for(broken, buffered=False)
    stream.add("lost")

    # A run waiting on the stream must not wait forever: it gets the error...
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(stream.drain(), 1)
    with pytest.raises(RuntimeError):
        stream.add("more")
    # ...and can still close it, to save what the provider produced.
    await asyncio.wait_for(stream.close(), 1)
    assert stream.text == "lost"
    assert stream.chunks == 0


def test_the_flush_window_stretches_with_the_runs_in_flight(settings):
    settings.PARLEY_FLUSH_WINDOW_MS = 25
    settings.PARLEY_FLUSH_WINDOW_MAX_MS = 80
    settings.PARLEY_FLUSH_WINDOW_RUNS = 50
    runtime = WorkerRuntime()

    def window_with(runs: int) -> float:
        runtime.tasks = {str(index): None for index in range(runs)}
        return round(runtime.flush_window() * 1000, 3)

    assert window_with(0) == 25  # light load: the configured window
    assert window_with(50) == 25
    assert window_with(100) == 50  # twice the runs, twice the wait
    assert window_with(150) == 75
    assert window_with(1000) == 80  # never more than the maximum


async def test_sentences_mode_cuts_chunks_at_sentence_ends():
    published = Published()
    stream = stream_for(published, mode="sentences", chunk_size=40)
    for token in ["Hi", ". How", " are", " you? ", "Fine", "! Then", " a very"]:
        stream.add(token)
    await settle()
    assert published.texts == ["Hi. ", "How are you? ", "Fine! "]
    stream.add(" long sentence that goes on past the chunk size")
    await settle()
    assert published.texts[-1] == (
        "Then a very long sentence that goes on past the chunk size"
    )  # longer than chunk_size: cut anyway
    stream.add(" end")
    await stream.close()
    assert published.texts[-1] == " end"


async def test_message_mode_is_one_chunk_when_the_reply_ends():
    published = Published()
    stream = stream_for(published, mode="message", window=0.001)
    for token in ["one ", "two ", "three"]:
        stream.add(token)
    await stream.drain()  # a state update in between: the reply stays whole
    await asyncio.sleep(0.01)
    assert published.texts == []
    await stream.close()
    assert published.texts == ["one two three"]
