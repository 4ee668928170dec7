"""ASGI entry point: `daphne config.asgi:application`.

HTTP goes to Django (static files too, so plain daphne serves the whole app),
WebSockets to the thread consumer, channel-layer messages on `agent-runs` to
the agent worker. In embedded mode the first request also starts the agent
worker inside this process. Importing this module prepares the process for a
long life (config/process.py).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from agents.worker import start_embedded_worker, worker_application  # noqa: E402
from audit.context import AuditOriginMiddleware  # noqa: E402
from chat.auth import WebSocketAuthMiddleware  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from config.process import prepare_server_process  # noqa: E402

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
            "websocket": AuditOriginMiddleware(
                WebSocketAuthMiddleware(URLRouter(websocket_urlpatterns))
            ),
            "channel": worker_application(),
        }
    )
)


prepare_server_process(runs_agents=settings.PARLEY_EMBEDDED_WORKER)
