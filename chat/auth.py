"""WebSocket authentication: session cookie or API token, and the origin check.

A token arrives as `Authorization: Token <key>` or, for clients that cannot set
headers, as the subprotocol `token.<key>` beside `parley`; never in the URL.
Each socket remembers which credential opened it (`scope["credential_group"]`)
so that revoking the token or logging out closes exactly those sockets.

The middleware does not look a token up: it leaves the key in
`scope["auth_token"]` and the thread consumer checks it in the same trip to the
database thread that loads the thread and the caller's role
(`chat.selectors.thread_access_for_socket`), one hop per connect instead of two.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlparse

from channels.auth import AuthMiddlewareStack
from django.conf import settings
from django.http.request import validate_host

SUBPROTOCOL = "parley"
TOKEN_SUBPROTOCOL_PREFIX = "token."


def credential_group(kind: str, secret: str) -> str:
    """Channel-layer group of the sockets opened with one credential."""
    digest = hashlib.sha256(f"{kind}:{secret}".encode()).hexdigest()[:40]
    return f"auth.{digest}"


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
