"""Realtime app: the infrastructure every feature streams through.

The WebSocket protocol's frames (protocol.py) and codes (errors.py), the thread
event log and its Channels layer (eventlog.py, layers.py), publishing and
presence (events.py), Redis connections (redis_connections.py), the socket
adapter for daphne, autobahn and Twisted (transport.py), batching of service
calls (batches.py), the retry helper (retry.py) and the shared cache
(caching.py). `chat` and `agents` are features built on it; it imports
neither.
"""

import sys

from django.apps import AppConfig
from django.conf import settings
from django.core import checks


class RealtimeConfig(AppConfig):
    name = "realtime"

    def ready(self) -> None:
        from realtime import redis_connections, transport

        # What the socket adapter relies on in daphne, autobahn and Twisted:
        # `manage.py check` warns (parley.W001) and a server logs it at start-up.
        checks.register(transport.check_socket_transport, checks.Tags.compatibility)
        if "daphne.server" in sys.modules:
            transport.log_self_check()
        # Without hiredis each published chunk costs several times the CPU.
        checks.register(redis_connections.check_packer, checks.Tags.compatibility)
        if "daphne.server" in sys.modules or "runworker" in sys.argv:
            redis_connections.log_packer_problem()

        # The event loop thread is busy streaming; the database thread gives up
        # the GIL on every query and, at Python's default 5 ms switch interval,
        # waits up to 5 ms to get it back: a short database operation of a few
        # queries took 25 ms under load. A shorter interval hands it back sooner.
        sys.setswitchinterval(settings.PARLEY_GIL_SWITCH_INTERVAL_MS / 1000)
