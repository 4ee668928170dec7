"""A small blocking facade over `ParleyClient`, for scripts and notebooks.

The async client runs on an event loop of its own in a background thread;
each method here waits for its result. Same errors, same events.

    with SyncParleyClient("http://127.0.0.1:8000", thread_id, token=token) as c:
        for event in c.ask("hello"):
            ...
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any, TypeVar

from parley_client.connection import (
    ConnectionState,
    InputHandler,
    ParleyClient,
)
from parley_client.events import Event, InputRequested
from parley_client.frames import Frame

T = TypeVar("T")


class SyncParleyClient:
    """Blocking `connect`, `close`, `request`, `post`, `ask`, `answer`, `approve`,
    `cancel`; `client` is the async client underneath (read `state`, `view`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="parley-client", daemon=True
        )
        self._thread.start()
        self.client: ParleyClient = self._call(self._make(*args, **kwargs))

    @staticmethod
    async def _make(*args: Any, **kwargs: Any) -> ParleyClient:
        return ParleyClient(*args, **kwargs)

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if not self._loop.is_running():
            coroutine.close()
            raise RuntimeError("this client is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __enter__(self) -> SyncParleyClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def state(self) -> ConnectionState:
        return self.client.state

    def connect(self) -> None:
        self._call(self.client.connect())

    def close(self) -> None:
        if not self._loop.is_running():
            return
        try:
            self._call(self.client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def request(self, frame: Mapping[str, Any], timeout: float | None = 30.0) -> Frame:
        return self._call(self.client.request(frame, timeout=timeout))

    def post(self, text: str) -> Frame:
        return self._call(self.client.post(text))

    def answer(self, question: InputRequested, text: str) -> Frame:
        return self._call(self.client.answer(question, text))

    def approve(self, question: InputRequested, approve: bool = True) -> Frame:
        return self._call(self.client.approve(question, approve))

    def cancel(self, run_id: str | None = None) -> Frame:
        return self._call(self.client.cancel(run_id))

    def ask(
        self, text: str, *, on_input: InputHandler | None = None
    ) -> Iterator[Event]:
        """Post `text` and iterate its run's events (blocking), as `ParleyClient.ask`."""
        return self._iterate(lambda: self.client.ask(text, on_input=on_input))

    def follow(
        self, run_id: str, *, on_input: InputHandler | None = None
    ) -> Iterator[Event]:
        """Iterate a run started elsewhere, as `ParleyClient.follow`."""
        return self._iterate(lambda: self.client.follow(run_id, on_input=on_input))

    def events(self) -> Iterator[Event]:
        return self._iterate(self.client.events)

    def _iterate(self, make: Callable[[], Any]) -> Iterator[Event]:
        stream = self._call(self._start(make))
        try:
            while True:
                try:
                    yield self._call(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            if self._loop.is_running():
                self._call(stream.aclose())

    @staticmethod
    async def _start(make: Callable[[], Any]) -> Any:
        return make()
