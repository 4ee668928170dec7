"""From a provider's tokens to a thread's `response` events: the worker's
coalescer (`ChunkStream`: fewer, fuller chunks under load, the first token at
once), a run's reply stream (`reply_stream`) and its `state` frames in order
with it (`publish_state`), and publishing that waits out an unreachable event
log (Redis restarting) instead of dropping text."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable

from agents.models import Run
from ops import metrics
from realtime.eventlog import Chunk
from realtime.events import publish
from realtime.protocol import (
    StateFrame,
    agent_name_json,
    response_event_json,
    state_content,
)
from realtime.retry import Backoff

logger = logging.getLogger(__name__)

PUBLISH_RETRY_SECONDS = 60.0


# Where a sentence ends: its punctuation (and closing quotes or brackets) and
# the space after it.
SENTENCE_END = re.compile(r"[.!?\u2026]+[\"')\]\u201d\u2019]*\s+|\n+")
STREAM_MODES = ("tokens", "sentences", "message")


class ChunkStream:
    """Coalesces tokens into chunks, as the thread's `stream_mode` says:

    - `tokens` (default): flush at `chunk_size` characters or when the oldest
      waiting token is `window()` seconds old, whichever comes first (the
      first token of a reply goes out at once: time to first token matters);
    - `sentences`: a chunk is one or more whole sentences (or `chunk_size`
      characters of a sentence that long);
    - `message`: the whole reply is one chunk, when it ends.

    Chunks are published in order by one task, numbered 0, 1, 2 ... without gaps."""

    def __init__(
        self,
        publish_chunk: Callable[[int, str, str], Awaitable[None]],
        *,
        chunk_size: int,
        window: Callable[[], float],
        buffered: bool,
        mode: str = "tokens",
    ) -> None:
        self._publish_chunk = publish_chunk
        self._chunk_size = chunk_size
        self._window = window
        self._buffered = buffered
        self._mode = mode
        self._waiting: list[str] = []
        self._waiting_length = 0
        self._timer: asyncio.TimerHandle | None = None
        # Chunks to publish; a Future is a barrier (see drain), None ends the stream.
        self._queue: asyncio.Queue[str | asyncio.Future | None] = asyncio.Queue()
        self._parts: list[str] = []
        self._published: list[str] = []
        self.chunks = 0
        self._pump = asyncio.get_running_loop().create_task(self._publish_all())

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def published(self) -> tuple[str, int]:
        """The text of the chunks published so far, and how many there are."""
        return "".join(self._published), self.chunks

    def add(self, text: str) -> None:
        if not text:
            return
        self._raise_if_broken()
        if self._mode != "tokens":
            self._waiting.append(text)
            self._waiting_length += len(text)
            if self._mode == "sentences":
                self._cut_sentences()
            return
        if not self._buffered or not self._parts:
            # Unbuffered, or the reply's first token: nobody should wait for it.
            self._emit(text)
            return
        self._waiting.append(text)
        self._waiting_length += len(text)
        if self._waiting_length >= self._chunk_size:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self._window(), self.flush
            )

    def _cut_sentences(self) -> None:
        waiting = "".join(self._waiting)
        end = 0
        for match in SENTENCE_END.finditer(waiting):
            end = match.end()
        if not end and self._waiting_length >= self._chunk_size:
            end = len(waiting)  # one very long sentence
        if end:
            self._emit(waiting[:end])
            rest = waiting[end:]
            self._waiting = [rest] if rest else []
            self._waiting_length = len(rest)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._waiting:
            self._emit("".join(self._waiting))
            self._waiting = []
            self._waiting_length = 0

    def _emit(self, text: str) -> None:
        self._parts.append(text)
        self._queue.put_nowait(text)

    async def _publish_all(self) -> None:
        published = self._published
        while (text := await self._queue.get()) is not None:
            if isinstance(text, asyncio.Future):
                text.set_result(None)
                continue
            await self._publish_chunk(
                self.chunks, text, "".join(published) if self.chunks else ""
            )
            published.append(text)
            self.chunks += 1

    def _raise_if_broken(self) -> None:
        """Raise the publisher's failure, if publishing stopped because of one."""
        if self._pump.done() and not self._pump.cancelled() and self._pump.exception():
            raise self._pump.exception()

    async def drain(self) -> None:
        """Flush what waits and wait until it is published (keeps order with
        events published outside the stream, e.g. `state`; in `message` mode
        the reply stays one chunk, after them)."""
        if self._mode != "message":
            self.flush()
        barrier = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(barrier)
        # A dead publisher never reaches the barrier: do not wait for it forever.
        await asyncio.wait({barrier, self._pump}, return_when=asyncio.FIRST_COMPLETED)
        self._raise_if_broken()

    async def close(self) -> None:
        """Flush what waits and wait until every chunk is published. A publisher
        failure is logged, not raised: the run is still saved with its text."""
        self.flush()
        self._queue.put_nowait(None)
        try:
            await asyncio.shield(self._pump)
        except Exception:
            logger.exception("publishing a reply's chunks failed")


async def publish_with_retry(thread_id, frame, **kwargs) -> None:
    """Publish, retrying while the event log is unreachable (Redis restarting)."""
    backoff = Backoff(0.05, maximum=1.0)
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + PUBLISH_RETRY_SECONDS
    while True:
        try:
            await publish(thread_id, frame, **kwargs)
            return
        except Exception as error:
            unreachable = isinstance(
                error, (ConnectionError, OSError, TimeoutError)
            ) or type(error).__module__.startswith("redis")
            if not unreachable:
                raise
            if loop.time() > give_up_at:
                logger.error("dropping an event of thread %s: %s", thread_id, error)
                return
            await backoff.wait()


def reply_stream(run: Run, *, window: Callable[[], float]) -> ChunkStream:
    """The stream a run's reply goes out through: chunks cut as the agent and
    the thread's `stream_mode` say, each published as a `response` event."""
    thread_id = run.thread_id
    agent = run.agent
    agent_json = agent_name_json(agent.name)  # once per run, not per chunk

    async def publish_chunk(index: int, text: str, text_before: str) -> None:
        if index == 0:
            metrics.first_response(run)
        frame = response_event_json(
            thread_id=thread_id,
            run_id=run.id,
            stream_index=index,
            text=text,
            agent_json=agent_json,
        )
        chunk = Chunk(
            run_id=str(run.id),
            stream_index=index,
            text=text,
            text_before=text_before,
        )
        await publish_with_retry(thread_id, frame, chunk=chunk)

    return ChunkStream(
        publish_chunk,
        chunk_size=agent.chunk_size,
        window=window,
        buffered=agent.buffer_chunks,
        mode=run.thread.config.get("stream_mode", "tokens"),
    )


async def publish_state(run: Run, kind: str, data: dict, stream: ChunkStream) -> None:
    """Publish a `state` frame of the run after the text flushed before it
    (unless the thread asked for the final `state_complete` only)."""
    if not run.thread.config.get("progressive_updates", True):
        return
    try:
        content = state_content(kind, data)
    except ValueError:  # a provider's bug: the reply goes on without it
        logger.exception("run %s: dropped a state update of kind %r", run.id, kind)
        return
    await stream.drain()
    await publish_with_retry(
        run.thread_id,
        StateFrame(
            content=content,
            thread_id=run.thread_id,
            run_id=run.id,
            agent=run.agent.name,
        ),
    )
