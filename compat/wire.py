"""OpenAI Chat Completions on the wire: the request body Parley reads and the
`chat.completion` / `chat.completion.chunk` objects it answers with.

Answers are built from the official `openai` package's own types, so they are
what the SDKs parse; requests are checked by the pydantic models here (fields
Parley does not use are accepted and ignored: docs/clients.md lists them).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from openai.types import CompletionUsage, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from compat.errors import CompatErrorCode, OpenAIError

THREAD_HEADER = "X-Parley-Thread-Id"
RUN_HEADER = "X-Parley-Run-Id"
THREAD_METADATA_KEY = "parley_thread_id"
TITLE_CHARS = 80


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: StrictBool = False


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    metadata: dict[str, str] | None = None
    n: int | None = None


def parse_request(body: bytes) -> CompletionRequest:
    """The request body, or OpenAIError 400 naming what is wrong."""
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise _invalid("The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise _invalid("The body must be a JSON object.")
    try:
        request = CompletionRequest.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise _invalid(f"{param}: {first['msg']}", param=param) from None
    if request.n not in (None, 1):
        raise _invalid("Only n=1 is supported.", param="n")
    return request


def _invalid(message: str, *, param: str | None = None, code=None) -> OpenAIError:
    return OpenAIError(
        400, message, code=code or CompatErrorCode.INVALID_REQUEST, param=param
    )


def message_text(message: ChatMessage, index: int) -> str:
    """The text of a message: its string, or its `text` parts joined."""
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for part in message.content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise _invalid(
                "Only text content is supported.",
                param=f"messages.{index}.content",
                code=CompatErrorCode.UNSUPPORTED_CONTENT,
            )
        texts.append(part["text"])
    return "\n".join(texts)


def last_user_text(request: CompletionRequest) -> str:
    """What is posted to the thread: the last `user` message."""
    for index in range(len(request.messages) - 1, -1, -1):
        message = request.messages[index]
        if message.role == "user":
            text = message_text(message, index)
            if not text.strip():
                raise _invalid(
                    "The last user message is empty.", param=f"messages.{index}"
                )
            return text
    raise _invalid("messages has no user message.", param="messages")


def title_of(request: CompletionRequest) -> str:
    """A new thread's title: the first line of the first user message."""
    for index, message in enumerate(request.messages):
        if message.role == "user":
            lines = message_text(message, index).strip().splitlines()
            first = lines[0].strip() if lines else ""
            return (
                first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 1] + "…"
            )
    return ""


def usage_of(usage: dict) -> CompletionUsage:
    """Parley's usage (`input_tokens`, `output_tokens`) in OpenAI's terms."""
    prompt = int(usage.get("input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    return CompletionUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
    )


class Completion:
    """One call's answer: the same id, time and model on every chunk."""

    def __init__(
        self, *, run_id: str, thread_id: str, model: str, created: int
    ) -> None:
        self.id = f"chatcmpl-{run_id.replace('-', '')}"
        self.run_id, self.thread_id = run_id, thread_id
        self.model, self.created = model, created
        self.include_usage = False

    def whole(self, text: str, usage: dict) -> dict:
        completion = ChatCompletion.model_validate(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": None,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": text,
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage_of(usage).model_dump(exclude_none=True),
                "metadata": {
                    THREAD_METADATA_KEY: self.thread_id,
                    "parley_run_id": self.run_id,
                },
            }
        )
        return completion.model_dump(mode="json", exclude_unset=True)

    def _chunk(self, choices: list, usage: CompletionUsage | None = None) -> bytes:
        data = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if self.include_usage:
            data["usage"] = usage.model_dump(exclude_none=True) if usage else None
        chunk = ChatCompletionChunk.model_validate(data)
        return sse(chunk.model_dump_json(exclude_unset=True))

    def _delta(self, delta: dict, finish_reason: str | None = None) -> bytes:
        return self._chunk(
            [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ]
        )

    def role_chunk(self) -> bytes:
        return self._delta({"role": "assistant", "content": ""})

    def content_chunk(self, text: str) -> bytes:
        return self._delta({"content": text})

    def finish_chunk(self) -> bytes:
        return self._delta({}, finish_reason="stop")

    def usage_chunk(self, usage: dict) -> bytes:
        return self._chunk([], usage_of(usage))


def sse(data: str) -> bytes:
    return f"data: {data}\n\n".encode()


DONE = sse("[DONE]")
HEARTBEAT = b": keep-alive\n\n"


def model_object(agent) -> dict:
    return Model(
        id=agent.name,
        object="model",
        created=int(agent.created_at.timestamp()),
        owned_by="parley",
    ).model_dump(mode="json", exclude_none=True)
