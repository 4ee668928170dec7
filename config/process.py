"""Process-wide tuning for Parley's long-running servers: daphne
(config/asgi.py) and the agent worker (`runworker agent-runs`)."""

from __future__ import annotations

import gc
from importlib import import_module

from django.conf import settings


def prepare_server_process(*, runs_agents: bool) -> None:
    """Load what the process will need, then keep it out of garbage collection.

    Everything loaded so far lives as long as the process, so it is frozen: full
    collections no longer walk it. That only works for what is loaded before the
    freeze, so the views (otherwise imported by the first request), the channel
    layer and, where agents run, every provider and its SDK are loaded first;
    without that a full collection walked them all and paused the worker for
    about 100 ms every few seconds under load (bench/, K = 450).

    A larger first-generation threshold lets the short-lived objects of a frame
    die by reference counting before a collection would promote them, so the
    older generations fill, and are collected, less often.
    """
    from channels.layers import get_channel_layer
    from django.urls import get_resolver

    from agents.providers import PROVIDER_MODULES

    get_resolver().url_patterns  # noqa: B018 (imports every view)
    get_channel_layer()
    if runs_agents:
        for module in PROVIDER_MODULES.values():
            import_module(module)
    gc.set_threshold(settings.PARLEY_GC_THRESHOLD, *gc.get_threshold()[1:])
    if settings.PARLEY_GC_FREEZE:
        gc.collect()
        gc.freeze()
