"""ProbeMiddleware: `/healthz` and `/readyz` answered before any other middleware.

Put it first in MIDDLEWARE. Load balancers and orchestrators probe with the
instance's IP as Host and over plain HTTP: behind SecurityMiddleware and
CommonMiddleware they would get a redirect to HTTPS or a 400 for an unknown
host. Nothing here reads the session or the user. Works under ASGI without a
thread hop for `/healthz`; `/readyz` waits for its checks in a thread.
"""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.utils.decorators import sync_and_async_middleware

from ops import views

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
