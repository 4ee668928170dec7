"""The `openai` provider: any OpenAI-compatible Chat Completions endpoint.

One module serves OpenAI, Azure OpenAI (its `/openai/v1/` endpoint), Ollama, vLLM,
llama.cpp server and LM Studio through the official `openai` SDK. The agent's
`base_url` picks the server; blank means https://api.openai.com/v1. The SDK's own
environment fallbacks (OPENAI_BASE_URL ...) are bypassed on purpose: an agent
config alone decides where its calls go.

API key: `request.api_key` is read by the runtime from the variable the agent's
`api_key_env` names. The OpenAI endpoint needs one, so without it the call fails
with `provider_key_missing` before any network traffic. A custom `base_url` may
be a local server that wants no key: the SDK is then given the placeholder
"not-needed", and a 401/403 from such a server says to set `api_key_env`.

Request: the system prompt (if any), then `request.messages` oldest first, with
`model`, `temperature` and `max_tokens`. Keys of `extra_params` that
`chat.completions.create` knows (top_p, seed, stop, tools, response_format,
max_completion_tokens ...) become keyword arguments; any other key (Ollama's
`num_ctx`, vLLM's `top_k` ...) is added to the JSON body via `extra_body`. A key
set to null leaves that parameter out: reasoning models that reject
`temperature` take `{"temperature": null}`; `max_completion_tokens` replaces
`max_tokens`, which those models also reject.

Tools: `request.tools` become `tools` (`{"type": "function", "function":
{...}}`); an assistant turn's tool calls go back as its `tool_calls`, their
results as one `{"role": "tool", "tool_call_id", "content"}` message each.
Without `request.tools`, an `extra_params.tools` is passed through as before.

Events: a `TextDelta` per content delta; a complete `ToolCall` per tool call
once the stream has ended (the deltas are put together here, by `index`);
`Usage` last, when the server reports it (`stream_options.include_usage`).
With `stream` off, the whole text is one `TextDelta`.

Time limits and retries: `request.timeout` bounds every network wait (connect,
each read), not the whole reply, so a long answer may stream as long as tokens
keep coming while a silent server fails with `provider_timeout`. Before the
reply starts, the SDK retries connection errors, 408, 409, 429 and 5xx up to
`request.max_retries` times, honouring Retry-After; nothing is retried once
text has streamed, and text already yielded stays with the caller.

Failures raise `ProviderError` with a message safe to show users; it never
holds the key or a response body that may echo it:
401/403 `provider_auth_failed`, 429 `provider_rate_limited`, 408 and silence
`provider_timeout`, 5xx, refused connections and in-stream server errors
`provider_unavailable`, invalid JSON or non-chunk events
`provider_bad_response`, a stream cut before its end `provider_connection_lost`,
anything else `provider_error` (with the server's own explanation of a 4xx when
that does not mention the key).

Cancelling the task that iterates `stream()` closes the HTTP response and the
client at once (both are `async with` blocks).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx2  # the SDK's HTTP client; it lets some transport errors through
import openai
from openai.resources.chat.completions import AsyncCompletions
from openai.types.chat import ChatCompletion

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
    failed_to_connect,
    is_http_url,
    resolve_api_key,
    sdk_http_client,
    shared_client,
    status_failure,
    timeout_failure,
)
from agents.providers.openai_stream import NotAChunk, chunk_dicts

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"

# Parameters the provider sets itself; extra_params cannot replace them.
FIXED_PARAMS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "extra_headers",
        "extra_query",
        "extra_body",
        "timeout",
    }
)
# Parameters extra_params may only switch off, with null.
DROPPABLE_PARAMS = frozenset({"temperature", "max_tokens"})
CREATE_PARAMS = (
    frozenset(inspect.signature(AsyncCompletions.create).parameters)
    - {"self"}
    - FIXED_PARAMS
    - DROPPABLE_PARAMS
)


class OpenAIProvider(Provider):
    name = "openai"
    needs_api_key = True

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        api_key = resolve_api_key(request, default_base_url=DEFAULT_BASE_URL)
        arguments = _create_arguments(request)
        responded = False
        try:
            base_url = request.base_url or DEFAULT_BASE_URL
            client = shared_client(
                ("openai", base_url, api_key),
                lambda: openai.AsyncOpenAI(
                    api_key=api_key,
                    base_url=base_url,
                    http_client=sdk_http_client(openai),
                ),
            ).with_options(timeout=request.timeout, max_retries=request.max_retries)
            if not request.stream:
                completion = await client.chat.completions.create(
                    **arguments, stream=False
                )
                responded = True
                for event in _completion_events(completion):
                    yield event
                return

            def started() -> None:
                nonlocal responded
                responded = True

            chunks = chunk_dicts(
                client,
                {**arguments, "stream_options": {"include_usage": True}},
                started=started,
            )
            async with aclosing(chunks):
                async for event in _chunk_events(chunks):
                    yield event
        except ProviderError:
            raise
        except Exception as error:  # every failure becomes a ProviderError
            failure = _failure(error, responded=responded, api_key=api_key)
            # SDK errors may carry response bodies that echo the key: keep them
            # out of tracebacks and logs.
            raise failure from (None if isinstance(error, openai.APIError) else error)

    def config_problems(self, agent: Any) -> dict[str, str]:
        problems: dict[str, str] = {}
        if not str(getattr(agent, "model", "") or "").strip():
            problems["model"] = (
                "Set the model name, e.g. gpt-4o-mini, or llama3.1 for Ollama."
            )
        base_url = str(getattr(agent, "base_url", "") or "").strip()
        if base_url and not is_http_url(base_url):
            problems["base_url"] = (
                "Use an http:// or https:// URL, e.g. http://localhost:11434/v1."
            )
        env_name = str(getattr(agent, "api_key_env", "") or "").strip()
        key_problem = api_key_env_problem(
            env_name,
            base_url,
            default_base_url=DEFAULT_BASE_URL,
            missing="The OpenAI endpoint needs an API key: name the environment "
            "variable that holds it, e.g. OPENAI_API_KEY.",
        )
        if key_problem:
            problems["api_key_env"] = key_problem
        extra = getattr(agent, "extra_params", None)
        if extra is not None and not isinstance(extra, dict):
            problems["extra_params"] = "Use a JSON object."
        elif extra:
            refused = sorted(
                key
                for key, value in extra.items()
                if key in FIXED_PARAMS
                or (key in DROPPABLE_PARAMS and value is not None)
            )
            if refused:
                problems["extra_params"] = (
                    f"Remove {', '.join(refused)}: the agent's own fields set "
                    "them (temperature and max_tokens may only be null, to leave "
                    "them out)."
                )
        return problems


def _create_arguments(request: ProviderRequest) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if request.system_prompt:
        messages.append({"role": "system", "content": request.system_prompt})
    for message in request.messages:
        messages += _message_params(message)
    arguments: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
    }
    extra_body: dict[str, Any] = {}
    for key, value in request.extra_params.items():
        if key in FIXED_PARAMS:
            continue  # config_problems refuses these; never let them through
        if value is None:
            arguments.pop(key, None)
        elif key in DROPPABLE_PARAMS:
            continue
        elif key in CREATE_PARAMS:
            arguments[key] = value
        else:
            extra_body[key] = value
    if request.tools:
        arguments["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": spec.name,
                    "description": spec.description,
                    "parameters": spec.parameters,
                },
            }
            for spec in request.tools
        ]
    if "max_completion_tokens" in arguments:
        arguments.pop("max_tokens", None)
    if extra_body:
        arguments["extra_body"] = extra_body
    return arguments


def _message_params(message: ChatMessage) -> list[dict[str, Any]]:
    """One conversation turn in the Chat Completions format."""
    if message.role == "tool":
        return [
            {"role": "tool", "tool_call_id": result.call_id, "content": result.content}
            for result in message.tool_results
        ]
    param: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        param["content"] = message.content or None
        param["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    return [param]


async def _chunk_events(chunks: AsyncIterator[dict]) -> AsyncIterator[ProviderEvent]:
    """Provider events from the stream's chunks (dicts: openai_stream.py)."""
    tool_calls: dict[int, dict[str, Any]] = {}
    usage: Any = None
    finished = False
    async for chunk in chunks:
        choices = chunk.get("choices")
        if not isinstance(choices, list | None):
            raise NotAChunk
        if chunk.get("usage") is not None:
            usage = chunk["usage"]
        for choice in choices or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # only the first choice is the reply
            delta = choice.get("delta")
            if isinstance(delta, dict):
                text = delta.get("content") or delta.get("refusal")
                if isinstance(text, str) and text:
                    yield TextDelta(text)
                for call in delta.get("tool_calls") or []:
                    _add_tool_call_delta(tool_calls, call)
            if choice.get("finish_reason"):
                finished = True
    if not finished:
        raise ProviderError(
            AgentErrorCode.PROVIDER_CONNECTION_LOST,
            "The provider's stream ended before the reply was complete.",
        )
    for index in sorted(tool_calls):
        entry = tool_calls[index]
        yield ToolCall(
            id=entry["id"] or f"call_{index}",
            name=entry["name"] or "",
            arguments=entry["arguments"],
        )
    if usage is not None:
        yield _usage(usage)


