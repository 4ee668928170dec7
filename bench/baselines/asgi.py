"""ASGI entry of the tutorial-style baseline: ``daphne bench.baselines.asgi:application``
(web) and ``python -m django runworker agent-runs-0`` with
DJANGO_SETTINGS_MODULE=bench.baselines.settings."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.baselines.settings")

import django  # noqa: E402

django.setup()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.urls import path  # noqa: E402

from bench.baselines.consumers import ShortcutThreadConsumer, ThreadConsumer  # noqa: E402
from bench.baselines.worker import RunWorker  # noqa: E402

consumer = ShortcutThreadConsumer if settings.SHORTCUT else ThreadConsumer

application = ProtocolTypeRouter(
    {
        "http": get_asgi_application(),
        "websocket": AuthMiddlewareStack(
            URLRouter([path("ws/threads/<str:thread_id>/", consumer.as_asgi())])
        ),
        "channel": ChannelNameRouter(
            {
                f"{settings.RUN_CHANNEL}-{n}": RunWorker.as_asgi()
                for n in range(settings.WORKERS)
            }
        ),
    }
)
