"""The Chat Completions stream as plain JSON: the `openai` provider's fast path.

The SDK's `AsyncStream` builds a model for every event (`construct_type`, by
reflection over the pydantic fields): with 200 replies streaming at once that
was 45 % of a worker's CPU (py-spy on the bench's openai line), more than
reading the bytes. Here the same request goes through the SDK's public
`with_streaming_response` (authentication, retries, status errors and time
limits are the SDK's, unchanged) and its body is read as Server-Sent Events:
each `data:` is one `json.loads`, a plain dict.

`chunk_dicts` yields the stream's chunks as dicts, the SDK's path does the same
through its models (`PARLEY_OPENAI_FAST_STREAM=0`, or an SDK without
`with_streaming_response`: logged once as a warning), so agents/providers/openai.py
reads one shape either way.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import openai
from django.conf import settings
from openai.types.chat import ChatCompletionChunk

logger = logging.getLogger(__name__)

_LINE_END = re.compile(rb"\r\n|\r|\n")
_warned = False


class NotAChunk(ValueError):
    """A stream event that is not a chat completion chunk."""


def fast_stream_available(client: Any) -> bool:
    """Whether the fast path can be used with this client (else, once, a warning)."""
    global _warned
    if not settings.PARLEY_OPENAI_FAST_STREAM:
        return False
    if hasattr(client.chat.completions, "with_streaming_response"):
        return True
    if not _warned:
        _warned = True
        logger.warning(
            "openai SDK %s has no with_streaming_response: replies stream through "
            "its models, at several times the worker CPU per token",
            openai.__version__,
        )
    return False


async def chunk_dicts(
    client: Any, arguments: dict, *, started=lambda: None
) -> AsyncIterator[dict]:
    """The chunks of a streamed chat completion, as dicts, through the fast path
    or the SDK's models. Raises NotAChunk for an event of another shape and the
    SDK's errors (openai.APIError and its kin, httpx2 transport errors) as the
    SDK would. `started()` is called once the response's headers are in."""
    if not fast_stream_available(client):
        stream = await client.chat.completions.create(**arguments, stream=True)
        started()
        async with stream:
            async for chunk in stream:
                if not isinstance(chunk, ChatCompletionChunk):
                    raise NotAChunk
                yield chunk.to_dict()
        return
    create = client.chat.completions.with_streaming_response.create
    async with create(**arguments, stream=True) as response:
        started()
        async for data in sse_data(response.iter_bytes()):
            if data.startswith(b"[DONE]"):
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                raise NotAChunk from None
            if not isinstance(chunk, dict):
                raise NotAChunk
            if chunk.get("error"):  # an error event in the stream, as the SDK reads it
                error = chunk["error"]
                message = error.get("message") if isinstance(error, dict) else None
                raise openai.APIError(
                    message=message
                    if isinstance(message, str) and message
                    else "An error occurred during streaming",
                    request=response.http_request,
                    body=error,
                )
            yield chunk


async def sse_data(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The `data` of each Server-Sent Event in a byte stream (the WHATWG rules:
    lines end in CRLF, LF or CR; a blank line ends an event; several `data`
    lines are joined with LF; comments and other fields are passed over). An
    event the stream ends in without its blank line still counts."""
    pending = b""
    data: list[bytes] = []
    async for chunk in chunks:
        pending += chunk
        # A CR at the very end may be the first half of a CRLF: wait for more.
        cut = len(pending) - 1 if pending.endswith(b"\r") else len(pending)
        *lines, rest = _LINE_END.split(pending[:cut])
        pending = rest + pending[cut:]
        for line in lines:
            if line:
                _add_field(data, line)
            elif data:
                yield b"\n".join(data)
                data = []
    if pending.rstrip(b"\r"):
        _add_field(data, pending.rstrip(b"\r"))
    if data:
        yield b"\n".join(data)


def _add_field(data: list[bytes], line: bytes) -> None:
    field, _, value = line.partition(b":")
    if field == b"data":
        data.append(value[1:] if value.startswith(b" ") else value)
