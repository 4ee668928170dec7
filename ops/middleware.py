"""ProbeMiddleware: `/healthz` and `/readyz` answered before any other middleware;
LogContextMiddleware: the request's ids for its log lines (ops/logs.py).

Put it first in MIDDLEWARE. Load balancers and orchestrators probe with the
instance's IP as Host and over plain HTTP: behind SecurityMiddleware and
CommonMiddleware they would get a redirect to HTTPS or a 400 for an unknown
host. Nothing here reads the session or the user. Works under ASGI without a
thread hop for `/healthz`; `/readyz` waits for its checks in a thread.
"""

from __future__ import annotations

import logging
import time

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.utils.decorators import sync_and_async_middleware

from ops import views
from ops.logs import (
    REQUEST_ID_HEADER,
    log_context_end,
    log_context_start,
    request_id_for,
)

# One line per request at INFO when LOG_REQUESTS is on (config/settings.py).
request_logger = logging.getLogger("parley.requests")

PROBES = {"/healthz": views.healthz, "/readyz": views.readyz}


@sync_and_async_middleware
def ProbeMiddleware(get_response):  # noqa: N802  (named like a class in settings)
    if iscoroutinefunction(get_response):

        async def middleware(request):
            probe = PROBES.get(request.path_info)
            if probe is views.healthz:
                return probe(request)
            if probe is not None:
                return await sync_to_async(probe, thread_sensitive=False)(request)
            return await get_response(request)

    else:

        def middleware(request):
            probe = PROBES.get(request.path_info)
            if probe is not None:
                return probe(request)
            return get_response(request)

    return middleware


@sync_and_async_middleware
def LogContextMiddleware(get_response):  # noqa: N802  (named like a class in settings)
    """First in MIDDLEWARE: gives the request an id (in its log lines and the
    `X-Request-ID` response header) and logs one line when it is answered:
    method, path without the query string, status, milliseconds."""

    def started(request):
        request_id = request_id_for(request.headers)
        token = log_context_start(request_id=request_id, request=request)
        return request_id, token, time.monotonic()

    def answered(request, response, request_id, began) -> None:
        response.headers.setdefault(REQUEST_ID_HEADER, request_id)
        if request_logger.isEnabledFor(logging.INFO):
            request_logger.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.monotonic() - began) * 1000, 1),
                },
            )

    if iscoroutinefunction(get_response):

        async def middleware(request):
            request_id, token, began = started(request)
            try:
                response = await get_response(request)
                answered(request, response, request_id, began)
                return response
            finally:
                log_context_end(token)

    else:

        def middleware(request):
            request_id, token, began = started(request)
            try:
                response = get_response(request)
                answered(request, response, request_id, began)
                return response
            finally:
                log_context_end(token)

    return middleware