def _add_tool_call_delta(calls: dict[int, dict[str, Any]], call: Any) -> None:
    """Put a streamed tool-call fragment into the call it belongs to (`index`)."""
    if not isinstance(call, dict):
        raise NotAChunk
    index = call.get("index") or 0
    entry = calls.setdefault(index, {"id": None, "name": None, "arguments": ""})
    if call.get("id"):
        entry["id"] = call["id"]
    function = call.get("function") or {}
    if function.get("name"):
        entry["name"] = function["name"]
    entry["arguments"] += function.get("arguments") or ""


def _completion_events(completion: Any) -> list[ProviderEvent]:
    choices = getattr(completion, "choices", None)
    if not isinstance(completion, ChatCompletion) or not isinstance(choices, list):
        raise bad_response("The provider's reply is not a chat completion.")
    events: list[ProviderEvent] = []
    message = getattr(choices[0], "message", None) if choices else None
    text = getattr(message, "content", None) or getattr(message, "refusal", None)
    if isinstance(text, str) and text:
        events.append(TextDelta(text))
    for index, call in enumerate(getattr(message, "tool_calls", None) or []):
        function = getattr(call, "function", None)
        events.append(
            ToolCall(
                id=getattr(call, "id", None) or f"call_{index}",
                name=getattr(function, "name", None) or "",
                arguments=getattr(function, "arguments", None) or "",
            )
        )
    if getattr(completion, "usage", None) is not None:
        events.append(_usage(completion.usage))
    return events


