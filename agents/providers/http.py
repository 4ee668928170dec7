"""Shared by the HTTP providers: API key rules and the mapping of HTTP/transport
failures to user-safe ProviderErrors.

Every message here is safe to show users: none holds the key or a response body
that may echo it. Which SDK exception means what stays in each provider's module.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from django.conf import settings

from agents.errors import AgentErrorCode
from agents.providers.base import ProviderError, ProviderRequest

try:
    import aiohttp

    _CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
        OSError,
        aiohttp.ClientConnectionError,
    )
except ImportError:  # sdk_http_client says so
    _CONNECTION_ERRORS = (OSError,)

logger = logging.getLogger(__name__)

# The SDKs refuse to start without some key; keyless local servers ignore it.
PLACEHOLDER_KEY = "not-needed"
ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def resolve_api_key(request: ProviderRequest, *, default_base_url: str) -> str:
    """The key to send: the agent's, or the placeholder for a keyless server.

    The provider's own endpoint needs a real key: without one the call fails
    with `provider_key_missing` before any network traffic."""
    api_key = (request.api_key or "").strip()
    if api_key:
        return api_key
    if is_default_endpoint(request.base_url, default_base_url=default_base_url):
        raise ProviderError(
            AgentErrorCode.PROVIDER_KEY_MISSING,
            "The agent has no API key: set the environment variable its "
            "api_key_env names.",
        )
    return PLACEHOLDER_KEY


def api_key_env_problem(
    env_name: str, base_url: str, *, default_base_url: str, missing: str
) -> str | None:
    """What is wrong with an agent's `api_key_env`, or None: it must name an
    environment variable, and the provider's own endpoint needs one (`missing`
    says so)."""
    if env_name and not ENV_VAR_NAME.match(env_name):
        return (
            "Give the name of the environment variable that holds the key "
            "(letters, digits, underscores), never the key itself."
        )
    if not env_name and is_default_endpoint(
        base_url, default_base_url=default_base_url
    ):
        return missing
    return None


def is_default_endpoint(base_url: str | None, *, default_base_url: str) -> bool:
    """Whether `base_url` is blank or on the host of the provider's own endpoint."""
    return (
        not base_url
        or urlsplit(base_url).hostname == urlsplit(default_base_url).hostname
    )


def is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def status_failure(status: int, body: object, *, api_key: str) -> ProviderError:
    """The ProviderError for an HTTP error status (4xx or 5xx) and its body."""
    code = AgentErrorCode
    if status in (401, 403):
        if api_key == PLACEHOLDER_KEY:
            return ProviderError(
                code.PROVIDER_AUTH_FAILED,
                f"The server at the agent's base URL wants an API key (HTTP "
                f"{status}): set api_key_env to the variable that holds it.",
            )
        return ProviderError(
            code.PROVIDER_AUTH_FAILED,
            f"The provider rejected the API key (HTTP {status}); check the key in "
            "the environment variable the agent names.",
        )
    if status == 429:
        return ProviderError(
            code.PROVIDER_RATE_LIMITED,
            "The provider is rate limiting requests (HTTP 429); try again later.",
        )
    if status == 408:
        return ProviderError(
            code.PROVIDER_TIMEOUT, "The provider timed out (HTTP 408); try again later."
        )
    if status >= 500:
        return ProviderError(
            code.PROVIDER_UNAVAILABLE,
            f"The provider is unavailable (HTTP {status}); try again later.",
        )
    detail = error_message(body, api_key)
    return ProviderError(
        code.PROVIDER_ERROR,
        f"The provider refused the request (HTTP {status}): {detail}"
        if detail
        else f"The provider refused the request (HTTP {status}); check the agent's "
        "model and base URL.",
    )


def timeout_failure() -> ProviderError:
    """The server went silent for longer than `request.timeout`."""
    return ProviderError(
        AgentErrorCode.PROVIDER_TIMEOUT,
        "The provider did not answer in time; try again later.",
    )


def connection_failure(*, responded: bool) -> ProviderError:
    """A transport error: a lost stream once the reply started, else no server."""
    if responded:
        return ProviderError(
            AgentErrorCode.PROVIDER_CONNECTION_LOST,
            "The connection to the provider was lost before the reply was complete.",
        )
    return ProviderError(
        AgentErrorCode.PROVIDER_UNAVAILABLE,
        "Could not connect to the provider; check the agent's base URL or "
        "try again later.",
    )


