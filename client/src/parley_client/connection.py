"""The thread socket client: one `ParleyClient` per thread connection.

It connects (token in a header, or in subprotocols), keeps the thread's view by
the resume rules (view.py), and when the network or a server process goes away
reconnects with backoff and jitter (retry.py), resuming from the last event id,
so a reply in progress continues without a lost or doubled chunk. Closes that
are not the network's (4401, 4403, 4404, 4429, 1009, the caller's `close()`)
end it with `ConnectionClosedError`; running out of retries ends it with
`ConnectionLostError`.

Requests (`request()`) carry a `request_id` and are answered by exactly one
frame; one whose connection was lost before its reply is sent again on the new
connection unless the replay showed it had already been applied. Streams
(`ask()`, `follow()`, `events()`) are async iterators of events.py's events.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from parley_client import frames
from parley_client.errors import (
    CLOSE_ABNORMAL,
    CLOSE_NORMAL,
    RETRYABLE_CLOSE_CODES,
    ConnectionClosedError,
    ConnectionLostError,
    ParleyError,
    ProtocolViolation,
    RequestError,
    RequestTimeout,
)
from parley_client.events import (
    ErrorReceived,
    Event,
    InputRequested,
    Message,
    ResyncNeeded,
    RunCompleted,
    RunStatusChanged,
    StateChanged,
    Synced,
    TextDelta,
    TextReset,
)
from parley_client.frames import Frame
from parley_client.retry import RetryPolicy
from parley_client.view import ThreadView

logger = logging.getLogger("parley_client")

AuthMode = Literal["header", "subprotocol"]
# An answer to a question: text (questions), a bool (approvals), None: no answer.
InputHandler = Callable[
    [InputRequested], Awaitable[str | bool | None] | str | bool | None
]
RUN_EVENTS = (
    TextDelta,
    TextReset,
    RunStatusChanged,
    StateChanged,
    InputRequested,
    ErrorReceived,
    RunCompleted,
)
# Frames a snapshot can be (200 messages of up to 16,000 characters).
MAX_RECEIVED_FRAME_BYTES = 16 * 1024 * 1024


class ConnectionState(enum.Enum):
    """Where a connection is; `ParleyClient.state`, watched with
    `on_state_change` or `wait_for_state`."""

    CONNECTING = "connecting"  # the first connection is being opened
    CONNECTED = "connected"  # open; events flow
    RECONNECTING = "reconnecting"  # lost; retrying, will resume from the last id
    DISCONNECTING = "disconnecting"  # the caller asked to close
    DISCONNECTED = "disconnected"  # ended: `error` says how (None: never opened)


def thread_socket_url(base: str, thread_id: str, last_event_id: int | None) -> str:
    """The socket URL of a thread from a server's base URL (http(s) or ws(s),
    optionally with a path prefix), or a full `/ws/threads/<id>/` URL."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not a server URL (http://host:port or ws://...): {base!r}")
    path = parts.path
    if "/ws/threads/" not in path:
        path = path.rstrip("/") + f"/ws/threads/{thread_id}/"
    query = (
        urlencode({"last_event_id": last_event_id}) if last_event_id is not None else ""
    )
    return urlunsplit((scheme, parts.netloc, path, query, ""))


class _Retry(Exception):
    """An attempt failed in a way worth retrying."""


@dataclass(eq=False)
class _Pending:
    frame: dict[str, Any]
    future: asyncio.Future[Frame]
    generation: int = 0  # the connection it went out on; 0: not sent yet
    internal: bool = False
    known_messages: frozenset[str] = field(default_factory=frozenset)


_END = object()  # the caller closed: streams end quietly


