"""Deliveries: a run that ends reaches a real receiver on loopback, signed;
failures are retried with the backoff up to the bound; rows a stopped worker
left are sent by the next one; the address is checked again at delivery."""

from __future__ import annotations

import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.test import AsyncClient
from django.utils import timezone
from rest_framework.authtoken.models import Token

from agents.models import Run, RunStatus
from chat.models import Message, Role
from tests.eventually import eventually
from tests.webhooks.conftest import call_api
from webhooks.models import DeliveryStatus, Webhook, WebhookDelivery

pytestmark = pytest.mark.django_db(transaction=True)


async def thread_webhook(user, thread, receiver) -> dict:
    status, body = await call_api(
        user, "put", f"/api/threads/{thread.id}/webhook/", {"url": receiver.url}
    )
    assert status == 201, body
    receiver.secret = body["secret"]
    return body


@database_sync_to_async
def deliveries() -> list[WebhookDelivery]:
    return list(WebhookDelivery.objects.prefetch_related("attempt_log"))


async def settled(count: int = 1) -> list[WebhookDelivery]:
    async def done():
        rows = await deliveries()
        if len(rows) == count and all(row.status != "pending" for row in rows):
            return rows
        return None

    return await eventually(done, timeout=15, what="the deliveries to settle")


async def test_a_finished_run_reaches_the_threads_webhook_signed(
    users, thread, worker, dispatcher, receiver
):
    owner = users[Role.OWNER]
    await thread_webhook(owner, thread, receiver)
    status, run = await call_api(
        owner, "post", f"/api/threads/{thread.id}/runs/", {"content": "hello webhook"}
    )
    assert status == 202, run

    (delivery,) = await settled()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert [attempt.status_code for attempt in delivery.attempt_log.all()] == [200]
    (call,) = receiver.received
    assert call.signed
    assert call.headers["x-parley-delivery"] == str(delivery.id)
    assert call.headers["x-parley-event"] == "run.completed"
    assert call.headers["content-type"] == "application/json"
    payload = call.payload
    assert payload["id"] == str(delivery.id) and payload["event"] == "run.completed"
    reply = await database_sync_to_async(
        lambda: Message.objects.get(run_id=run["id"], role="assistant").text
    )()
    assert reply == "hello webhook"
    assert payload["run"] == payload["run"] | {
        "id": run["id"],
        "thread_id": str(thread.id),
        "agent": "echo",
        "status": "completed",
        "requested_by": "owner",
        "text": reply,
        "error_code": None,
    }
    assert payload["run"]["finished_at"] and payload["run"]["started_at"]
    assert isinstance(payload["run"]["usage"], dict)

    # The owner sees it through the API.
    status, listing = await call_api(
        owner, "get", f"/api/webhooks/{delivery.webhook_id}/deliveries/"
    )
    assert status == 200
    (item,) = listing["results"]
    assert item["status"] == "delivered" and item["payload"] == payload
    assert item["attempt_log"][0]["status_code"] == 200


async def test_a_receiver_that_fails_twice_gets_three_attempts(
    users, thread, worker, dispatcher, receiver
):
    receiver.statuses = [500, 503, 200]
    owner = users[Role.OWNER]
    await thread_webhook(owner, thread, receiver)
    await call_api(owner, "post", f"/api/threads/{thread.id}/runs/", {"content": "x"})

    (delivery,) = await settled()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert delivery.attempts == 3 and delivery.delivered_at is not None
    log = list(delivery.attempt_log.all())
    assert [attempt.number for attempt in log] == [1, 2, 3]
    assert [attempt.status_code for attempt in log] == [500, 503, 200]
    assert [attempt.error_code for attempt in log] == [
        "webhook_bad_status",
        "webhook_bad_status",
        "",
    ]
    # The same delivery, body and id each time; every attempt signed afresh.
    assert len(receiver.received) == 3
    assert {call.body for call in receiver.received} == {delivery.body.encode()}
    assert {call.headers["x-parley-delivery"] for call in receiver.received} == {
        str(delivery.id)
    }
    assert [call.headers["x-parley-attempt"] for call in receiver.received] == [
        "1",
        "2",
        "3",
    ]
    assert all(call.signed for call in receiver.received)
    # Waits grew between attempts (backoff), never zero.
    assert log[1].started_at > log[0].started_at
    assert log[2].started_at > log[1].started_at


