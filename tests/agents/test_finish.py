"""Finishing a run: the reply is stored once, the outcome too, and a run that
already ended (failed by the sweeper, cancelled) is left as it is."""

from __future__ import annotations

import pytest

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
