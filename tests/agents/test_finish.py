"""Finishing a run: the reply is stored once, the outcome too, and a run that
already ended (failed by the sweeper, cancelled) is left as it is; the worker
tries the finish again while the database is away (agents/execution.py)."""

from __future__ import annotations

import time

import pytest
from django.db import OperationalError

from agents.execution import finish_retried
from agents.models import Run, RunStatus
from agents.services import run_finish
from chat.models import Message, MessageRole, Role
from tests.agents.test_claim import make_run


@pytest.mark.django_db
def test_a_finished_run_keeps_its_reply_and_outcome(
    thread, users, django_capture_on_commit_callbacks
):
    run = make_run(thread, users[Role.OWNER], status=RunStatus.RUNNING)

    with django_capture_on_commit_callbacks() as published:
        ended = run_finish(
            run_id=str(run.id),
            status=RunStatus.COMPLETED,
            text="the whole reply",
            chunks=3,
            usage={"output_tokens": 3},
        )

    assert ended is not None and ended.thread_id == thread.id
    stored = Run.objects.get(pk=run.pk)
    assert stored.status == RunStatus.COMPLETED
    assert stored.finished_at is not None and stored.lease_expires_at is None
    assert stored.usage == {"output_tokens": 3}
    reply = Message.objects.get(run=run)
    assert (reply.role, reply.text, reply.agent_id) == (
        MessageRole.ASSISTANT,
        "the whole reply",
        thread.agent_id,
    )
    assert len(published) == 1  # the `complete` frame, after the commit


@pytest.mark.django_db
def test_a_failed_run_keeps_its_error_and_partial_text(thread, users):
    run = make_run(thread, users[Role.OWNER], status=RunStatus.RUNNING)

    run_finish(
        run_id=str(run.id),
        status=RunStatus.FAILED,
        text="half a rep",
        chunks=1,
        error_code="provider_error",
        error="upstream said no",
    )

    stored = Run.objects.get(pk=run.pk)
    assert (stored.status, stored.error_code, stored.error) == (
        RunStatus.FAILED,
        "provider_error",
        "upstream said no",
    )
    assert Message.objects.get(run=run).text == "half a rep"


@pytest.mark.django_db
def test_a_run_that_already_ended_is_left_as_it_is(thread, users):
    run = make_run(thread, users[Role.OWNER], status=RunStatus.FAILED)

    ended = run_finish(
        run_id=str(run.id), status=RunStatus.COMPLETED, text="too late", chunks=1
    )

    assert ended is None
    assert Run.objects.get(pk=run.pk).status == RunStatus.FAILED
    assert not Message.objects.filter(run=run).exists()


class DatabaseAway:
    """A finish that fails as a restarting PostgreSQL makes it fail, `times`
    times, then succeeds."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.attempts = 0

    async def __call__(self) -> None:
        self.attempts += 1
        if self.attempts <= self.times:
            raise OperationalError(
                "terminating connection due to administrator command"
            )


async def test_the_finish_is_tried_again_while_the_database_is_away(settings):
    settings.PARLEY_LEASE_SECONDS = 15
    finish = DatabaseAway(times=2)

    await finish_retried(finish, run_id="r1")

    assert finish.attempts == 3


async def test_past_the_lease_the_finish_gives_up(settings):
    settings.PARLEY_LEASE_SECONDS = 1
    finish = DatabaseAway(times=1000)
    started = time.monotonic()

    with pytest.raises(OperationalError):
        await finish_retried(finish, run_id="r1")

    assert 1 <= time.monotonic() - started < 5
    assert finish.attempts > 1


async def test_other_failures_are_not_retried(settings):
    attempts = []

    async def broken() -> None:
        attempts.append(1)
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        await finish_retried(broken, run_id="r1")
    assert len(attempts) == 1