async def test_attempts_are_bounded(
    settings, users, thread, worker, dispatcher, receiver
):
    settings.PARLEY_WEBHOOK_MAX_ATTEMPTS = 3
    receiver.statuses = [500]
    owner = users[Role.OWNER]
    await thread_webhook(owner, thread, receiver)
    await call_api(owner, "post", f"/api/threads/{thread.id}/runs/", {"content": "x"})

    (delivery,) = await settled()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempts == 3 and delivery.attempts_left == 0
    assert delivery.last_status_code == 500
    assert len(receiver.received) == 3

    # Redelivering sends it again, with the same id, and a fresh set of attempts.
    receiver.statuses = [200]
    receiver.received.clear()
    status, body = await call_api(
        owner, "post", f"/api/webhooks/deliveries/{delivery.id}/redeliver/"
    )
    assert status == 202, body
    (delivery,) = await settled()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 4
    assert receiver.received[0].headers["x-parley-delivery"] == str(delivery.id)


async def test_a_restarted_worker_sends_what_the_stopped_one_left(
    users, thread, worker, dispatcher, receiver, settings
):
    """The first attempt fails; the worker stops before the retry; the
    delivery waits in the database and the next worker's dispatcher sends it."""
    # Long enough for the test to stop the worker before the retry is due.
    settings.PARLEY_WEBHOOK_RETRY_FIRST_SECONDS = 3.0
    settings.PARLEY_WEBHOOK_RETRY_MAX_SECONDS = 3.0
    receiver.statuses = [500, 200]
    owner = users[Role.OWNER]
    await thread_webhook(owner, thread, receiver)
    await call_api(owner, "post", f"/api/threads/{thread.id}/runs/", {"content": "x"})

    async def first_attempt_recorded():
        rows = await deliveries()
        return rows and rows[0].attempts == 1

    await eventually(first_attempt_recorded, what="the first attempt")
    await dispatcher.stop()  # the worker process ends
    (delivery,) = await deliveries()
    assert delivery.status == DeliveryStatus.PENDING and len(receiver.received) == 1

    dispatcher.start()  # a new worker process starts
    (delivery,) = await settled()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 2
    assert len(receiver.received) == 2


async def test_a_delivery_whose_worker_died_mid_attempt_is_sent_again(
    users, thread, dispatcher, receiver
):
    """A worker stopped while the receiver had not answered: the row stays
    held until its lease lapses, then the next dispatcher sends it."""
    owner = users[Role.OWNER]
    await thread_webhook(owner, thread, receiver)
    receiver.hang.set()
    run = await database_sync_to_async(Run.objects.create)(
        thread=thread, agent=thread.agent, status=RunStatus.QUEUED
    )
    status, _ = await call_api(owner, "post", f"/api/runs/{run.id}/cancel/")
    assert status == 200
    await eventually(lambda: receiver.received, what="the attempt to start")
    await dispatcher.stop()  # dies mid-attempt: nothing recorded
    (delivery,) = await deliveries()
    assert delivery.attempts == 0 and delivery.locked_until > timezone.now()

    # The lease lapses (the dead worker's hold), the receiver is back.
    await database_sync_to_async(WebhookDelivery.objects.update)(
        locked_until=timezone.now()
    )
    receiver.hang.clear()
    receiver.release.set()
    dispatcher.start()
    (delivery,) = await settled()
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 1
    assert delivery.event == "run.cancelled"
    ids = {call.headers["x-parley-delivery"] for call in receiver.received}
    assert ids == {str(delivery.id)}


async def test_a_run_ended_without_a_signal_is_caught_up_by_the_sweep(
    users, thread, dispatcher, receiver
):
    owner = users[Role.OWNER]
    await thread_webhook(owner, thread, receiver)

    @database_sync_to_async
    def end_quietly() -> Run:
        run = Run.objects.create(
            thread=thread, agent=thread.agent, status=RunStatus.RUNNING
        )
        # As a reset or an empty cancelled reply does: an UPDATE, no signal.
        Run.objects.filter(pk=run.pk).update(
            status=RunStatus.CANCELLED, finished_at=timezone.now(), partial_text="so"
        )
        return run

    run = await end_quietly()
    assert not await deliveries()
    dispatcher.start()
    (delivery,) = await settled()
    assert delivery.status == DeliveryStatus.DELIVERED
    payload = receiver.received[0].payload
    assert payload["event"] == "run.cancelled" and payload["run"]["id"] == str(run.id)
    assert payload["run"]["text"] == "so"


async def test_a_host_no_longer_allowed_is_not_called(
    settings, users, thread, worker, dispatcher, receiver
):
    owner = users[Role.OWNER]
    await thread_webhook(owner, thread, receiver)
    settings.PARLEY_WEBHOOK_ALLOWED_HOSTS = ["hooks.example.com"]
    await call_api(owner, "post", f"/api/threads/{thread.id}/runs/", {"content": "x"})

    (delivery,) = await settled()
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == 1
    assert delivery.last_error_code == "webhook_host_not_allowed"
    assert receiver.received == []


