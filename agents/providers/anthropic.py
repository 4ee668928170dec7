"""The `anthropic` provider: Anthropic's Messages API through the official SDK.

`base_url` is blank for https://api.anthropic.com, or an Anthropic-compatible
endpoint. The SDK's own environment fallbacks (ANTHROPIC_BASE_URL, profiles ...)
are bypassed on purpose: an agent config alone decides where its calls go.

API key: `request.api_key` is read by the runtime from the variable the agent's
`api_key_env` names. The Anthropic endpoint needs one, so without it the call
fails with `provider_key_missing` before any network traffic. A custom
`base_url` may be a local server that wants no key: the SDK is then given the
placeholder "not-needed", and a 401/403 from such a server says to set
`api_key_env`.

Request: `system=` the system prompt, `messages` oldest first (blank messages
are skipped: the API rejects empty text), `model` and `max_tokens`.
`temperature` is not sent: SDK 2.x removed the sampling parameters and the API
version it speaks (2026-10-21) answers 400 to them. Keys of `extra_params` that
`messages.create` knows (stop_sequences, metadata, thinking, tools ...) become
keyword arguments; any other key is added to the JSON body via `extra_body`, so
a compatible server that still takes `temperature` can get it there. Keys the
provider sets itself (model, messages, system, max_tokens, stream ...) are
ignored and reported by `config_problems`; a key set to null is left out.

Tools: `request.tools` become `tools` (`{"name", "description",
"input_schema"}`); an assistant turn's tool calls go back as `tool_use` blocks
after its text, their results as one user turn of `tool_result` blocks
(`is_error` for failed calls). Without `request.tools`, an
`extra_params.tools` is passed through as before.

Events: a `TextDelta` per `text_delta`; a complete `ToolCall` when a `tool_use`
block stops (its `input_json_delta` fragments put together); `Usage` last,
input tokens from `message_start` (cache reads and writes included), output
tokens from the last `message_delta`. Thinking and other non-text deltas are not
part of the reply. Event types this module does not know are ignored, as
Anthropic's versioning policy asks. With `stream` off, the whole text is one
`TextDelta`.

Time limits and retries: `request.timeout` bounds every network wait (connect,
each read), not the whole reply. Before the reply starts, the SDK retries
connection errors, 408, 409, 429 and 5xx up to `request.max_retries` times,
honouring Retry-After; nothing is retried once text has streamed, and text
already yielded stays with the caller.

Failures raise `ProviderError` with a message safe to show users; it never
holds the key or a response body that may echo it (the SDK's own messages
quote the whole body): 401/403 `provider_auth_failed`, 429
`provider_rate_limited`, 408 and silence `provider_timeout`, 5xx, 529,
refused connections and in-stream `overloaded_error`/`api_error` events
`provider_unavailable`, invalid JSON or events out of protocol order
`provider_bad_response`, a stream cut before `message_stop`
`provider_connection_lost`, anything else `provider_error` (with the server's
own explanation of a 4xx when that does not mention the key).

Cancelling the task that iterates `stream()` closes the HTTP response and the
client at once (both are `async with` blocks).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2  # the SDK's HTTP client; mid-stream it lets transport errors through
from anthropic.resources.messages import AsyncMessages
from anthropic.types import Message

from agents.errors import AgentErrorCode
from agents.providers.base import (
    ChatMessage,
    Provider,
    ProviderError,
    ProviderEvent,
    ProviderRequest,
    TextDelta,
    ToolCall,
    Usage,
)
from agents.providers.http import (
    api_key_env_problem,
    bad_response,
    connection_failure,
    error_message,
    is_http_url,
    resolve_api_key,
    sdk_http_client,
    shared_client,
    status_failure,
    timeout_failure,
)

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.anthropic.com"

# Parameters the provider sets itself; extra_params cannot replace them.
FIXED_PARAMS = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stream",
        "extra_headers",
        "extra_query",
        "extra_body",
        "timeout",
    }
)
CREATE_PARAMS = (
    frozenset(inspect.signature(AsyncMessages.create).parameters)
    - {"self"}
    - FIXED_PARAMS
)
# In-stream `event: error` types, by the code they map to.
STREAM_ERROR_CODES = {
    "overloaded_error": AgentErrorCode.PROVIDER_UNAVAILABLE,
    "api_error": AgentErrorCode.PROVIDER_UNAVAILABLE,
    "rate_limit_error": AgentErrorCode.PROVIDER_RATE_LIMITED,
    "authentication_error": AgentErrorCode.PROVIDER_AUTH_FAILED,
    "permission_error": AgentErrorCode.PROVIDER_AUTH_FAILED,
    "timeout_error": AgentErrorCode.PROVIDER_TIMEOUT,
}


class AnthropicProvider(Provider):
    name = "anthropic"
    needs_api_key = True

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        api_key = resolve_api_key(request, default_base_url=DEFAULT_BASE_URL)
        arguments = _create_arguments(request)
        responded = False
        try:
            base_url = request.base_url or DEFAULT_BASE_URL
            client = shared_client(
                ("anthropic", base_url, api_key),
                lambda: anthropic.AsyncAnthropic(
                    api_key=api_key,
                    base_url=base_url,
                    http_client=sdk_http_client(anthropic),
                ),
            ).with_options(timeout=request.timeout, max_retries=request.max_retries)
            if not request.stream:
                message = await client.messages.create(**arguments, stream=False)
                responded = True
                for event in _message_events(message):
                    yield event
                return
            events = await client.messages.create(**arguments, stream=True)
            responded = True
            async with events:
                async for event in _stream_events(events):
                    yield event
        except ProviderError:
            raise
        except Exception as error:  # every failure becomes a ProviderError
            failure = _failure(error, responded=responded, api_key=api_key)
            # SDK errors quote response bodies, which may echo the key: keep
            # them out of tracebacks and logs.
            raise failure from (
                None if isinstance(error, anthropic.APIError) else error
            )

    def config_problems(self, agent: Any) -> dict[str, str]:
        problems: dict[str, str] = {}
        if not str(getattr(agent, "model", "") or "").strip():
            problems["model"] = "Set the model name, e.g. claude-sonnet-4-5."
        base_url = str(getattr(agent, "base_url", "") or "").strip()
        if base_url and not is_http_url(base_url):
            problems["base_url"] = "Use an http:// or https:// URL."
        env_name = str(getattr(agent, "api_key_env", "") or "").strip()
        key_problem = api_key_env_problem(
            env_name,
            base_url,
            default_base_url=DEFAULT_BASE_URL,
            missing="The Anthropic endpoint needs an API key: name the environment "
            "variable that holds it, e.g. ANTHROPIC_API_KEY.",
        )
        if key_problem:
            problems["api_key_env"] = key_problem
        extra = getattr(agent, "extra_params", None)
        if extra is not None and not isinstance(extra, dict):
            problems["extra_params"] = "Use a JSON object."
        elif extra:
            refused = sorted(key for key in extra if key in FIXED_PARAMS)
            if refused:
                problems["extra_params"] = (
                    f"Remove {', '.join(refused)}: the provider or the agent's own "
                    "fields set them."
                )
        return problems


def _create_arguments(request: ProviderRequest) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": [
            _message_param(message)
            for message in request.messages
            if message.content.strip() or message.tool_calls or message.tool_results
        ],
    }
    if request.tools:
        arguments["tools"] = [
            {
                "name": spec.name,
                "description": spec.description,
                "input_schema": spec.parameters,
            }
            for spec in request.tools
        ]
    if request.system_prompt:
        arguments["system"] = request.system_prompt
    extra_body: dict[str, Any] = {}
    for key, value in request.extra_params.items():
        if key in FIXED_PARAMS or value is None:
            continue
        if key in CREATE_PARAMS:
            arguments[key] = value
        else:
            extra_body[key] = value
    if extra_body:
        arguments["extra_body"] = extra_body
    return arguments


def _message_param(message: ChatMessage) -> dict[str, Any]:
    """One conversation turn in the Messages format."""
    if message.role == "tool":
        return {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": result.call_id,
                    "content": result.content,
                    **({"is_error": True} if result.is_error else {}),
                }
                for result in message.tool_results
            ],
        }
    if not message.tool_calls:
        return {"role": message.role, "content": message.content}
    blocks: list[dict[str, Any]] = []
    if message.content.strip():
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        try:
            given = json.loads(call.arguments or "{}")
        except ValueError:
            given = {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": given if isinstance(given, dict) else {},
            }
        )
    return {"role": message.role, "content": blocks}


async def _stream_events(events: Any) -> AsyncIterator[ProviderEvent]:
    started = stopped = False
    tool_calls: dict[int, dict[str, Any]] = {}
    open_blocks: set[int] = set()
    input_tokens: int | None = None
    output_tokens: int | None = None
    async for event in events:
        kind = getattr(event, "type", None)
        if not isinstance(kind, str):
            raise bad_response("The provider sent a stream event without a type.")
        if kind == "message_start":
            if started:
                raise bad_response("The provider started a second message.")
            started = True
            usage = getattr(getattr(event, "message", None), "usage", None)
            input_tokens = _input_tokens(usage) or input_tokens
            output_tokens = getattr(usage, "output_tokens", None)
            continue
        if not started:
            raise bad_response("The provider's stream did not start with a message.")
        if kind == "content_block_start":
            index = getattr(event, "index", None)
            block = getattr(event, "content_block", None)
            open_blocks.add(index)
            block_type = getattr(block, "type", None)
            if block_type in ("tool_use", "server_tool_use"):
                tool_calls[index] = {
                    "id": getattr(block, "id", None),
                    "name": getattr(block, "name", None),
                    "arguments": "",
                }
            elif block_type == "text" and getattr(block, "text", None):
                yield TextDelta(block.text)
        elif kind == "content_block_delta":
            index = getattr(event, "index", None)
            if index not in open_blocks:
                raise bad_response(
                    "The provider sent a delta for a content block it never started."
                )
            delta = getattr(event, "delta", None)
            delta_type = getattr(delta, "type", None)
            if delta_type == "text_delta":
                text = getattr(delta, "text", None)
                if isinstance(text, str) and text:
                    yield TextDelta(text)
            elif delta_type == "input_json_delta":
                entry = tool_calls.setdefault(
                    index, {"id": None, "name": None, "arguments": ""}
                )
                entry["arguments"] += getattr(delta, "partial_json", None) or ""
        elif kind == "content_block_stop":
            index = getattr(event, "index", None)
            open_blocks.discard(index)
            entry = tool_calls.pop(index, None)
            if entry is not None:
                yield ToolCall(
                    id=entry["id"] or f"toolu_{index}",
                    name=entry["name"] or "",
                    arguments=entry["arguments"],
                )
        elif kind == "message_delta":
            usage = getattr(event, "usage", None)
            input_tokens = _input_tokens(usage) or input_tokens
            output_tokens = getattr(usage, "output_tokens", None) or output_tokens
        elif kind == "message_stop":
            stopped = True
    if not stopped:
        raise ProviderError(
            AgentErrorCode.PROVIDER_CONNECTION_LOST,
            "The provider's stream ended before the reply was complete.",
        )
    if input_tokens is not None or output_tokens is not None:
        yield Usage(input_tokens=input_tokens, output_tokens=output_tokens)


def _input_tokens(usage: Any) -> int | None:
    """All input tokens of a usage object: plain, cache writes and cache reads."""
    counts = [
        getattr(usage, name, None)
        for name in (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        )
    ]
    counts = [count for count in counts if isinstance(count, int)]
    return sum(counts) if counts else None


def _message_events(message: Any) -> list[ProviderEvent]:
    content = getattr(message, "content", None)
    if not isinstance(message, Message) or not isinstance(content, list):
        raise bad_response("The provider's reply is not a message.")
    events: list[ProviderEvent] = []
    text = "".join(
        block.text
        for block in content
        if getattr(block, "type", None) == "text" and isinstance(block.text, str)
    )
    if text:
        events.append(TextDelta(text))
    for index, block in enumerate(content):
        if getattr(block, "type", None) in ("tool_use", "server_tool_use"):
            events.append(
                ToolCall(
                    id=getattr(block, "id", None) or f"toolu_{index}",
                    name=getattr(block, "name", None) or "",
                    arguments=json.dumps(getattr(block, "input", None) or {}),
                )
            )
    usage = getattr(message, "usage", None)
    if usage is not None:
        events.append(
            Usage(
                input_tokens=_input_tokens(usage),
                output_tokens=getattr(usage, "output_tokens", None),
            )
        )
    return events


def _failure(error: Exception, *, responded: bool, api_key: str) -> ProviderError:
    """The user-facing ProviderError for an exception from the SDK or transport."""
    if isinstance(error, anthropic.APIStatusError):
        if error.status_code < 400:  # an `event: error` inside a 200 stream
            return _stream_error_failure(error, api_key=api_key)
        return status_failure(error.status_code, error.body, api_key=api_key)
    if isinstance(error, anthropic.APITimeoutError | httpx2.TimeoutException):
        return timeout_failure()
    if isinstance(error, anthropic.APIConnectionError | httpx2.TransportError):
        return connection_failure(responded=responded)
    if isinstance(error, anthropic.APIResponseValidationError | ValueError):
        return bad_response("The provider sent a reply that could not be read.")
    logger.warning("Unexpected error from the Anthropic SDK", exc_info=error)
    return ProviderError(
        AgentErrorCode.PROVIDER_ERROR, "The provider call failed unexpectedly."
    )


def _stream_error_failure(
    error: anthropic.APIStatusError, *, api_key: str
) -> ProviderError:
    """An `event: error` inside a 200 stream, e.g. `overloaded_error`."""
    body = error.body if isinstance(error.body, dict) else {}
    details = body.get("error") if isinstance(body.get("error"), dict) else {}
    code = STREAM_ERROR_CODES.get(
        str(details.get("type")), AgentErrorCode.PROVIDER_ERROR
    )
    if code is AgentErrorCode.PROVIDER_UNAVAILABLE:
        return ProviderError(
            code, "The provider is overloaded and stopped the reply; try again later."
        )
    if code is not AgentErrorCode.PROVIDER_ERROR:
        return ProviderError(
            code, f"The provider stopped the reply ({details['type']})."
        )
    detail = error_message(body, api_key)
    return ProviderError(
        code,
        f"The provider stopped the reply: {detail}"
        if detail
        else "The provider stopped the reply with an error.",
    )


provider = AnthropicProvider()
