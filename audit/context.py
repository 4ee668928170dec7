"""Where a request comes from, for the audit log: a context variable set per
request (HTTP) or per connection (WebSocket) and read when an event is recorded.

* `AuditContextMiddleware` (Django MIDDLEWARE, after AuthenticationMiddleware)
  keeps the request itself, so the actor is the user the request ends up
  authenticated as (DRF authenticates tokens in the view, after middleware).
* `AuditOriginMiddleware` (ASGI, around the WebSocket app) keeps the client's
  address for everything a socket does; services that know the actor pass it.

The IP is the one the server sees (`REMOTE_ADDR`, daphne's `scope["client"]`).
Behind a proxy, run daphne with `--proxy-headers` so that this is the client's
address from `X-Forwarded-For`; nothing here trusts that header itself.

Values are copied into the threads that run services (Django's and channels'
sync_to_async copy the context), so receivers of model signals see them.
"""

from __future__ import annotations

import ipaddress
from contextvars import ContextVar
from dataclasses import dataclass

from asgiref.sync import iscoroutinefunction
from django.utils.decorators import sync_and_async_middleware


@dataclass(frozen=True)
class Origin:
    ip: str | None
    request: object = None  # the HttpRequest, whose `user` is read when needed

    @property
    def user(self):
        user = getattr(self.request, "user", None)
        return user if user is not None and user.is_authenticated else None


_origin: ContextVar[Origin | None] = ContextVar("audit_origin", default=None)


def current_origin() -> Origin | None:
    return _origin.get()


def valid_ip(value) -> str | None:
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        return None


def request_ip(request) -> str | None:
    meta = getattr(request, "META", None)
    return valid_ip(meta.get("REMOTE_ADDR", "")) if meta is not None else None


@sync_and_async_middleware
def AuditContextMiddleware(get_response):  # noqa: N802  (named like a class in settings)
    if iscoroutinefunction(get_response):

        async def middleware(request):
            token = _origin.set(Origin(request_ip(request), request))
            try:
                return await get_response(request)
            finally:
                _origin.reset(token)

    else:

        def middleware(request):
            token = _origin.set(Origin(request_ip(request), request))
            try:
                return get_response(request)
            finally:
                _origin.reset(token)

    return middleware


class AuditOriginMiddleware:
    """ASGI middleware: the client address of a WebSocket, for its whole life."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        client = scope.get("client") or (None,)
        token = _origin.set(Origin(valid_ip(client[0])))
        try:
            return await self.inner(scope, receive, send)
        finally:
            _origin.reset(token)