def _usage(usage: Any) -> Usage:
    """Usage from a completion's model or a chunk's dict."""
    if isinstance(usage, dict):
        return Usage(
            input_tokens=usage.get("prompt_tokens"),
            output_tokens=usage.get("completion_tokens"),
        )
    return Usage(
        input_tokens=getattr(usage, "prompt_tokens", None),
        output_tokens=getattr(usage, "completion_tokens", None),
    )


def _failure(error: Exception, *, responded: bool, api_key: str) -> ProviderError:
    """The user-facing ProviderError for an exception from the SDK or transport."""
    if isinstance(error, openai.APIStatusError):
        return status_failure(error.status_code, error.body, api_key=api_key)
    if isinstance(
        error, openai.APITimeoutError | httpx2.TimeoutException
    ) and not failed_to_connect(error):
        return timeout_failure()
    if isinstance(error, openai.APIConnectionError | httpx2.TransportError):
        return connection_failure(responded=responded)
    if isinstance(error, NotAChunk):
        return bad_response(
            "The provider sent a stream event that is not a chat completion chunk."
        )
    if isinstance(error, openai.APIResponseValidationError | ValueError):
        return bad_response("The provider sent a reply that could not be read.")
    if isinstance(error, openai.APIError):
        return _stream_error_failure(error, api_key=api_key)
    logger.warning("Unexpected error from the OpenAI SDK", exc_info=error)
    return ProviderError(
        AgentErrorCode.PROVIDER_ERROR, "The provider call failed unexpectedly."
    )


def _stream_error_failure(error: openai.APIError, *, api_key: str) -> ProviderError:
    """An error the server reported inside a 200 stream (`{"error": ...}`)."""
    body = error.body if isinstance(error.body, dict) else {}
    kind = f"{body.get('type') or ''} {body.get('code') or ''}".lower()
    if "rate_limit" in kind:
        return ProviderError(
            AgentErrorCode.PROVIDER_RATE_LIMITED,
            "The provider stopped the reply: rate limited; try again later.",
        )
    if "server_error" in kind or "overloaded" in kind:
        return ProviderError(
            AgentErrorCode.PROVIDER_UNAVAILABLE,
            "The provider failed while replying; try again later.",
        )
    detail = error_message(body, api_key)
    return ProviderError(
        AgentErrorCode.PROVIDER_ERROR,
        f"The provider stopped the reply: {detail}"
        if detail
        else "The provider stopped the reply with an error.",
    )


provider = OpenAIProvider()
