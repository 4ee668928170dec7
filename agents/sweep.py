"""The sweeper: every PARLEY_SWEEP_INTERVAL_SECONDS each worker fails the runs
whose lease lapsed (their worker died, agents/leases.py), keeping the text they
had published, and re-dispatches runs stuck in the queue (agents/services.py
`run_sweep`). The text comes from the thread's event log, else from the run's
last checkpoint (agents/checkpoints.py)."""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from agents import services
from agents.models import Run, RunStatus
from realtime.eventlog import get_event_log
from realtime.events import call_service

logger = logging.getLogger(__name__)


async def sweep_stale_runs() -> list[Run]:
    """Sweep once; the runs it failed."""
    partial: dict[str, tuple[str, int] | None] = {}
    stale = await database_sync_to_async(_stale_runs)()
    log = get_event_log()
    for run_id, thread_id in stale:
        try:
            state = await log.thread_state(str(thread_id))
            progress = state.runs.get(run_id)
            partial[run_id] = (
                (progress.text, progress.next_stream_index) if progress else None
            )
        except Exception:
            partial[run_id] = None
    # Where the log has nothing (embedded mode after a restart: it died with
    # the worker), run_sweep takes the run's last checkpoint.
    return await call_service(
        services.run_sweep,
        read_partial_text=lambda run: partial.get(str(run.id)),
    )


async def sweep_forever() -> None:
    while True:
        try:
            await sweep_stale_runs()
        except Exception:
            logger.exception("sweeping stale runs failed")
        await asyncio.sleep(settings.PARLEY_SWEEP_INTERVAL_SECONDS)


def _stale_runs() -> list[tuple[str, str]]:
    """(run id, thread id) of the running runs whose lease lapsed."""
    return [
        (str(pk), str(thread_id))
        for pk, thread_id in Run.objects.filter(
            status=RunStatus.RUNNING, lease_expires_at__lt=timezone.now()
        ).values_list("pk", "thread_id")
    ]