def failed_to_connect(error: BaseException) -> bool:
    """Whether a connection error that is no timeout is among `error`'s causes.

    The openai SDK's copy of httpx-aiohttp reports every aiohttp connection
    error, a refused connect included, as a connect *timeout*: this tells the
    two apart, so users hear "could not connect", not "try again later"."""
    seen: set[int] = set()
    cause = error.__cause__ or error.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, _CONNECTION_ERRORS) and not isinstance(
            cause, TimeoutError
        ):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def bad_response(message: str) -> ProviderError:
    return ProviderError(AgentErrorCode.PROVIDER_BAD_RESPONSE, message)


def error_message(body: object, api_key: str) -> str:
    """The server's own one-line explanation from an error body, or "" when there
    is none or it quotes the key (or a recognisable part of it)."""
    error = body.get("error", body) if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str):
        return ""
    message = " ".join(message.split())[:200]
    secrets = [api_key] if api_key != PLACEHOLDER_KEY else []
    if len(api_key) >= 16:
        secrets += [api_key[:8], api_key[-8:]]
    return "" if any(secret in message for secret in secrets) else message


# --- SDK clients, shared per event loop --------------------------------------------

Client = TypeVar("Client")
# Distinct (provider, endpoint, key) clients kept per event loop.
MAX_SHARED_CLIENTS = 32
_shared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_closers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_closing: set[asyncio.Task] = set()
_warned_no_aiohttp = False


def sdk_http_client(sdk: Any) -> Any | None:
    """The HTTP client to make an SDK client with: the SDK's own aiohttp transport
    (`sdk.DefaultAioHttpClient`, its `aiohttp` extra), or None for the SDK's
    default (httpx2) when PARLEY_PROVIDER_AIOHTTP is off or aiohttp is missing,
    which is logged once as a warning.

    With 150 replies streaming at once (bench/, the openai line), the default
    transport cost the worker half as much CPU again per token, enough to hold
    back the first token of a burst by more than a second; docs/deploy.md has
    the figures."""
    global _warned_no_aiohttp
    if not settings.PARLEY_PROVIDER_AIOHTTP:
        return None
    try:
        return sdk.DefaultAioHttpClient()
    except (AttributeError, RuntimeError):  # an old SDK, or aiohttp not installed
        if not _warned_no_aiohttp:
            _warned_no_aiohttp = True
            logger.warning(
                "%s: no aiohttp transport (install aiohttp, see requirements.txt): "
                "model replies stream through httpx2, at more worker CPU per token",
                sdk.__name__,
            )
        return None


def shared_client(key: tuple, make: Callable[[], Client]) -> Client:
    """The SDK client for `key` on this event loop, made once by `make()`.

    A new SDK client per run builds a new HTTP client (an SSL context, a
    connection pool) and a new connection to the model server: under a burst of
    runs that cost more worker CPU than the replies' first tokens. Runs take
    per-run options with the SDK's `with_options`, which shares the HTTP client.
    """
    loop = asyncio.get_running_loop()
    clients: OrderedDict | None = _shared.get(loop)
    if clients is None:
        clients = _shared[loop] = OrderedDict()
        _closers[loop] = loop.create_task(_close_at_loop_end(loop, clients))
    client = clients.get(key)
    if client is None or client.is_closed():
        client = clients[key] = make()
        while len(clients) > MAX_SHARED_CLIENTS:
            _, oldest = clients.popitem(last=False)
            closing = loop.create_task(oldest.close())
            _closing.add(closing)
            closing.add_done_callback(_closing.discard)
    else:
        clients.move_to_end(key)
    return client


async def _close_at_loop_end(loop: asyncio.AbstractEventLoop, clients: OrderedDict):
    """Waits for the end of its event loop, then closes the loop's clients.

    asyncio.run and asyncio.Runner (the worker, the tests) cancel the tasks left
    when their loop ends; open aiohttp sessions would otherwise be reported as
    unclosed when collected."""
    try:
        await asyncio.Event().wait()
    finally:
        _shared.pop(loop, None)
        _closers.pop(loop, None)
        for client in list(clients.values()):
            await client.close()
