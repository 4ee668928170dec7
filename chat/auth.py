"""WebSocket authentication: session cookie or API token, and the origin check.

A token arrives as `Authorization: Token <key>` or, for clients that cannot set
headers, as the subprotocol `token.<key>` beside `parley`; never in the URL.
Each socket remembers which credential opened it (`scope["credential_group"]`)
so that revoking the token or logging out closes exactly those sockets.

Revocation reaches sockets through the channel layer: each web process joins
the credential groups of its open sockets with one channel of its own
(`CredentialSockets`), once per credential rather than once per socket, and
closes the sockets of the group a revocation names.

The middleware does not look a token up: it leaves the key in
`scope["auth_token"]` and the thread consumer checks it in the same trip to the
database thread that loads the thread and the caller's role
(`chat.selectors.thread_access_for_socket`), one hop per connect instead of two.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import weakref
from urllib.parse import urlparse

from channels.auth import AuthMiddlewareStack
from channels.layers import get_channel_layer
from django.conf import settings
from django.http.request import validate_host

from realtime.retry import Backoff

logger = logging.getLogger(__name__)

SUBPROTOCOL = "parley"
TOKEN_SUBPROTOCOL_PREFIX = "token."


def credential_group(kind: str, secret: str) -> str:
    """Channel-layer group of the sockets opened with one credential."""
    digest = hashlib.sha256(f"{kind}:{secret}".encode()).hexdigest()[:40]
    return f"auth.{digest}"


# Channel-layer message that closes the sockets of `group` (chat/signals.py).
REVOKED = "auth.revoked"
# channels-redis forgets a group member after a day (group_expiry): rejoin well before.
REJOIN_SECONDS = 3600


class CredentialSockets:
    """The open sockets of this process (one event loop) by credential group.

    The process's channel is in every group one of its sockets belongs to; a
    revocation sent to a group arrives here once and closes that group's
    sockets (`socket.auth_revoked`). Groups are joined with the first socket
    and left by the periodic rejoin once they have none; group changes go
    through one lock so that a leave never overtakes a later join.
    """

    def __init__(self, layer) -> None:
        self.layer = layer
        self.sockets: dict[str, set] = {}
        self.joined: set[str] = set()
        self.channel: str | None = None
        self.lock = asyncio.Lock()
        self.task: asyncio.Task | None = None
        self.closing: set[asyncio.Task] = set()

    async def add(self, group: str, socket) -> None:
        self.sockets.setdefault(group, set()).add(socket)
        if group in self.joined:
            return
        async with self.lock:
            if self.channel is None:
                self.channel = await self.layer.new_channel("parley.sockets.")
            if group not in self.joined:
                await self.layer.group_add(group, self.channel)
                self.joined.add(group)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._receive())

    def remove(self, group: str, socket) -> None:
        sockets = self.sockets.get(group)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self.sockets[group]

    async def _receive(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = Backoff(0.1, maximum=5.0)
        rejoin_at = loop.time() + REJOIN_SECONDS
        while True:
            if loop.time() >= rejoin_at:
                try:
                    await self._rejoin()
                    rejoin_at = loop.time() + REJOIN_SECONDS
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    logger.info("rejoining credential groups failed: %s", error)
            try:
                message = await asyncio.wait_for(
                    self.layer.receive(self.channel), timeout=REJOIN_SECONDS / 4
                )
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                continue
            except Exception as error:  # Redis away; it may come back empty
                logger.info("channel layer unavailable (%s); retrying", error)
                await backoff.wait()
                rejoin_at = 0.0
                continue
            backoff.reset()
            if message.get("type") == REVOKED:
                for socket in list(self.sockets.get(message.get("group"), ())):
                    closing = loop.create_task(socket.auth_revoked(message))
                    self.closing.add(closing)
                    closing.add_done_callback(self.closing.discard)

    async def _rejoin(self) -> None:
        async with self.lock:
            for group in list(self.joined):
                if group in self.sockets:
                    await self.layer.group_add(group, self.channel)
                else:
                    await self.layer.group_discard(group, self.channel)
                    self.joined.discard(group)


_registries: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def credential_sockets() -> CredentialSockets | None:
    """This event loop's registry (None without a channel layer)."""
    loop = asyncio.get_running_loop()
    registry = _registries.get(loop)
    if registry is None:
        layer = get_channel_layer()
        if layer is None:
            return None
        registry = _registries[loop] = CredentialSockets(layer)
    return registry


def token_from_scope(scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            kind, _, key = value.decode("latin1").partition(" ")
            if kind.lower() == "token" and key.strip():
                return key.strip()
    for protocol in scope.get("subprotocols", []):
        if protocol.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return protocol[len(TOKEN_SUBPROTOCOL_PREFIX) :]
    return None


class WebSocketAuthMiddleware:
    """Who opens a socket: an API token when one is given (checked by the
    consumer, see above), else the session cookie through channels'
    AuthMiddlewareStack."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.session_auth = AuthMiddlewareStack(_SessionCredential(inner))

    async def __call__(self, scope, receive, send):
        key = token_from_scope(scope) if scope["type"] == "websocket" else None
        if key is None:
            return await self.session_auth(scope, receive, send)
        scope = dict(
            scope, auth_token=key, credential_group=credential_group("token", key)
        )
        return await self.inner(scope, receive, send)


class _SessionCredential:
    """Inside the session stack: remember the session that opened the socket."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        session = scope.get("session")
        session_key = getattr(session, "session_key", None) if session else None
        group = credential_group("session", session_key) if session_key else None
        return await self.inner(dict(scope, credential_group=group), receive, send)


def origin_allowed(scope) -> bool:
    """Browsers send Origin; it must name this site. Clients without one
    (programs holding a token) are not subject to cross-site attacks."""
    origin = next((v for k, v in scope.get("headers", []) if k == b"origin"), None)
    if origin is None:
        return True
    parsed = urlparse(origin.decode("latin1"))
    if not parsed.scheme or not parsed.hostname:
        return False
    if f"{parsed.scheme}://{parsed.netloc}" in settings.CSRF_TRUSTED_ORIGINS:
        return True
    host = next((v for k, v in scope.get("headers", []) if k == b"host"), b"").decode(
        "latin1"
    )
    if host and parsed.netloc == host:
        return True
    return (
        validate_host(parsed.hostname, settings.ALLOWED_HOSTS) and parsed.netloc == host
    )
