"""The Vercel AI SDK endpoint: what `useChat` (AI SDK 5 and 6) talks to
(docs/clients.md, "Vercel AI SDK").

* `POST /api/aisdk/<agent name>`: DefaultChatTransport's body, `{"id": <chat
  id>, "messages": [UIMessage...], "trigger": "submit-message", ...}`. The last
  message (the user's, its `text` parts) is posted to the Parley thread the
  chat id names (the same rule as AG-UI's `threadId`, compat/agui.py: a Parley
  thread id, or a new thread of the caller's with that id) through the same
  service as the socket and the OpenAI endpoint; the answer is that run as the
  AI SDK's UI message stream.
* `GET /api/aisdk/<agent name>/<chat id>/stream`: what `useChat({resume:
  true})` (DefaultChatTransport.reconnectToStream) calls on load: 204 when the
  thread has no run in flight (or is not the caller's to read), else the run
  re-streamed from its start, from the event log (which keeps a bounded
  history: when it no longer holds the run's start, the text so far comes as
  one delta, compat/follow.py), then live.

The UI message stream (protocol `v1`, header `x-vercel-ai-ui-message-stream`):
Server-Sent Events `data: <chunk JSON>`, ending with `data: [DONE]`:
`start` (`messageId` = the run's id, `messageMetadata` the Parley thread and
run), `start-step`, `text-start` / `text-delta` / `text-end`, a tool step as
`tool-input-available` then `tool-output-available` (or `tool-output-error`),
both `dynamic` and `providerExecuted` (the server ran it), then a new step;
a question or approval as a `data-parley-input-request` part; then
`finish-step` and `finish`, or `error` (a failed run, access lost), or `abort`
(a run cancelled in the thread). Errors before the stream starts are JSON in
Parley's API shape, as compat/agui.py's.
"""

from __future__ import annotations

import json
import logging
from contextlib import aclosing
from typing import Any, Literal

from django.conf import settings
from django.http import HttpResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chat.access import live_access
from chat.selectors import thread_get_for_user
from compat import wire
from compat.agui import (
    agent_named,
    bad_request,
    event_stream,
    parley_errors,
    thread_id_for,
    title_from,
    turn_follower,
)
from compat.follow import (
    AccessLost,
    Ended,
    Heartbeat,
    InputRequest,
    RunFollower,
    TextDelta,
    ToolCall,
    ToolResult,
)
from compat.selectors import run_active_get
from compat.views import authenticate_bearer, bearer_token_key, require_method
from realtime.errors import ErrorCode, ServiceError
from realtime.events import call_service

logger = logging.getLogger(__name__)

STREAM_HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
INPUT_REQUEST_PART = "data-parley-input-request"


class UIMessagePart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class UIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = ""
    role: Literal["system", "user", "assistant"]
    parts: list[UIMessagePart] = Field(default_factory=list)


class ChatRequest(BaseModel):
    """DefaultChatTransport's body (fields Parley does not use are ignored)."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    messages: list[UIMessage] = Field(min_length=1)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: str | None = None  # noqa: N815 (the AI SDK's name)


def _parse(body: bytes) -> ChatRequest:
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise bad_request("The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise bad_request("The body must be a JSON object ({id, messages, ...}).")
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise bad_request(f"{where}: {first['msg']}") from None


def _user_text(chat: ChatRequest) -> str:
    if chat.trigger == "regenerate-message":
        raise bad_request(
            "Regenerating is not supported: the thread is shared and keeps "
            "every reply; send a new message instead."
        )
    last = chat.messages[-1]
    if last.role != "user":
        raise bad_request("The last message must be the user's: it is what is posted.")
    texts = []
    for part in last.parts:
        if part.type == "text" and part.text is not None:
            texts.append(part.text)
        elif part.type not in ("step-start",) and not part.type.startswith("data-"):
            raise bad_request(f"Only text parts are supported, not {part.type!r}.")
    text = "\n".join(texts)
    if not text.strip():
        raise bad_request("The last user message has no text.")
    return text


@parley_errors
async def chat(request, agent_name: str):
    require_method(request, "POST")
    user = await authenticate_bearer(request)
    body = _parse(request.body)
    text = _user_text(body)
    agent = await agent_named(agent_name)
    run, _role, follower, after, generation = await turn_follower(
        request,
        user=user,
        agent=agent,
        client_thread_id=body.id,
        text=text,
        title=title_from(text),
    )
    chunks = _chunks(follower, run=run, after=after, generation=generation)
    return event_stream(chunks, run=run, extra_headers=STREAM_HEADERS)


def _thread_role(*, thread_id: str, user):
    """The caller's role in the thread, None when it is not theirs to read."""
    try:
        return thread_get_for_user(thread_id=thread_id, user=user)[1]
    except ServiceError:
        return None


