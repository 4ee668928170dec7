"""Budgets: a run is refused before it starts once its requester (or its
thread) used the month's budget up, over the socket and the API alike; a hard
budget stops a reply mid-way, its text kept; the person who asked is charged,
never the thread's owner for a participant's run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from agents.models import Run
from chat.models import Message, MessageRole, Role
from chat.services import message_post
from realtime.errors import ErrorCode, ServiceError
from usage.models import Budget, UsageRecord
from usage.selectors import budget_status, period_of

pytestmark = pytest.mark.django_db(transaction=True)


def complete(frame: dict) -> bool:
    return frame["type"] == "state_complete"


def error(frame: dict) -> bool:
    return frame["type"] == "error"


async def test_a_user_under_budget_runs_and_the_next_run_over_it_is_refused(
    thread, users, worker, client_for, api_for
):
    owner = users[Role.OWNER]
    await Budget.objects.acreate(user=owner, monthly_tokens=5)
    client = client_for(thread.id, owner)
    await client.join()

    # Under budget (0 of 5 used): the reply comes, and costs 3 + 3 tokens.
    await client.send({"type": "message", "content": "one two three"})
    done = (await client.receive_until(complete))[-1]
    assert done["content"]["status"] == "completed"
    assert done["content"]["text"] == "one two three"
    charged = await UsageRecord.objects.aget(run_id=done["run_id"])
    assert (charged.user_id, charged.input_tokens, charged.output_tokens) == (
        owner.pk,
        3,
        3,
    )

    # Now over it (6 of 5): refused before any run exists, with the numbers.
    await client.send(
        {"type": "message", "content": "and again", "request_id": "second"}
    )
    refused = (await client.receive_until(error))[-1]
    assert refused["request_id"] == "second"
    assert refused["content"]["code"] == "budget_exceeded"
    assert refused["content"]["details"] == {
        "scope": "user",
        "unit": "tokens",
        "used": 6,
        "limit": 5,
        "period": period_of(),
        "hard": False,
        "default": False,
    }
    assert await Run.objects.filter(thread=thread).acount() == 1
    assert not await Message.objects.filter(text="and again").aexists()

    # The API refuses the same way, with the same details.
    response = await _post_run(api_for(owner), thread, "through the API")
    assert response.status_code == 402
    body = response.json()["error"]
    assert body["code"] == "budget_exceeded"
    assert body["details"]["used"] == 6 and body["details"]["limit"] == 5
    assert "6 of 5 tokens" in body["message"]


async def _post_run(api, thread, text: str):
    return await sync_to_async(api.post)(
        f"/api/threads/{thread.id}/runs/", {"content": text}, format="json"
    )


async def test_a_hard_budget_stops_a_reply_mid_way_and_keeps_its_text(
    thread, users, worker, client_for
):
    # 300 words at 50 a second: six seconds if nothing stops it.
    thread.agent.extra_params = {"tokens_per_second": 50}
    await thread.agent.asave()
    owner = users[Role.OWNER]
    # The prompt counts about 375 tokens (4 characters each) until the
    # provider reports usage; the budget leaves room for some 25 words more.
    await Budget.objects.acreate(user=owner, monthly_tokens=400, hard=True)
    observer = client_for(thread.id, users[Role.OBSERVER])
    client = client_for(thread.id, owner)
    await client.join()
    await observer.join()
    prompt = " ".join(f"w{index:03d}" for index in range(300))

    await client.send({"type": "message", "content": prompt})

    frames = await client.receive_until(complete, timeout=10)
    done = frames[-1]
    stopped = [frame for frame in frames if error(frame)]
    assert stopped and stopped[-1]["content"]["code"] == "budget_exceeded"
    assert done["content"]["status"] == "cancelled"
    assert done["content"]["error"]["code"] == "budget_exceeded"
    words = done["content"]["text"].split()
    assert 0 < len(words) < 300
    assert words == prompt.split()[: len(words)]  # the start of the reply
    # Everyone in the thread sees the same end.
    seen = (await observer.receive_until(complete))[-1]
    assert seen["content"]["text"] == done["content"]["text"]
    # The partial reply is kept, as a cancelled run's is.
    reply = await Message.objects.aget(
        run_id=done["run_id"], role=MessageRole.ASSISTANT
    )
    assert reply.text == done["content"]["text"]
    run = await Run.objects.aget(pk=done["run_id"])
    assert run.status == "cancelled" and run.error_code == "budget_exceeded"
    # Charged what it streamed (estimated: the provider never reported).
    charged = await UsageRecord.objects.aget(run_id=run.pk)
    assert charged.estimated
    assert charged.output_tokens == len(words)
    assert charged.input_tokens + charged.output_tokens > 400

    # And the next message is refused.
    await client.send({"type": "message", "content": "more"})
    refused = (await client.receive_until(error))[-1]
    assert refused["content"]["code"] == "budget_exceeded"
    assert refused["content"]["details"]["hard"] is True


async def test_a_soft_budget_lets_a_running_reply_finish(
    thread, users, worker, client_for
):
    owner = users[Role.OWNER]
    await Budget.objects.acreate(user=owner, monthly_tokens=10)
    client = client_for(thread.id, owner)
    await client.join()
    prompt = " ".join(["word"] * 40)
    await client.send({"type": "message", "content": prompt})
    done = (await client.receive_until(complete))[-1]
    assert done["content"]["status"] == "completed"
    assert done["content"]["text"] == prompt
    charged = await UsageRecord.objects.aget(run_id=done["run_id"])
    assert charged.input_tokens + charged.output_tokens == 80
    assert not charged.estimated


async def test_the_owner_is_not_charged_for_a_participants_run(
    thread, users, worker, client_for
):
    owner, participant = users[Role.OWNER], users[Role.PARTICIPANT]
    # The owner has almost nothing left; the participant is unlimited.
    await Budget.objects.acreate(user=owner, monthly_tokens=1)
    client = client_for(thread.id, participant)
    await client.join()

    for text in ("first question", "second question"):
        await client.send({"type": "message", "content": text})
        done = (await client.receive_until(complete))[-1]
        assert done["content"]["status"] == "completed"

    charged = [
        (record.user_id, record.username)
        async for record in UsageRecord.objects.filter(thread_id=thread.id)
    ]
    assert charged == [(participant.pk, "participant")] * 2
    # The owner's month is untouched, so the owner may still ask.
    status = await sync_to_async(budget_status)(user=owner, thread=thread)
    assert status[0]["used"] == 0
    owner_client = client_for(thread.id, owner)
    await owner_client.join()
    await owner_client.send({"type": "message", "content": "mine"})
    done = (await owner_client.receive_until(complete))[-1]
    assert done["content"]["status"] == "completed"


def test_a_thread_budget_refuses_every_member_once_used_up(thread, users, record):
    Budget.objects.create(thread=thread, monthly_tokens=100)
    record(user=users[Role.OWNER], thread=thread, input_tokens=60, output_tokens=40)

    with pytest.raises(ServiceError) as refused:
        message_post(thread=thread, user=users[Role.PARTICIPANT], text="hi")

    assert refused.value.code == ErrorCode.BUDGET_EXCEEDED
    assert refused.value.details["scope"] == "thread"
    assert refused.value.details["used"] == 100
    assert "This thread has used 100 of 100 tokens" in refused.value.message


def test_the_default_budget_applies_to_users_without_their_own(
    thread, users, record, settings
):
    settings.PARLEY_DEFAULT_MONTHLY_TOKEN_BUDGET = 50
    owner, participant = users[Role.OWNER], users[Role.PARTICIPANT]
    record(user=owner, thread=thread, input_tokens=30, output_tokens=30)
    record(user=participant, thread=thread, input_tokens=30, output_tokens=30)
    Budget.objects.create(user=participant, monthly_tokens=1000)

    with pytest.raises(ServiceError) as refused:
        message_post(thread=thread, user=owner, text="hi")
    assert refused.value.details["default"] is True
    assert refused.value.details["limit"] == 50

    # The participant's own budget replaces the default.
    run = message_post(thread=thread, user=participant, text="hi")
    assert run.requested_by_id == participant.pk


def test_the_default_budget_unset_is_unlimited(thread, users, record, settings):
    settings.PARLEY_DEFAULT_MONTHLY_TOKEN_BUDGET = 0
    record(user=users[Role.OWNER], thread=thread, input_tokens=10**9)
    assert message_post(thread=thread, user=users[Role.OWNER], text="hi")


def test_a_cost_budget_counts_cost_and_last_months_usage_does_not_count(
    thread, users, record
):
    owner = users[Role.OWNER]
    Budget.objects.create(user=owner, monthly_cost="0.50")
    last_month = timezone.now().replace(day=1) - timedelta(days=1)
    record(user=owner, thread=thread, cost="5.00", created_at=last_month)
    record(user=owner, thread=thread, cost="0.49")
    assert message_post(thread=thread, user=owner, text="still under")

    record(user=owner, thread=thread, cost="0.01")
    with pytest.raises(ServiceError) as refused:
        message_post(thread=thread, user=owner, text="over")
    assert refused.value.details == {
        "scope": "user",
        "unit": "cost",
        "used": "0.5",
        "limit": "0.5",
        "period": period_of(),
        "hard": False,
        "default": False,
    }


def test_a_hard_budget_gives_the_run_what_is_left(thread, users, record):
    owner = users[Role.OWNER]
    Budget.objects.create(user=owner, monthly_tokens=1000, hard=True)
    Budget.objects.create(thread=thread, monthly_tokens=500, hard=True)
    record(user=owner, thread=thread, input_tokens=100, output_tokens=100)

    run = message_post(thread=thread, user=owner, text="hi")

    # The user has 800 left, the thread 300: the smaller one wins.
    assert Run.objects.get(pk=run.pk).budget_allowance == {"tokens": 300}


def test_the_thread_page_says_what_was_used_this_month(client, thread, users, record):
    owner = users[Role.OWNER]
    Budget.objects.create(user=owner, monthly_tokens=1000)
    record(user=owner, thread=thread, input_tokens=100, output_tokens=23)
    client.force_login(owner)

    page = client.get(f"/threads/{thread.id}/").content.decode()

    assert "used 123 of 1000 tokens this month" in page


def test_the_thread_page_says_nothing_without_a_budget(client, thread, users):
    client.force_login(users[Role.OWNER])
    page = client.get(f"/threads/{thread.id}/").content.decode()
    assert "this month" not in page