async def test_a_wildcard_host_resolving_to_loopback_is_not_called(
    settings, users, thread, worker, dispatcher, receiver
):
    """Allowed by `*` at creation (https, a name), refused at delivery: the
    name resolves to a loopback address."""
    settings.PARLEY_WEBHOOK_ALLOWED_HOSTS = ["*"]
    settings.PARLEY_WEBHOOK_MAX_ATTEMPTS = 2
    port = receiver.server.server_address[1]
    owner = users[Role.OWNER]
    status, body = await call_api(
        owner,
        "put",
        f"/api/threads/{thread.id}/webhook/",
        {"url": f"https://localhost:{port}/hooks"},
    )
    assert status == 201, body
    await call_api(owner, "post", f"/api/threads/{thread.id}/runs/", {"content": "x"})

    (delivery,) = await settled()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.last_error_code == "webhook_address_forbidden"
    assert receiver.received == []


async def test_a_run_names_a_webhook_before_or_after_it_ends(
    users, thread, worker, dispatcher, receiver
):
    owner = users[Role.OWNER]
    status, hook = await call_api(
        owner, "post", "/api/webhooks/", {"url": receiver.url}
    )
    assert status == 201
    receiver.secret = hook["secret"]
    status, run = await call_api(
        owner, "post", f"/api/threads/{thread.id}/runs/", {"content": "first"}
    )
    status, _ = await call_api(
        owner, "post", f"/api/runs/{run['id']}/webhook/", {"webhook": hook["id"]}
    )
    assert status == 201
    (delivery,) = await settled()
    assert delivery.run_id == uuid.UUID(run["id"])
    # A run that has already ended is delivered when it names the webhook.
    status, second = await call_api(
        owner, "post", f"/api/threads/{thread.id}/runs/", {"content": "second"}
    )

    async def ended():
        return (await call_api(owner, "get", f"/api/runs/{second['id']}/"))[1][
            "status"
        ] == "completed"

    await eventually(ended, what="the second run to end")
    await call_api(
        owner, "post", f"/api/runs/{second['id']}/webhook/", {"webhook": hook["id"]}
    )
    await settled(2)
    texts = sorted(call.payload["run"]["text"] for call in receiver.received)
    assert texts == ["first", "second"]
    assert all(call.signed for call in receiver.received)


async def test_a_chat_completion_names_a_webhook_in_its_metadata(
    users, thread, worker, dispatcher, receiver
):
    owner = users[Role.OWNER]
    status, hook = await call_api(
        owner, "post", "/api/webhooks/", {"url": receiver.url}
    )
    receiver.secret = hook["secret"]
    token = await database_sync_to_async(lambda: Token.objects.create(user=owner).key)()
    client = AsyncClient()
    auth = {"Authorization": f"Bearer {token}"}
    body = {
        "model": "echo",
        "messages": [{"role": "user", "content": "via openai"}],
        "metadata": {"parley_webhook": hook["id"]},
    }
    response = await client.post(
        "/api/openai/v1/chat/completions",
        json.dumps(body),
        "application/json",
        headers=auth,
    )
    assert response.status_code == 200, response.content
    (delivery,) = await settled()
    assert delivery.status == DeliveryStatus.DELIVERED
    (call,) = receiver.received
    assert call.signed and call.payload["run"]["text"] == "via openai"
    assert call.payload["run"]["id"] == response["X-Parley-Run-Id"]

    # An id that is not the caller's webhook: refused, nothing posted.
    messages = await sync_to_async(Message.objects.count)()
    body["metadata"] = {"parley_webhook": str(uuid.uuid4())}
    response = await client.post(
        "/api/openai/v1/chat/completions",
        json.dumps(body),
        "application/json",
        headers=auth,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "webhook_not_found"
    assert await sync_to_async(Message.objects.count)() == messages


async def test_every_webhook_of_a_run_gets_it_once(
    users, thread, worker, dispatcher, receiver
):
    owner = users[Role.OWNER]
    await thread_webhook(owner, thread, receiver)
    thread_hook = await database_sync_to_async(Webhook.objects.get)(thread=thread)
    status, run = await call_api(
        owner, "post", f"/api/threads/{thread.id}/runs/", {"content": "x"}
    )
    # Naming the thread's own webhook again adds nothing.
    await call_api(
        owner,
        "post",
        f"/api/runs/{run['id']}/webhook/",
        {"webhook": str(thread_hook.id)},
    )
    await settled(1)
    assert len(receiver.received) == 1
