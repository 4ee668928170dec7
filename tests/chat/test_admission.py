"""A burst of messages enters the database together (chat/admission.py,
chat.services.messages_post), each checked and stored exactly as alone."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from agents.models import Run, RunStatus
from chat import services
from chat.admission import MessageAdmission
from chat.models import Message, Role, Thread
from chat.services import MessageRequest, messages_post
from realtime.errors import ErrorCode, ServiceError

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_batch_stores_each_message_as_alone_and_refuses_only_its_own(
    thread, users, echo_agent
):
    other = Thread.objects.create(owner=users[Role.PARTICIPANT], agent=echo_agent)
    outcomes = messages_post(
        requests=[
            MessageRequest(thread.pk, users[Role.OWNER], "first", "r1"),
            MessageRequest(thread.pk, users[Role.OBSERVER], "not allowed"),
            MessageRequest(other.pk, users[Role.PARTICIPANT], "elsewhere"),
            MessageRequest(thread.pk, users[Role.PARTICIPANT], "second"),
            MessageRequest(thread.pk, users[Role.OWNER], "   "),
            MessageRequest(
                "8d2c2b5e-0000-4000-8000-000000000000", users[Role.OWNER], "?"
            ),
        ]
    )
    first, observer, elsewhere, second, empty, missing = outcomes
    assert isinstance(observer, ServiceError) and observer.code == ErrorCode.READ_ONLY
    assert isinstance(empty, ServiceError)
    assert missing.code == ErrorCode.THREAD_NOT_FOUND
    runs = [first, elsewhere, second]
    assert all(isinstance(run, Run) for run in runs)
    stored = {run.pk: run for run in Run.objects.filter(pk__in=[r.pk for r in runs])}
    assert {r.status for r in stored.values()} == {RunStatus.QUEUED}
    assert [m.text for m in Message.objects.filter(thread=thread)] == [
        "first",
        "second",
    ]
    for run in runs:
        assert Message.objects.get(run_id=run.pk).run_id == stored[run.pk].pk
        assert stored[run.pk].prompt_id == Message.objects.get(run_id=run.pk).pk
    # Queued behind the first in its thread: created after it.
    assert stored[first.pk].created_at < stored[second.pk].created_at


def test_a_batch_counts_the_busy_policy_and_the_users_limit_as_it_goes(
    thread, users, settings
):
    settings.PARLEY_MAX_ACTIVE_RUNS_PER_USER = 2
    owner = users[Role.OWNER]
    outcomes = messages_post(
        requests=[MessageRequest(thread.pk, owner, f"m{n}") for n in range(3)]
    )
    assert [type(o).__name__ for o in outcomes] == ["Run", "Run", "ServiceError"]
    assert outcomes[2].code == ErrorCode.TOO_MANY_RUNS
    thread.agent.busy_policy = "reject"
    thread.agent.save()
    other = users[Role.PARTICIPANT]
    (busy,) = messages_post(requests=[MessageRequest(thread.pk, other, "later")])
    assert busy.code == ErrorCode.THREAD_BUSY


async def test_messages_arriving_while_the_database_is_busy_go_in_together(
    thread, users, monkeypatch, settings
):
    settings.PARLEY_MAX_ACTIVE_RUNS_PER_USER = 0  # one user sends the whole burst
    calls: list[int] = []
    real = services.messages_post

    def recording(*, requests):
        calls.append(len(requests))
        return real(requests=requests)

    monkeypatch.setattr(services, "messages_post", recording)
    admission = MessageAdmission(concurrency=1)
    owner = users[Role.OWNER]

    async def post(n: int):
        return await admission.post(MessageRequest(thread.pk, owner, f"burst {n}"))

    first = asyncio.create_task(post(0))
    await asyncio.sleep(0)  # the first batch (of one) is on its way
    rest = [asyncio.create_task(post(n)) for n in range(1, 6)]
    runs = await asyncio.gather(first, *rest)
    assert calls[0] == 1 and sum(calls) == 6 and len(calls) <= 3
    texts = await database_sync_to_async(
        lambda: list(
            Message.objects.filter(thread=thread)
            .order_by("created_at")
            .values_list("text", flat=True)
        )
    )()
    assert texts == [f"burst {n}" for n in range(6)]
    assert len({run.pk for run in runs}) == 6


async def test_a_refused_message_in_a_batch_raises_for_its_sender_only(thread, users):
    admission = MessageAdmission(concurrency=1)
    good = admission.post(MessageRequest(thread.pk, users[Role.OWNER], "fine"))
    bad = admission.post(MessageRequest(thread.pk, users[Role.OBSERVER], "no"))
    results = await asyncio.gather(good, bad, return_exceptions=True)
    assert isinstance(results[0], Run)
    assert isinstance(results[1], ServiceError)
    assert results[1].code == ErrorCode.READ_ONLY
