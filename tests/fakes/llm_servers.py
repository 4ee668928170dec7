"""Fake OpenAI and Anthropic servers: real HTTP/1.1 on 127.0.0.1, scripted per test.

Each server runs its own asyncio loop in a background thread and writes the wire
format by hand (chunked transfer encoding, Server-Sent Events), so the official
SDKs talk to it exactly as they talk to the real APIs: nothing is patched. Any
code that can reach 127.0.0.1 can use one, whether that is a test's event loop,
a worker thread or a separate `runworker` process.

    with FakeOpenAIServer() as server:
        server.script(Scenario.error(429, retry_after="0"), Scenario.reply(["Hi"]))
        ...  # point an agent at server.base_url
        assert server.last_request.body["model"] == "gpt-test"

Scripting: `server.script(*scenarios)` answers the next requests with the given
scenarios in order; the last one then repeats for every later request. A new
server echoes the last user message back word by word (`Scenario.echo()`).

Recording: `server.requests` lists every request received (method, path,
lower-cased headers, parsed JSON body, the presented API key) with two events:
`finished` (the server is done with it) and `client_closed` (the client hung up
before the server finished: a cancelled or timed-out stream).
"""

from __future__ import annotations

import asyncio
import http
import itertools
import json
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

Ending = Literal[
    "complete", "drop", "stall", "malformed", "unexpected", "truncate", "error_event"
]

DEFAULT_TOKENS = ("The ", "quick ", "brown ", "fox ", "jumps.")
WORD = re.compile(r"\S+\s*|\s+")
# How often a waiting response checks whether the client hung up.
POLL_INTERVAL = 0.01


@dataclass(frozen=True)
class FakeToolCall:
    """A tool call the fake model makes after its text; `arguments` are the JSON
    fragments in the order the server streams them."""

    name: str
    arguments: tuple[str, ...]
    id: str = "call_fake_1"


@dataclass(frozen=True)
class Scenario:
    """What the server does with one request. Build one with the class methods."""

    status: int = 200
    tokens: tuple[str, ...] | None = None  # None: echo the last user message
    delay: float = 0.0  # seconds between two text tokens
    tool_calls: tuple[FakeToolCall, ...] = ()
    usage: tuple[int, int] | None = None  # (input, output); None: counted
    ending: Ending = "complete"
    after: int = 0  # text tokens sent before a failing `ending`
    hang: bool = False  # accept the request, never answer
    retry_after: str | None = None
    message: str | None = None  # error message in an error body
    # Reply with the results of the tool calls the request carries back.
    answer_tool_results: str | None = None  # the text before them

    @classmethod
    def tool_results(cls, prefix: str = "Result: ", *, delay: float = 0.0) -> Scenario:
        """Reply with `prefix` and the tool results the request sends back (the
        last tool turn's, joined with "; "), as a model answering with them."""
        return cls(answer_tool_results=prefix, delay=delay)

    @classmethod
    def calls(cls, *tool_calls: FakeToolCall, text: Sequence[str] = ()) -> Scenario:
        """A reply that asks for `tool_calls` (after `text`, if any)."""
        return cls(tokens=tuple(text), tool_calls=tuple(tool_calls))

    @classmethod
    def reply(
        cls,
        tokens: Sequence[str] = DEFAULT_TOKENS,
        *,
        delay: float = 0.0,
        usage: tuple[int, int] | None = None,
        tool_calls: Sequence[FakeToolCall] = (),
    ) -> Scenario:
        """A complete, successful reply made of `tokens` (one stream event each)."""
        return cls(
            tokens=tuple(tokens), delay=delay, usage=usage, tool_calls=tuple(tool_calls)
        )

    @classmethod
    def echo(cls, *, delay: float = 0.0) -> Scenario:
        """Reply with the last user message, word by word."""
        return cls(delay=delay)

    @classmethod
    def error(
        cls, status: int, *, message: str | None = None, retry_after: str | None = None
    ) -> Scenario:
        """An HTTP error with the API's JSON error body (401, 429, 500, 503 ...).

        Without `message`, a 401 body echoes the presented API key, as careless
        servers do, so tests can check that the key never reaches a user."""
        return cls(status=status, message=message, retry_after=retry_after)

    @classmethod
    def dropped(
        cls, after: int, tokens: Sequence[str] = DEFAULT_TOKENS, *, delay: float = 0.0
    ) -> Scenario:
        """Stream `after` tokens, then close the TCP connection mid-body."""
        return cls._failing("drop", after, tokens, delay)

    @classmethod
    def stalled(
        cls, after: int, tokens: Sequence[str] = DEFAULT_TOKENS, *, delay: float = 0.0
    ) -> Scenario:
        """Stream `after` tokens, then send nothing more until the client leaves."""
        return cls._failing("stall", after, tokens, delay)

    @classmethod
    def malformed(
        cls, after: int, tokens: Sequence[str] = DEFAULT_TOKENS, *, delay: float = 0.0
    ) -> Scenario:
        """Stream `after` tokens, then an SSE data line that is not valid JSON."""
        return cls._failing("malformed", after, tokens, delay)

    @classmethod
    def unexpected(
        cls, after: int, tokens: Sequence[str] = DEFAULT_TOKENS, *, delay: float = 0.0
    ) -> Scenario:
        """Stream `after` tokens, then valid JSON the protocol does not allow there
        (OpenAI: a payload that is not a chunk; Anthropic: a delta for a content
        block that was never started)."""
        return cls._failing("unexpected", after, tokens, delay)

    @classmethod
    def truncated(
        cls, after: int, tokens: Sequence[str] = DEFAULT_TOKENS, *, delay: float = 0.0
    ) -> Scenario:
        """Stream `after` tokens, then end the body cleanly without the end-of-reply
        events (`[DONE]` / `message_stop`), as a misbehaving proxy might."""
        return cls._failing("truncate", after, tokens, delay)

    @classmethod
    def error_event(
        cls, after: int, tokens: Sequence[str] = DEFAULT_TOKENS, *, delay: float = 0.0
    ) -> Scenario:
        """Stream `after` tokens, then an in-stream error (OpenAI: a `server_error`
        payload; Anthropic: `event: error` with `overloaded_error`)."""
        return cls._failing("error_event", after, tokens, delay)

    @classmethod
    def hanging(cls) -> Scenario:
        """Read the request and never answer, not even the status line."""
        return cls(hang=True)

    @classmethod
    def _failing(
        cls, ending: Ending, after: int, tokens: Sequence[str], delay: float
    ) -> Scenario:
        return cls(tokens=tuple(tokens), delay=delay, ending=ending, after=after)