@parley_errors
async def resume_stream(request, agent_name: str, chat_id: str):
    require_method(request, "GET")
    user = await authenticate_bearer(request)
    # `agent_name` is only where DefaultChatTransport puts the path (after its
    # `api`): the chat's thread has its own agent, whichever is running.
    thread_id = thread_id_for(client_id=chat_id, user=user)
    # Nothing to resume, whether the thread does not exist yet (a new chat's
    # first load), is not the caller's to read, or is idle: useChat's 204.
    role = await call_service(_thread_role, thread_id=thread_id, user=user)
    if role is None:
        return HttpResponse(status=204)
    generation = live_access().generation
    run = await call_service(run_active_get, thread_id=thread_id)
    if run is None:
        return HttpResponse(status=204)
    follower = RunFollower(
        thread_id=thread_id,
        run_id=str(run.id),
        user=user,
        token_key=bearer_token_key(request),
        role=role,
    )
    # From the log's first event on: the follower keeps only this run's, and
    # falls back to the text so far when the log no longer holds the start.
    chunks = _chunks(follower, run=run, after=0, generation=generation)
    return event_stream(chunks, run=run, extra_headers=STREAM_HEADERS)


def _chunk(data: dict[str, Any]) -> bytes:
    return wire.sse(json.dumps(data, ensure_ascii=False))


class _Parts:
    """The reply's text parts and steps as UI message chunks: text before a
    model turn's tool calls shares their step; the text after their results
    starts the next step, as the AI SDK's own streamText does."""

    def __init__(self) -> None:
        self.open_id: str | None = None
        self.count = 0
        self.in_tools = False

    def text(self, piece: str) -> list[dict]:
        chunks = []
        if self.in_tools:
            chunks += [{"type": "finish-step"}, {"type": "start-step"}]
            self.in_tools = False
        if self.open_id is None:
            self.count += 1
            self.open_id = f"text-{self.count}"
            chunks.append({"type": "text-start", "id": self.open_id})
        chunks.append({"type": "text-delta", "id": self.open_id, "delta": piece})
        return chunks

    def close_text(self) -> list[dict]:
        if self.open_id is None:
            return []
        ended, self.open_id = self.open_id, None
        return [{"type": "text-end", "id": ended}]

    def tool_call(self, call: ToolCall) -> list[dict]:
        self.in_tools = True
        return [
            *self.close_text(),
            {
                "type": "tool-input-available",
                "toolCallId": call.id,
                "toolName": call.name,
                "input": call.arguments,
                "dynamic": True,
                "providerExecuted": True,
            },
        ]

    def tool_result(self, result: ToolResult) -> list[dict]:
        if result.error is not None:
            chunk = {
                "type": "tool-output-error",
                "toolCallId": result.id,
                "errorText": result.error,
            }
        else:
            chunk = {
                "type": "tool-output-available",
                "toolCallId": result.id,
                "output": result.output,
            }
        return [{**chunk, "dynamic": True, "providerExecuted": True}]

    def end(self) -> list[dict]:
        return [*self.close_text(), {"type": "finish-step"}]


async def _chunks(follower: RunFollower, *, run, after: int, generation: int):
    """The run as a UI message stream (module docstring). Opened here, not in
    the view, so that a client gone before the first byte leaves no
    subscription behind."""
    parts = _Parts()
    heartbeat = settings.PARLEY_SSE_HEARTBEAT_SECONDS
    try:
        await follower.open(read_at_generation=generation)
        metadata = {"parleyThreadId": str(run.thread_id), "parleyRunId": str(run.id)}
        yield _chunk(
            {"type": "start", "messageId": str(run.id), "messageMetadata": metadata}
        )
        yield _chunk({"type": "start-step"})
        updates = follower.updates(after=after, heartbeat=heartbeat)
        async with aclosing(updates):
            async for update in updates:
                chunks: list[dict] = []
                if isinstance(update, TextDelta):
                    chunks = parts.text(update.text) if update.text else []
                elif isinstance(update, ToolCall):
                    chunks = parts.tool_call(update)
                elif isinstance(update, ToolResult):
                    chunks = parts.tool_result(update)
                elif isinstance(update, InputRequest):
                    chunks = [
                        {
                            "type": INPUT_REQUEST_PART,
                            "id": update.content.get("input_id"),
                            "data": update.content,
                        }
                    ]
                elif isinstance(update, Heartbeat):
                    yield wire.HEARTBEAT
                elif isinstance(update, Ended):
                    chunks = [*parts.end(), *_ending(update)]
                elif isinstance(update, AccessLost):
                    chunks = [
                        *parts.end(),
                        {
                            "type": "error",
                            "errorText": f"{update.code}: {update.message}",
                        },
                    ]
                for chunk in chunks:
                    yield _chunk(chunk)
                if isinstance(update, Ended | AccessLost):
                    yield wire.DONE
                    return
    except Exception:  # the response has started: say so in the stream
        logger.exception("AI SDK stream failed")
        yield _chunk(
            {
                "type": "error",
                "errorText": f"{ErrorCode.SERVER_ERROR.value}: Something went "
                "wrong on our side.",
            }
        )
        yield wire.DONE
    finally:
        await follower.close()


def _ending(ended: Ended) -> list[dict]:
    if ended.status == "completed":
        return [{"type": "finish", "finishReason": "stop"}]
    if ended.status == "cancelled":
        return [{"type": "abort", "reason": ended.error or "cancelled in the thread"}]
    code = ended.error_code or "internal_error"
    message = ended.error or "The agent's run failed."
    return [{"type": "error", "errorText": f"{code}: {message}"}]