class ParleyClient:
    """A connection to one thread. Use as `async with ParleyClient(...) as c:`.

    `url`: the server's base URL (`http://127.0.0.1:8000`), or several: after
    a failed attempt the next is tried (web processes behind no balancer).
    `last_event_id`: resume from there instead of starting with a snapshot.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        thread_id: str,
        *,
        token: str,
        retry: RetryPolicy | None = None,
        last_event_id: int | None = None,
        auth: AuthMode = "header",
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        on_state_change: Callable[[ConnectionState], None] | None = None,
    ) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise ValueError("give at least one server URL")
        for each in self.urls:
            thread_socket_url(each, str(thread_id), None)  # a bad URL fails now
        if not token:
            raise ValueError("a token is needed (POST /api/auth/token/)")
        if auth not in ("header", "subprotocol"):
            raise ValueError("auth is 'header' or 'subprotocol'")
        self.thread_id = str(thread_id)
        self.token = token
        self.retry = retry or RetryPolicy()
        self.auth = auth
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.view = ThreadView(last_event_id)
        self.error: ParleyError | None = None
        self._state = ConnectionState.DISCONNECTED
        self._state_listeners: list[Callable[[ConnectionState], None]] = []
        if on_state_change is not None:
            self._state_listeners.append(on_state_change)
        self._state_waiters: list[
            tuple[set[ConnectionState], asyncio.Future[ConnectionState]]
        ] = []
        self._url_index = 0
        self._ws: ClientConnection | None = None
        self._generation = 0
        self._resynced_generation = 0
        self._pending: dict[str, _Pending] = {}
        self._subscribers: set[asyncio.Queue[Any]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = asyncio.Event()
        self._last_error: Mapping[str, Any] | None = None
        self.reconnects = 0

    # --- state -----------------------------------------------------------------
    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def last_event_id(self) -> int | None:
        return self.view.last_event_id

    @property
    def role(self) -> str | None:
        return self.view.role

    @property
    def user(self) -> str | None:
        return self.view.user

    def on_state_change(self, listener: Callable[[ConnectionState], None]) -> None:
        """Call `listener(state)` on every change from now on."""
        self._state_listeners.append(listener)

    async def wait_for_state(
        self, *states: ConnectionState, timeout: float | None = None
    ) -> ConnectionState:
        """Return once the connection is in one of `states` (at once if it is)."""
        if self._state in states:
            return self._state
        future: asyncio.Future[ConnectionState] = (
            asyncio.get_running_loop().create_future()
        )
        waiter = (set(states), future)
        self._state_waiters.append(waiter)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            if waiter in self._state_waiters:
                self._state_waiters.remove(waiter)

    def _set_state(self, state: ConnectionState) -> None:
        if state is self._state:
            return
        self._state = state
        for listener in list(self._state_listeners):
            try:
                listener(state)
            except Exception:
                logger.exception("a state listener failed")
        for states, future in list(self._state_waiters):
            if state in states and not future.done():
                future.set_result(state)

    # --- connecting ------------------------------------------------------------
    async def __aenter__(self) -> ParleyClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the connection (retrying as the policy says) and start reading.
        Raises ConnectionClosedError (refused: 4401, 4403, 4404, ...) or
        ConnectionLostError (no server reachable within the policy)."""
        if self._state is not ConnectionState.DISCONNECTED or self._runner:
            raise RuntimeError("this client is connected or was used already")
        self._closing = asyncio.Event()
        self.error = None  # a failed connect() may be tried again
        self._set_state(ConnectionState.CONNECTING)
        try:
            ws = await self._open_with_retry()
        except ParleyError as error:
            self._finish(error)
            raise
        self._ws = ws
        self._generation += 1
        self._set_state(ConnectionState.CONNECTED)
        self._runner = asyncio.get_running_loop().create_task(self._run(ws))

    async def close(self) -> None:
        """Close the connection; streams end, pending requests fail with
        ConnectionClosedError (`by_client`)."""
        if self._state is ConnectionState.DISCONNECTED:
            return
        already_ended = self.error is not None
        self._set_state(ConnectionState.DISCONNECTING)
        self._closing.set()
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            # A reconnect attempt in progress is abandoned rather than awaited.
            await asyncio.wait({self._runner}, timeout=1.0)
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if already_ended:
            self._set_state(ConnectionState.DISCONNECTED)
        else:
            self._finish(ConnectionClosedError(CLOSE_NORMAL, by_client=True))

    async def _open_with_retry(self) -> ClientConnection:
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempts = 0
        last: BaseException | None = None
        for delay in self.retry.delays():
            elapsed = loop.time() - started
            if attempts and (
                (self.retry.max_attempts and attempts >= self.retry.max_attempts)
                or (
                    self.retry.give_up_after is not None
                    and elapsed + delay > self.retry.give_up_after
                )
            ):
                break
            if delay:
                try:
                    await asyncio.wait_for(self._closing.wait(), delay)
                except TimeoutError:
                    pass
            if self._closing.is_set():
                raise ConnectionClosedError(CLOSE_NORMAL, by_client=True)
            url = self.urls[self._url_index % len(self.urls)]
            attempts += 1
            try:
                return await self._open_once(url)
            except _Retry as error:
                last = error
                logger.info("connecting to %s failed (%s); retrying", url, error)
                self._url_index += 1
        elapsed = loop.time() - started
        raise ConnectionLostError(
            f"no connection after {attempts} attempts in {elapsed:.1f} s: {last}",
            attempts=attempts,
            elapsed=elapsed,
        )

    async def _open_once(self, url: str) -> ClientConnection:
        resume_from = self.view.last_event_id if self.view.synced_once else None
        if self.view.resync_requested:
            resume_from = None  # the snapshot asked for was lost with the socket
        address = thread_socket_url(url, self.thread_id, resume_from)
        options: dict[str, Any] = {}
        if self.auth == "header":
            options["additional_headers"] = {"Authorization": f"Token {self.token}"}
        else:
            options["subprotocols"] = ["parley", f"token.{self.token}"]
        self._last_error = None
        try:
            ws = await websockets.connect(
                address,
                open_timeout=self.open_timeout,
                ping_interval=self.ping_interval,
                max_size=MAX_RECEIVED_FRAME_BYTES,
                **options,
            )
        except InvalidURI as error:
            raise ValueError(str(error)) from None
        except InvalidStatus as error:
            status = error.response.status_code
            if status >= 500 or status == 429:
                raise _Retry(f"HTTP {status}") from None
            raise ConnectionClosedError(
                status,
                error_code="handshake_refused",
                error_message=f"the server refused the WebSocket handshake "
                f"(HTTP {status})",
            ) from None
        except (OSError, TimeoutError, InvalidHandshake, EOFError) as error:
            raise _Retry(f"{type(error).__name__}: {error}") from None
        try:
            while True:
                text = await asyncio.wait_for(ws.recv(), self.open_timeout)
                frame = Frame.from_json(text)
                self._handle(frame)
                if frame.state == "connected":
                    return ws
        except ConnectionClosed:
            raise self._closed_outcome(ws) from None
        except (TimeoutError, ProtocolViolation) as error:
            await ws.close()
            raise _Retry(f"no greeting: {error}") from None

    def _closed_outcome(self, ws: ClientConnection) -> Exception:
        """ConnectionClosedError for a close on purpose, _Retry for the network's."""
        code = ws.close_code or CLOSE_ABNORMAL
        reason = ws.close_reason or ""
        error = self._last_error or {}
        if code in RETRYABLE_CLOSE_CODES:
            return _Retry(f"closed {code} {error.get('code', reason)}".strip())
        return ConnectionClosedError(
            code,
            reason=reason,
            error_code=error.get("code"),
            error_message=error.get("message"),
        )

    # --- reading ---------------------------------------------------------------
    async def _run(self, ws: ClientConnection) -> None:
        while True:
            try:
                async for text in ws:
                    try:
                        frame = Frame.from_json(text)
                    except ProtocolViolation as error:
                        logger.warning("ignored a frame: %s", error)
                        continue
                    self._handle(frame)
            except ConnectionClosed:
                pass
            if self._closing.is_set():
                return
            outcome = self._closed_outcome(ws)
            if isinstance(outcome, ConnectionClosedError):
                self._finish(outcome)
                return
            logger.info("connection lost (%s); reconnecting", outcome)
            self._set_state(ConnectionState.RECONNECTING)
            try:
                ws = await self._open_with_retry()
            except ParleyError as error:
                if not self._closing.is_set():
                    self._finish(error)
                return
            self._ws = ws
            self._generation += 1
            self.reconnects += 1
            self._set_state(ConnectionState.CONNECTED)
            self._spawn(self._after_reconnect(self._generation))

    def _handle(self, frame: Frame) -> None:
        if frame.type == "error" and frame.request_id is None and frame.run_id is None:
            self._last_error = frame.content if isinstance(frame.content, dict) else {}
        for event in self.view.apply(frame):
            if isinstance(event, ResyncNeeded):
                logger.info("chunk gap in run %s: asking for a snapshot", event.run_id)
                self._spawn(self._send_quietly(frames.resume(None)))
                continue
            if isinstance(event, Synced) and not event.initial:
                self._resynced_generation = self._generation
            self._dispatch(event)
        if frame.request_id is not None:
            pending = self._pending.pop(frame.request_id, None)
            if pending is not None and not pending.future.done():
                if frame.type == "error":
                    content = frame.content if isinstance(frame.content, dict) else {}
                    pending.future.set_exception(
                        RequestError(
                            str(content.get("code", "")),
                            str(content.get("message", "")),
                            frame,
                        )
                    )
                else:
                    pending.future.set_result(frame)

    def _dispatch(self, item: Any) -> None:
        for queue in list(self._subscribers):
            queue.put_nowait(item)

    def _finish(self, error: ParleyError) -> None:
        if self.error is None:
            self.error = error
        self._set_state(ConnectionState.DISCONNECTED)
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)
                pending.future.exception()  # retrieved: no "never retrieved" noise
        self._pending.clear()
        by_client = isinstance(error, ConnectionClosedError) and error.by_client
        self._dispatch(_END if by_client else error)

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _after_reconnect(self, generation: int) -> None:
        """Once the replay is in (a ping sent now is answered after it), send
        again what the lost connection left unanswered and the replay did not
        answer."""
        for pending in list(self._pending.values()):
            if pending.internal and pending.generation < generation:
                self._pending.pop(pending.frame["request_id"], None)
                pending.future.cancel()
        try:
            await self._request(frames.ping(), timeout=self.open_timeout, internal=True)
        except (ParleyError, asyncio.CancelledError):
            return  # lost again (the next reconnect does this) or closed
        for pending in list(self._pending.values()):
            if pending.internal or pending.generation >= generation:
                continue
            if pending.frame["type"] == "message" and (
                self._resynced_generation == generation
            ):
                # A snapshot cannot say which request a message came from: one
                # of ours with this text that is new since then is taken for it.
                found = self._message_since(pending)
                if found is not None:
                    self._pending.pop(pending.frame["request_id"], None)
                    pending.future.set_result(found)
                    continue
            await self._transmit(pending)

    def _message_since(self, pending: _Pending) -> Frame | None:
        for message in self.view.messages.values():
            if (
                message.role == "user"
                and message.author == self.view.user
                and message.text == pending.frame.get("content")
                and message.id not in pending.known_messages
            ):
                return Frame(
                    type="message",
                    content={"id": message.id, "role": "user", "text": message.text},
                    thread_id=self.thread_id,
                    run_id=message.run_id,
                    request_id=pending.frame["request_id"],
                )
        return None

    # --- sending ---------------------------------------------------------------
    async def send(self, frame: Mapping[str, Any]) -> None:
        """Send a frame without waiting for a reply (lost if the connection is)."""
        text = frames.encode(frame)
        self._require_open()
        if self._ws is None:
            raise ConnectionLostError("not connected right now", attempts=0, elapsed=0)
        await self._ws.send(text)

    async def _send_quietly(self, frame: Mapping[str, Any]) -> None:
        try:
            if self._ws is not None:
                await self._ws.send(frames.encode(frame))
        except ConnectionClosed:
            pass  # the reconnect resumes; a fresh snapshot comes with it if needed

    async def request(
        self, frame: Mapping[str, Any], *, timeout: float | None = 30.0
    ) -> Frame:
        """Send a frame with a `request_id` and return its reply: the `message`
        event (message), `status` accepted (config, cancel, input, resume),
        `pong` (ping). An `error` reply raises RequestError; the connection
        ending raises its ConnectionClosedError or ConnectionLostError."""
        return await self._request(frame, timeout=timeout)

    async def _request(
        self, frame: Mapping[str, Any], *, timeout: float | None, internal: bool = False
    ) -> Frame:
        data = dict(frame)
        request_id = data.setdefault("request_id", uuid.uuid4().hex)
        if not isinstance(request_id, str) or not 0 < len(request_id) <= 128:
            raise ValueError("request_id is a string of 1 to 128 characters")
        frames.encode(data)  # a bad or oversized frame fails here, before anything
        self._require_open()
        if request_id in self._pending:
            raise ValueError(f"request {request_id!r} is waiting for its reply")
        pending = _Pending(
            frame=data,
            future=asyncio.get_running_loop().create_future(),
            internal=internal,
            known_messages=frozenset(self.view.messages),
        )
        self._pending[request_id] = pending
        if self._state is ConnectionState.CONNECTED:
            await self._transmit(pending)
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), timeout)
        except TimeoutError:
            if self._pending.get(request_id) is pending:
                del self._pending[request_id]
            raise RequestTimeout(
                f"no reply to {data['type']} {request_id} within {timeout} s"
            ) from None

    async def _transmit(self, pending: _Pending) -> None:
        pending.generation = self._generation
        try:
            if self._ws is not None:
                await self._ws.send(frames.encode(pending.frame))
        except ConnectionClosed:
            pass  # sent again after the reconnect

    def _require_open(self) -> None:
        if self.error is not None:
            raise self.error
        if self._state in (ConnectionState.DISCONNECTED, ConnectionState.DISCONNECTING):
            raise RuntimeError("the client is not connected (call connect())")

    # --- conveniences ----------------------------------------------------------
    async def post(self, text: str) -> Frame:
        """Post a message; returns its `message` event (`run_id`: its run)."""
        return await self.request(frames.message(text))

    async def answer(self, question: InputRequested, text: str) -> Frame:
        return await self.request(
            frames.answer(question.run_id, text, question.input_id)
        )

    async def approve(self, question: InputRequested, approve: bool = True) -> Frame:
        return await self.request(
            frames.approval(question.run_id, question.input_id, approve)
        )

    async def cancel(self, run_id: str | None = None) -> Frame:
        return await self.request(frames.cancel(run_id))

    async def configure(self, overrides: Mapping[str, Any]) -> Frame:
        return await self.request(frames.config(overrides))

    async def ping(self, timeout: float | None = 10.0) -> Frame:
        return await self.request(frames.ping(), timeout=timeout)

    # --- streams ---------------------------------------------------------------
    def _subscribe(self) -> asyncio.Queue[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        if self.error is not None:
            by_client = (
                isinstance(self.error, ConnectionClosedError) and self.error.by_client
            )
            queue.put_nowait(_END if by_client else self.error)
        self._subscribers.add(queue)
        return queue

    async def events(self) -> AsyncIterator[Event]:
        """Every event of the thread from now on, until the connection ends
        (raises its error; ends quietly after `close()`)."""
        queue = self._subscribe()
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._subscribers.discard(queue)

    async def ask(
        self, text: str, *, on_input: InputHandler | None = None
    ) -> AsyncIterator[Event]:
        """Post `text` and iterate its run: TextDelta chunks, RunStatusChanged,
        StateChanged, InputRequested (answered by `on_input` if given), and last
        RunCompleted. A refused message raises RequestError."""
        queue = self._subscribe()
        try:
            reply = await self.post(text)
            if reply.run_id is None:
                raise ProtocolViolation("the message event names no run")
            async for event in self._run_events(queue, reply.run_id, on_input):
                yield event
        finally:
            self._subscribers.discard(queue)

    async def follow(
        self, run_id: str, *, on_input: InputHandler | None = None
    ) -> AsyncIterator[Event]:
        """Iterate a run already started (e.g. by `POST .../runs/`): its text
        so far as one TextDelta, then as `ask`."""
        queue = self._subscribe()
        try:
            run = self.view.runs.get(run_id)
            if run is not None and run.done:
                yield RunCompleted(run_id, run.text, run.status, run.error)
                return
            if run is not None:
                if run.text:
                    yield TextDelta(run_id, run.text)
                for question in list(run.open_inputs.values()):
                    queue.put_nowait(question)
            async for event in self._run_events(queue, run_id, on_input):
                yield event
        finally:
            self._subscribers.discard(queue)

    async def _run_events(
        self, queue: asyncio.Queue[Any], run_id: str, on_input: InputHandler | None
    ) -> AsyncIterator[Event]:
        while True:
            item = await queue.get()
            if item is _END:
                raise ConnectionClosedError(CLOSE_NORMAL, by_client=True)
            if isinstance(item, BaseException):
                raise item
            if not isinstance(item, RUN_EVENTS) or item.run_id != run_id:
                continue
            if isinstance(item, InputRequested) and on_input is not None:
                self._spawn(self._answer_with(on_input, item))
            yield item
            if isinstance(item, RunCompleted):
                return

    async def _answer_with(
        self, handler: InputHandler, question: InputRequested
    ) -> None:
        try:
            value = handler(question)
            if inspect.isawaitable(value):
                value = await value
            if value is None:
                return
            if question.kind == "approval":
                await self.approve(question, bool(value))
            else:
                await self.answer(question, str(value))
        except RequestError as error:
            if error.code != "input_not_pending":  # someone else answered first
                logger.warning("answering %s failed: %s", question.input_id, error)
        except ParleyError as error:
            logger.info("answering %s failed: %s", question.input_id, error)
        except Exception:
            logger.exception("the input handler failed")


def message_of(frame: Frame) -> Message:
    """The message a `message` event (a `post()` reply) carries."""
    return Message.from_content(frame.content)
