"""A worker renews the leases of the runs it holds (agents/leases.py) and
stops those whose cancel reached no worker."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from agents.leases import keep_leases
from agents.models import Run, RunStatus
from chat.models import Role
from tests.agents.test_sweep import make_run
from tests.eventually import eventually

pytestmark = pytest.mark.django_db(transaction=True)

WORKER = "agents.worker.inmemory!leases"


async def held_run(thread, user, *, worker_channel=WORKER, **fields) -> Run:
    return await make_run(
        thread,
        user,
        text="hold on",
        status=RunStatus.RUNNING,
        age=timedelta(0),
        worker_channel=worker_channel,
        lease_expires_at=timezone.now() + timedelta(seconds=1),
        **fields,
    )


@database_sync_to_async
def lease_of(run: Run):
    return Run.objects.get(pk=run.pk).lease_expires_at


async def test_the_leases_of_held_runs_are_renewed_and_cancels_found(
    thread, users, settings
):
    settings.PARLEY_LEASE_SECONDS = 1.5  # renewed every 0.5 s
    held = await held_run(thread, users[Role.OWNER])
    cancelled = await held_run(thread, users[Role.OWNER], cancel_requested=True)
    elsewhere = await held_run(
        thread, users[Role.OWNER], worker_channel="agents.worker.inmemory!other"
    )
    leases_before = {run.pk: await lease_of(run) for run in (held, elsewhere)}
    stopped: list[str] = []

    renewing = asyncio.ensure_future(
        keep_leases(
            worker_channel=WORKER,
            running=lambda: [str(held.pk), str(cancelled.pk), str(elsewhere.pk)],
            cancel=stopped.append,
        )
    )
    try:
        await eventually(lambda: stopped, what="a cancel found")
        assert stopped == [str(cancelled.pk)]
        assert await lease_of(held) > leases_before[held.pk]
        # Another worker's run keeps the lease that worker gave it.
        assert await lease_of(elsewhere) == leases_before[elsewhere.pk]
    finally:
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)
