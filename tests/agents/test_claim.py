"""Claiming a run: a worker may start a queued run only while it is first in its
thread (nothing running, nothing queued before it), and only one worker wins."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from agents.models import Run, RunStatus
from agents.services import run_claim, runs_claim
from chat.models import Message, MessageRole, Role

WORKER = "agents.worker.inmemory!claim-test"


def make_run(thread, user, *, status=RunStatus.QUEUED, age_seconds: float = 0) -> Run:
    prompt = Message.objects.create(
        thread=thread, author=user, role=MessageRole.USER, text="hello"
    )
    run = Run.objects.create(
        thread=thread,
        agent=thread.agent,
        requested_by=user,
        prompt=prompt,
        status=status,
    )
    created = timezone.now() - timedelta(seconds=age_seconds)
    Run.objects.filter(pk=run.pk).update(created_at=created)
    return Run.objects.get(pk=run.pk)


def status_of(run: Run) -> str:
    return Run.objects.values_list("status", flat=True).get(pk=run.pk)


@pytest.mark.django_db
def test_the_first_queued_run_of_a_thread_is_claimed(thread, users):
    run = make_run(thread, users[Role.OWNER])

    claimed = run_claim(run_id=str(run.id), worker_channel=WORKER)

    assert claimed is not None and claimed.pk == run.pk
    assert claimed.agent == thread.agent and claimed.prompt.text == "hello"
    stored = Run.objects.get(pk=run.pk)
    assert stored.status == RunStatus.RUNNING
    assert stored.worker_channel == WORKER
    assert stored.started_at is not None and stored.lease_expires_at > timezone.now()


@pytest.mark.django_db
def test_a_run_queued_behind_another_is_not_claimed(thread, users):
    first = make_run(thread, users[Role.OWNER], age_seconds=5)
    second = make_run(thread, users[Role.OWNER])

    assert run_claim(run_id=str(second.id), worker_channel=WORKER) is None

    assert status_of(second) == RunStatus.QUEUED
    assert run_claim(run_id=str(first.id), worker_channel=WORKER) is not None
    # The first is running now: the second still waits for it to end.
    assert run_claim(run_id=str(second.id), worker_channel=WORKER) is None
    assert status_of(second) == RunStatus.QUEUED


@pytest.mark.django_db
def test_a_run_is_not_claimed_while_another_runs_in_its_thread(thread, users):
    make_run(thread, users[Role.OWNER], status=RunStatus.RUNNING, age_seconds=5)
    waiting = make_run(thread, users[Role.OWNER])

    assert run_claim(run_id=str(waiting.id), worker_channel=WORKER) is None
    assert status_of(waiting) == RunStatus.QUEUED


@pytest.mark.django_db
def test_runs_of_other_threads_do_not_hold_a_run_back(thread, users):
    from chat.models import Thread

    other = Thread.objects.create(owner=users[Role.OWNER], agent=thread.agent)
    make_run(other, users[Role.OWNER], status=RunStatus.RUNNING, age_seconds=5)
    make_run(other, users[Role.OWNER], age_seconds=4)
    run = make_run(thread, users[Role.OWNER])

    assert run_claim(run_id=str(run.id), worker_channel=WORKER) is not None


@pytest.mark.django_db
def test_an_ended_run_is_not_claimed(thread, users):
    for status in (RunStatus.CANCELLED, RunStatus.COMPLETED, RunStatus.RUNNING):
        run = make_run(thread, users[Role.OWNER], status=status)
        assert run_claim(run_id=str(run.id), worker_channel=WORKER) is None
        assert status_of(run) == status


@pytest.mark.django_db(transaction=True)
def test_two_workers_claiming_the_same_run_one_wins(thread, users):
    """A run.start delivered twice (a re-dispatch) starts the run once."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer: claims cannot overlap")
    run = make_run(thread, users[Role.OWNER])
    barrier = threading.Barrier(2)
    results: list = []

    def claim(worker: str) -> None:
        barrier.wait()
        try:
            results.append(run_claim(run_id=str(run.id), worker_channel=worker))
        finally:
            connection.close()

    workers = [
        threading.Thread(target=claim, args=(f"{WORKER}-{n}",)) for n in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)

    winners = [result for result in results if result is not None]
    assert len(results) == 2 and len(winners) == 1
    assert Run.objects.get(pk=run.pk).worker_channel == winners[0].worker_channel


@pytest.mark.django_db
def test_a_batch_claims_each_thread_first_run_as_one_claim_would(thread, users):
    from chat.models import Thread

    owner = users[Role.OWNER]
    other = Thread.objects.create(owner=owner, agent=thread.agent)
    busy = Thread.objects.create(owner=owner, agent=thread.agent)
    first = make_run(thread, owner, age_seconds=5)
    behind = make_run(thread, owner)  # queued behind `first`, same batch
    elsewhere = make_run(other, owner)
    make_run(busy, owner, status=RunStatus.RUNNING, age_seconds=5)
    waiting = make_run(busy, owner)  # its thread is running another
    ended = make_run(other, owner, status=RunStatus.CANCELLED)
    batch = [behind, first, elsewhere, waiting, ended]

    claimed = runs_claim(run_ids=[str(r.id) for r in batch], worker_channel=WORKER)

    assert set(claimed) == {str(first.id), str(elsewhere.id)}
    assert claimed[str(first.id)].prompt.text == "hello"
    assert claimed[str(first.id)].agent == thread.agent
    assert [status_of(r) for r in batch] == [
        RunStatus.QUEUED,
        RunStatus.RUNNING,
        RunStatus.RUNNING,
        RunStatus.QUEUED,
        RunStatus.CANCELLED,
    ]
    stored = Run.objects.get(pk=first.pk)
    assert stored.worker_channel == WORKER and stored.lease_expires_at is not None


@pytest.mark.django_db(transaction=True)
def test_two_workers_claiming_one_batch_start_each_run_once(thread, users):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer: claims cannot overlap")
    from chat.models import Thread

    owner = users[Role.OWNER]
    runs = [
        make_run(Thread.objects.create(owner=owner, agent=thread.agent), owner)
        for _ in range(20)
    ]
    barrier = threading.Barrier(2)
    results: dict[str, dict] = {}

    def claim(worker: str) -> None:
        barrier.wait()
        try:
            results[worker] = runs_claim(
                run_ids=[str(r.id) for r in runs], worker_channel=worker
            )
        finally:
            connection.close()

    workers = [
        threading.Thread(target=claim, args=(f"{WORKER}-{n}",)) for n in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)

    won = [run_id for claimed in results.values() for run_id in claimed]
    assert sorted(won) == sorted(str(r.id) for r in runs)  # each once, none lost
    for worker, claimed in results.items():
        for run_id in claimed:
            assert Run.objects.get(pk=run_id).worker_channel == worker
