"""The questions a run waits on (agents/questions.py): stored before they go
out, answered by whoever writes first, closed with how they ended."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async

from agents.models import Run, RunInput, RunInputStatus, RunStatus
from agents.questions import Questions
from chat.models import Role
from tests.agents.test_sweep import make_run
from tests.eventually import eventually

pytestmark = pytest.mark.django_db(transaction=True)


async def asking_run(thread, user) -> Run:
    run = await make_run(
        thread, user, text="weather?", status=RunStatus.RUNNING, age=timedelta(0)
    )
    # As the worker holds it: with its agent and thread at hand.
    return await database_sync_to_async(
        Run.objects.select_related("agent", "thread").get
    )(pk=run.pk)


@database_sync_to_async
def stored_inputs(run: Run) -> list[RunInput]:
    return list(RunInput.objects.filter(run=run))


async def answered_once_open(questions: Questions, run: Run, answer) -> None:
    await eventually(
        lambda: questions.answer(str(run.id), None, answer, "participant"),
        what="the question to be open",
    )


async def test_an_answer_reaches_the_run_that_asked_and_is_stored(thread, users):
    run = await asking_run(thread, users[Role.OWNER])
    questions = Questions()

    asking = asyncio.ensure_future(questions.ask(run, "Which city?", 10))
    await answered_once_open(questions, run, "Oslo")

    assert await asking == "Oslo"
    (question,) = await stored_inputs(run)
    assert question.question == "Which city?"
    assert question.status == RunInputStatus.ANSWERED
    assert (question.answer, question.answered_by_username) == ("Oslo", "participant")


async def test_a_question_nobody_answers_times_out(thread, users):
    run = await asking_run(thread, users[Role.OWNER])

    assert await Questions().ask(run, "Anyone?", 0.1) is None

    (question,) = await stored_inputs(run)
    assert question.status == RunInputStatus.TIMED_OUT


async def test_an_approval_comes_back_as_yes_or_no(thread, users):
    run = await asking_run(thread, users[Role.OWNER])
    questions = Questions()
    entry = {"id": "call_0", "name": "clock", "arguments": {}}

    approving = asyncio.ensure_future(questions.ask_approval(run, entry, 10))
    await answered_once_open(questions, run, False)

    assert await approving is False
    (question,) = await stored_inputs(run)
    assert question.kind == "approval"
    assert question.answer == "denied"


def test_an_answer_nothing_waits_for_is_refused():
    assert Questions().answer("no-such-run", None, "hello", "participant") is False


async def test_ending_a_run_says_whether_it_asked_and_forgets_it(thread, users):
    run = await asking_run(thread, users[Role.OWNER])
    questions = Questions()
    await questions.ask(run, "Quick?", 0.05)

    assert questions.end(str(run.id)) is True
    assert questions.end(str(run.id)) is False
    assert Questions().end(str(run.id)) is False
