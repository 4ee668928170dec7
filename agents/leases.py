"""Leases: a worker renews the lease of every run it holds, every third of
PARLEY_LEASE_SECONDS. A run whose lease lapses has lost its worker, and the
sweeper fails it (agents/sweep.py). Renewing also finds the worker's runs
whose cancel was requested where no control message reached it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from channels.db import database_sync_to_async
from django.conf import settings

from agents import services

logger = logging.getLogger(__name__)


async def keep_leases(
    *,
    worker_channel: str,
    running: Callable[[], Iterable[str]],
    cancel: Callable[[str], None],
) -> None:
    """Renew the leases of the runs `running()` names, for ever; `cancel`
    each one whose cancel was requested."""
    interval = max(settings.PARLEY_LEASE_SECONDS / 3, 0.5)
    while True:
        await asyncio.sleep(interval)
        try:
            to_cancel = await database_sync_to_async(services.run_renew_leases)(
                worker_channel=worker_channel, run_ids=list(running())
            )
            for run_id in to_cancel:
                cancel(run_id)
        except Exception:
            logger.exception("renewing leases failed")
