"""Shared by the HTTP providers: API key rules and the mapping of HTTP/transport
failures to user-safe ProviderErrors.

Every message here is safe to show users: none holds the key or a response body
that may echo it. Which SDK exception means what stays in each provider's module.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

from agents.errors import AgentErrorCode
from agents.providers.base import ProviderError, ProviderRequest

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


def shared_client(key: tuple, make: Callable[[], Client]) -> Client:
    """The SDK client for `key` on this event loop, made once by `make()`.

    A new SDK client per run builds a new HTTP client (an SSL context, a
    connection pool) and a new connection to the model server: under a burst of
    runs that cost more worker CPU than the replies' first tokens. Runs take
    per-run options with the SDK's `with_options`, which shares the HTTP client.
    """
    clients: OrderedDict = _shared.setdefault(asyncio.get_running_loop(), OrderedDict())
    client = clients.get(key)
    if client is None or client.is_closed():
        client = clients[key] = make()
        while len(clients) > MAX_SHARED_CLIENTS:
            clients.popitem(last=False)  # its connections close when collected
    else:
        clients.move_to_end(key)
    return client
