"""ASGI entry point: `daphne config.asgi:application`.

HTTP goes to Django (static files too, so plain daphne serves the whole app),
WebSockets to the thread consumer, channel-layer messages on `agent-runs` to
the agent worker. In embedded mode the first request also starts the agent
worker inside this process. Both daphne and `runworker` load this module, so the
process-wide garbage collector settings are applied here, once all is imported.
"""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from agents.worker import start_embedded_worker, worker_application  # noqa: E402
from chat.auth import WebSocketAuthMiddleware  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402

http_application = (
    ASGIStaticFilesHandler(django_asgi_app)
    if settings.PARLEY_SERVE_STATIC
    else django_asgi_app
)


class EmbeddedWorkerStarter:
    """Starts the in-process agent worker on the server's event loop (embedded mode)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if settings.PARLEY_EMBEDDED_WORKER and scope["type"] in ("http", "websocket"):
            start_embedded_worker()
        return await self.inner(scope, receive, send)


application = EmbeddedWorkerStarter(
    ProtocolTypeRouter(
        {
            "http": http_application,
            "websocket": WebSocketAuthMiddleware(URLRouter(websocket_urlpatterns)),
            "channel": worker_application(),
        }
    )
)


def tune_garbage_collector() -> None:
    """Keep the collector's pauses short for a long-running streaming process.

    Start-up objects (modules, URL patterns, settings) live as long as the
    process, so they are frozen: full collections no longer walk them. A larger
    first-generation threshold lets the short-lived objects of a frame die by
    reference counting before a collection would promote them, so the older
    generations fill (and are collected) less often.
    """
    gc.set_threshold(settings.PARLEY_GC_THRESHOLD, *gc.get_threshold()[1:])
    if settings.PARLEY_GC_FREEZE:
        gc.collect()
        gc.freeze()


tune_garbage_collector()