@dataclass
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    raw_body: bytes
    scenario: Scenario
    finished: threading.Event = field(default_factory=threading.Event)
    client_closed: threading.Event = field(default_factory=threading.Event)

    @property
    def body(self) -> Any:
        """The JSON body, or None when there is none or it is not JSON."""
        try:
            return json.loads(self.raw_body) if self.raw_body else None
        except ValueError:
            return None

    @property
    def api_key(self) -> str | None:
        """The key presented as `Authorization: Bearer` or `x-api-key`."""
        authorization = self.headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            return authorization[len("bearer ") :]
        return self.headers.get("x-api-key")

    def wait_client_closed(self, timeout: float = 1.0) -> bool:
        """Whether the client hung up mid-response, waiting up to `timeout` s."""
        return self.client_closed.wait(timeout)


@dataclass
class _Reply:
    """Everything one scripted reply needs to render its events."""

    id: str
    model: str
    created: int
    tokens: tuple[str, ...]
    tool_calls: tuple[FakeToolCall, ...]
    input_tokens: int
    output_tokens: int
    include_usage: bool

    @property
    def text(self) -> str:
        return "".join(self.tokens)


class FakeLLMServer:
    """The HTTP machinery shared by the fake servers; subclasses add the API."""

    api_path: ClassVar[str]
    request_id_header: ClassVar[str]
    id_prefix: ClassVar[str]

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._lock = threading.Lock()
        self._script: list[Scenario] = [Scenario.echo()]
        self._requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(
            target=self._run, name=f"{type(self).__name__}", daemon=True
        )
        self._thread.start()
        self._ready.wait(10)
        if self._startup_error is not None:
            raise RuntimeError("fake LLM server did not start") from self._startup_error
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What an agent config's `base_url` should be to reach this server."""
        raise NotImplementedError

    # -- scripting and recording --------------------------------------------

    def script(self, *scenarios: Scenario) -> None:
        """Answer the next requests with `scenarios`; the last one then repeats."""
        if not scenarios:
            raise ValueError("script at least one scenario")
        with self._lock:
            self._script = list(scenarios)

    def reset(self) -> None:
        """Forget recorded requests and go back to echoing."""
        with self._lock:
            self._script = [Scenario.echo()]
            self._requests.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self._requests:
                raise AssertionError("the fake server received no request")
            return self._requests[-1]

    def wait_for_requests(
        self, count: int, timeout: float = 5.0
    ) -> list[RecordedRequest]:
        """Block until at least `count` requests arrived (AssertionError if not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            requests = self.requests
            if len(requests) >= count:
                return requests
            time.sleep(POLL_INTERVAL)
        raise AssertionError(f"expected {count} requests, got {len(self.requests)}")

    def _next_scenario(self) -> Scenario:
        with self._lock:
            return self._script.pop(0) if len(self._script) > 1 else self._script[0]

    # -- the server loop -------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(
                    self._serve_connection, self.host, self._requested_port
                )
            )
            self._port = self._server.sockets[0].getsockname()[1]
        except OSError as error:  # the port is taken: start() reports it
            self._startup_error = error
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            # HTTP/1.1 keep-alive: the SDKs reuse a connection for retries.
            while True:
                record = await self._read_request(reader)
                if record is None:
                    break
                with self._lock:
                    self._requests.append(record)
                if not await self._respond(record, reader, writer):
                    break
        except (
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass
        except asyncio.CancelledError:
            pass  # only `_shutdown` cancels these tasks; end quietly
        finally:
            self._connections.discard(task)
            writer.close()

    async def _read_request(
        self, reader: asyncio.StreamReader
    ) -> RecordedRequest | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None  # the client closed an idle connection
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        raw_body = await reader.readexactly(length) if length else b""
        return RecordedRequest(
            method=method,
            path=target.split("?", 1)[0],
            headers=headers,
            raw_body=raw_body,
            scenario=self._next_scenario(),
        )

    async def _respond(
        self,
        record: RecordedRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer one request; whether the connection may serve another."""
        hung_up = asyncio.Event()
        watcher = asyncio.create_task(self._watch_for_hang_up(reader, hung_up))
        try:
            return await self._play(record, writer, hung_up)
        except ConnectionError:
            hung_up.set()
            return False
        finally:
            watcher.cancel()
            if hung_up.is_set():
                record.client_closed.set()
            record.finished.set()

    @staticmethod
    async def _watch_for_hang_up(
        reader: asyncio.StreamReader, hung_up: asyncio.Event
    ) -> None:
        # An HTTP/1.1 client sends nothing while it waits for the response, so
        # end-of-file on the read side means it closed the connection.
        while not reader.at_eof():
            await asyncio.sleep(POLL_INTERVAL)
        hung_up.set()

    async def _play(
        self,
        record: RecordedRequest,
        writer: asyncio.StreamWriter,
        hung_up: asyncio.Event,
    ) -> bool:
        scenario = record.scenario
        if scenario.hang:
            await hung_up.wait()
            return False
        body = record.body if isinstance(record.body, dict) else {}
        if record.method != "POST" or record.path.rstrip("/") != self.api_path:
            await self._send_json(writer, 404, self._error_body(404, record, None))
            return True
        if scenario.status >= 400:
            extra = (
                {"retry-after": scenario.retry_after} if scenario.retry_after else {}
            )
            error_body = self._error_body(scenario.status, record, scenario.message)
            await self._send_json(writer, scenario.status, error_body, extra)
            return True
        reply = self._reply(body, scenario)
        if body.get("stream") is not True:
            return await self._play_whole(reply, scenario, writer, hung_up)

        await self._send_head(writer, 200, "text/event-stream; charset=utf-8")
        for event in self._prologue(reply):
            await self._send_chunk(writer, event)
        tokens = reply.tokens
        if scenario.ending != "complete":
            tokens = tokens[: scenario.after]
        for index, token in enumerate(tokens):
            if index and scenario.delay and await _wait(hung_up, scenario.delay):
                return False
            if hung_up.is_set():
                return False
            await self._send_chunk(writer, self._token_event(reply, token))

        match scenario.ending:
            case "complete":
                for event in self._epilogue(reply):
                    await self._send_chunk(writer, event)
            case "drop":
                await writer.drain()
                writer.close()  # flushes what was written, then FIN mid-body
                return False
            case "stall":
                await hung_up.wait()
                return False
            case "malformed":
                await self._send_chunk(writer, self._malformed_event())
            case "unexpected":
                await self._send_chunk(writer, self._unexpected_event(reply))
            case "error_event":
                await self._send_chunk(writer, self._error_event())
            case "truncate":
                pass
        await self._send_chunk(writer, b"")  # the last chunk ends the body
        return True

    async def _play_whole(
        self,
        reply: _Reply,
        scenario: Scenario,
        writer: asyncio.StreamWriter,
        hung_up: asyncio.Event,
    ) -> bool:
        """Answer a request with `stream` off: one JSON document."""
        if scenario.ending == "stall":
            await hung_up.wait()
            return False
        payload = json.dumps(self._whole_body(reply)).encode()
        if scenario.ending == "malformed":
            payload = payload[: len(payload) // 2]
        if scenario.ending == "drop":
            await self._send_head(
                writer, 200, "application/json", {"content-length": str(len(payload))}
            )
            writer.write(payload[: len(payload) // 2])
            await writer.drain()
            writer.close()
            return False
        await self._send_json_bytes(writer, 200, payload)
        return True

    def _reply(self, body: dict[str, Any], scenario: Scenario) -> _Reply:
        conversation = self._conversation(body)
        if scenario.answer_tool_results is not None:
            results = "; ".join(self.tool_results_of(body)) or "(no results)"
            tokens = tuple(WORD.findall(scenario.answer_tool_results + results))
        elif scenario.tokens is not None:
            tokens = scenario.tokens
        else:
            last_user = next(
                (text for role, text in reversed(conversation) if role == "user"), ""
            )
            tokens = tuple(WORD.findall(last_user)) or ("(silence)",)
        prompt_words = sum(len(text.split()) for _role, text in conversation)
        input_tokens, output_tokens = scenario.usage or (
            max(prompt_words, 1),
            len(tokens),
        )
        stream_options = body.get("stream_options") or {}
        return _Reply(
            id=f"{self.id_prefix}{next(self._ids):04d}",
            model=str(body.get("model", "")),
            created=int(time.time()),
            tokens=tokens,
            tool_calls=scenario.tool_calls,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            include_usage=bool(stream_options.get("include_usage")),
        )

    # -- wire helpers ----------------------------------------------------------

    async def _send_head(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        fields = {
            "content-type": content_type,
            "cache-control": "no-cache",
            "connection": "keep-alive",
            self.request_id_header: f"req_fake_{next(self._ids):04d}",
            **(headers or {}),
        }
        if "content-length" not in fields:
            fields["transfer-encoding"] = "chunked"
        lines = [f"HTTP/1.1 {status} {_reason(status)}"]
        lines += [f"{name}: {value}" for name, value in fields.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()

    @staticmethod
    async def _send_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    async def _send_json(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        document: Any,
        headers: dict[str, str] | None = None,
    ) -> None:
        await self._send_json_bytes(
            writer, status, json.dumps(document).encode(), headers
        )

    async def _send_json_bytes(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        fields = {"content-length": str(len(payload)), **(headers or {})}
        await self._send_head(writer, status, "application/json", fields)
        writer.write(payload)
        await writer.drain()

    # -- the API, per subclass -------------------------------------------------

    def _conversation(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        """(role, text) of the system prompt and messages in the request."""
        raise NotImplementedError

    def tool_results_of(self, body: dict[str, Any]) -> list[str]:
        """The results of the last tool turn a request carries, in call order."""
        raise NotImplementedError

    def tools_offered(self, body: dict[str, Any]) -> list[str]:
        """The names of the tools a request offers the model."""
        raise NotImplementedError

    def _prologue(self, reply: _Reply) -> list[bytes]:
        raise NotImplementedError

    def _token_event(self, reply: _Reply, token: str) -> bytes:
        raise NotImplementedError

    def _epilogue(self, reply: _Reply) -> list[bytes]:
        """Tool calls, end of reply and usage, after the text tokens."""
        raise NotImplementedError

    def _malformed_event(self) -> bytes:
        raise NotImplementedError

    def _unexpected_event(self, reply: _Reply) -> bytes:
        raise NotImplementedError

    def _error_event(self) -> bytes:
        raise NotImplementedError

    def _whole_body(self, reply: _Reply) -> dict[str, Any]:
        raise NotImplementedError

    def _error_body(
        self, status: int, record: RecordedRequest, message: str | None
    ) -> dict[str, Any]:
        raise NotImplementedError


class FakeOpenAIServer(FakeLLMServer):
    """OpenAI Chat Completions (`POST /v1/chat/completions`), streaming or not."""

    api_path = "/v1/chat/completions"
    request_id_header = "x-request-id"
    id_prefix = "chatcmpl-fake"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def _conversation(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        return [
            (str(message.get("role")), _text_of(message.get("content")))
            for message in body.get("messages") or []
            if isinstance(message, dict)
        ]

    def tool_results_of(self, body: dict[str, Any]) -> list[str]:
        results: list[str] = []
        for message in reversed(body.get("messages") or []):
            if not isinstance(message, dict) or message.get("role") != "tool":
                break
            results.insert(0, _text_of(message.get("content")))
        return results

    def tools_offered(self, body: dict[str, Any]) -> list[str]:
        return [
            str((tool.get("function") or {}).get("name"))
            for tool in body.get("tools") or []
            if isinstance(tool, dict)
        ]

    def _chunk(
        self, reply: _Reply, delta: dict[str, Any], finish_reason: str | None = None
    ) -> bytes:
        chunk: dict[str, Any] = {
            "id": reply.id,
            "object": "chat.completion.chunk",
            "created": reply.created,
            "model": reply.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
        }
        if reply.include_usage:
            chunk["usage"] = None
        return _data(chunk)

    def _prologue(self, reply: _Reply) -> list[bytes]:
        return [self._chunk(reply, {"role": "assistant", "content": ""})]

    def _token_event(self, reply: _Reply, token: str) -> bytes:
        return self._chunk(reply, {"content": token})

    def _epilogue(self, reply: _Reply) -> list[bytes]:
        events = []
        for index, call in enumerate(reply.tool_calls):
            opening = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            events.append(self._chunk(reply, {"tool_calls": [opening]}))
            for fragment in call.arguments:
                more = {"index": index, "function": {"arguments": fragment}}
                events.append(self._chunk(reply, {"tool_calls": [more]}))
        finish = "tool_calls" if reply.tool_calls else "stop"
        events.append(self._chunk(reply, {}, finish))
        if reply.include_usage:
            usage_chunk = {
                "id": reply.id,
                "object": "chat.completion.chunk",
                "created": reply.created,
                "model": reply.model,
                "system_fingerprint": "fp_fake",
                "choices": [],
                "usage": _openai_usage(reply),
            }
            events.append(_data(usage_chunk))
        events.append(b"data: [DONE]\n\n")
        return events

    def _malformed_event(self) -> bytes:
        return (
            b'data: {"id": "chatcmpl-fake", "choices": [{"delta": {"content": "oo\n\n'
        )

    def _unexpected_event(self, reply: _Reply) -> bytes:
        return _data(["this", "is", "not", "a", "chunk"])

    def _error_event(self) -> bytes:
        return _data(
            {
                "error": {
                    "message": "The server had an error while processing your request.",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
        )

    def _whole_body(self, reply: _Reply) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text,
            "refusal": None,
        }
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.name,
                        "arguments": "".join(call.arguments),
                    },
                }
                for call in reply.tool_calls
            ]
        return {
            "id": reply.id,
            "object": "chat.completion",
            "created": reply.created,
            "model": reply.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                }
            ],
            "usage": _openai_usage(reply),
        }

    def _error_body(
        self, status: int, record: RecordedRequest, message: str | None
    ) -> dict[str, Any]:
        model = (
            (record.body or {}).get("model") if isinstance(record.body, dict) else None
        )
        kind, code, default = {
            400: ("invalid_request_error", None, "Invalid request."),
            401: (
                "invalid_request_error",
                "invalid_api_key",
                f"Incorrect API key provided: {record.api_key}.",
            ),
            403: (
                "invalid_request_error",
                "unsupported_country_region_territory",
                "Forbidden.",
            ),
            404: (
                "invalid_request_error",
                "model_not_found",
                f"The model `{model}` does not exist or you do not have access to it.",
            ),
            429: (
                "requests",
                "rate_limit_exceeded",
                "Rate limit reached for requests.",
            ),
        }.get(
            status,
            (
                "server_error",
                None,
                "The server had an error while processing your request.",
            ),
        )
        return {
            "error": {
                "message": message if message is not None else default,
                "type": kind,
                "param": None,
                "code": code,
            }
        }


class FakeAnthropicServer(FakeLLMServer):
    """Anthropic Messages (`POST /v1/messages`), streaming or not."""

    api_path = "/v1/messages"
    request_id_header = "request-id"
    id_prefix = "msg_fake"

    @property
    def base_url(self) -> str:
        return self.origin

    def _conversation(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        conversation = []
        if body.get("system"):
            conversation.append(("system", _text_of(body["system"])))
        conversation += [
            (str(message.get("role")), _text_of(message.get("content")))
            for message in body.get("messages") or []
            if isinstance(message, dict)
        ]
        return conversation

    def tool_results_of(self, body: dict[str, Any]) -> list[str]:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        if not messages or not isinstance(messages[-1].get("content"), list):
            return []
        return [
            _text_of(block.get("content"))
            for block in messages[-1]["content"]
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]

    def tools_offered(self, body: dict[str, Any]) -> list[str]:
        return [
            str(tool.get("name"))
            for tool in body.get("tools") or []
            if isinstance(tool, dict)
        ]

    def _prologue(self, reply: _Reply) -> list[bytes]:
        message = {
            "id": reply.id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": reply.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": 1},
        }
        return [
            _event("message_start", {"type": "message_start", "message": message}),
            _event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            _event("ping", {"type": "ping"}),
        ]

    def _token_event(self, reply: _Reply, token: str) -> bytes:
        return _event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": token},
            },
        )

    def _epilogue(self, reply: _Reply) -> list[bytes]:
        events = [
            _event("content_block_stop", {"type": "content_block_stop", "index": 0})
        ]
        for index, call in enumerate(reply.tool_calls, start=1):
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            events.append(
                _event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": block,
                    },
                )
            )
            for fragment in call.arguments:
                delta = {"type": "input_json_delta", "partial_json": fragment}
                events.append(
                    _event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
                )
            events.append(
                _event(
                    "content_block_stop", {"type": "content_block_stop", "index": index}
                )
            )
        stop_reason = "tool_use" if reply.tool_calls else "end_turn"
        events.append(
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": reply.output_tokens},
                },
            )
        )
        events.append(_event("message_stop", {"type": "message_stop"}))
        return events

    def _malformed_event(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", "ind\n\n'

    def _unexpected_event(self, reply: _Reply) -> bytes:
        return _event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 7,
                "delta": {"type": "text_delta", "text": "?"},
            },
        )

    def _error_event(self) -> bytes:
        return _event(
            "error",
            {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded"},
            },
        )

    def _whole_body(self, reply: _Reply) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}]
        content += [
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": json.loads("".join(call.arguments) or "{}"),
            }
            for call in reply.tool_calls
        ]
        return {
            "id": reply.id,
            "type": "message",
            "role": "assistant",
            "model": reply.model,
            "content": content,
            "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": reply.input_tokens,
                "output_tokens": reply.output_tokens,
            },
        }

    def _error_body(
        self, status: int, record: RecordedRequest, message: str | None
    ) -> dict[str, Any]:
        kind, default = {
            400: ("invalid_request_error", "Invalid request."),
            401: ("authentication_error", f"invalid x-api-key: {record.api_key}"),
            403: ("permission_error", "Your API key does not have permission."),
            404: ("not_found_error", "Not found."),
            413: ("request_too_large", "Request exceeds the maximum size."),
            429: (
                "rate_limit_error",
                "Number of requests has exceeded your rate limit.",
            ),
            529: ("overloaded_error", "Overloaded"),
        }.get(status, ("api_error", "Internal server error"))
        return {
            "type": "error",
            "error": {
                "type": kind,
                "message": message if message is not None else default,
            },
            "request_id": f"req_fake_{next(self._ids):04d}",
        }


def _text_of(content: Any) -> str:
    """The text of a message `content`: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        )
    return ""


def _openai_usage(reply: _Reply) -> dict[str, int]:
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
    }


def _data(document: Any) -> bytes:
    return b"data: " + json.dumps(document).encode() + b"\n\n"


def _event(name: str, document: Any) -> bytes:
    return f"event: {name}\n".encode() + _data(document)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Overloaded" if status == 529 else "Unknown"


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` unless `event` is set first; whether it was set."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True
