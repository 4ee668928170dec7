"""PARLEY_MAX_ACTIVE_RUNS caps the runs queued or running in the whole
deployment: past it a message is refused with `server_busy` and a hint when to
try again; nothing under it is refused."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from agents.models import AgentConfig, Run
from chat.models import Role, Thread
from chat.services import MessageRequest, messages_post
from realtime.errors import ErrorCode, ServiceError

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def capped(settings):
    settings.PARLEY_MAX_ACTIVE_RUNS = 2
    settings.PARLEY_MAX_ACTIVE_RUNS_PER_USER = 0


def test_messages_past_the_cap_are_refused_and_the_rest_posted(
    capped, thread, users, echo_agent
):
    owner = users[Role.OWNER]
    others = [Thread.objects.create(owner=owner, agent=echo_agent) for _ in range(2)]
    outcomes = messages_post(
        requests=[
            MessageRequest(thread.pk, owner, "one"),
            MessageRequest(others[0].pk, owner, "two"),
            MessageRequest(others[1].pk, owner, "three"),
        ]
    )
    assert [isinstance(outcome, Run) for outcome in outcomes] == [True, True, False]
    refusal = outcomes[2]
    assert isinstance(refusal, ServiceError)
    assert refusal.code == ErrorCode.SERVER_BUSY and refusal.retry_after > 0
    assert "try again" in refusal.message
    # A run that ends makes room again.
    Run.objects.filter(pk=outcomes[0].pk).update(status="completed")
    (later,) = messages_post(requests=[MessageRequest(others[1].pk, owner, "three")])
    assert isinstance(later, Run)


def test_the_api_says_when_to_try_again(capped, thread, users, echo_agent):
    api = APIClient()
    api.force_authenticate(users[Role.OWNER])
    for _ in range(2):
        other = Thread.objects.create(owner=users[Role.OWNER], agent=echo_agent)
        assert (
            api.post(
                f"/api/threads/{other.id}/runs/", {"content": "hi"}, format="json"
            ).status_code
            == 202
        )

    refused = api.post(
        f"/api/threads/{thread.id}/runs/", {"content": "hi"}, format="json"
    )

    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "server_busy"
    assert int(refused["Retry-After"]) > 0


async def test_a_socket_past_the_cap_gets_server_busy(
    capped, thread, users, client_for
):
    from asgiref.sync import sync_to_async

    owner = users[Role.OWNER]

    def fill():
        # Replies that last: a worker started by the socket must not end them.
        slow = AgentConfig.objects.create(
            name="slow", provider="echo", extra_params={"tokens_per_second": 1}
        )
        for _ in range(2):
            other = Thread.objects.create(owner=owner, agent=slow)
            messages_post(requests=[MessageRequest(other.pk, owner, "busy " * 100)])

    await sync_to_async(fill)()
    client = client_for(thread.id, owner)
    await client.join()
    await client.send({"type": "message", "content": "hello", "request_id": "m"})
    error = (await client.receive_until(lambda f: f["type"] == "error"))[-1]
    assert error["content"]["code"] == "server_busy"
    assert error["request_id"] == "m"
