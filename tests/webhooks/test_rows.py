"""Delivery rows: written in the transaction that ends the run (none if it
rolls back, one per webhook however often the end is heard), and shown in the
admin with every attempt and a Redeliver action."""

from __future__ import annotations

import json

import pytest
from django.db import transaction
from django.utils import timezone

from agents.models import Run, RunStatus
from agents.services import run_finish
from chat.models import Role
from webhooks.models import DeliveryStatus, Webhook, WebhookAttempt, WebhookDelivery
from webhooks.services import deliveries_create_for_run, deliveries_create_missing

pytestmark = pytest.mark.django_db

HOOK = "http://127.0.0.1:9/hooks"


@pytest.fixture
def webhook(users, thread):
    return Webhook.objects.create(
        owner=users[Role.OWNER], thread=thread, url=HOOK, secret="whsec_test"
    )


def finish(thread, text: str = "reply") -> Run:
    """A running run ended by the worker's service (agents.services.run_finish)."""
    run = Run.objects.create(
        thread=thread, agent=thread.agent, status=RunStatus.RUNNING
    )
    return run_finish(
        run_id=str(run.pk),
        status=RunStatus.FAILED,
        text=text,
        chunks=1,
        error_code="provider_error",
        error="Upstream said no.",
    )


def test_the_row_is_written_with_the_runs_end_or_not_at_all(webhook, thread):
    with pytest.raises(RuntimeError), transaction.atomic():
        finish(thread)
        assert WebhookDelivery.objects.count() == 1
        raise RuntimeError("the finishing transaction fails")
    assert not WebhookDelivery.objects.exists()

    run = finish(thread, text="half a reply")
    (delivery,) = WebhookDelivery.objects.all()
    assert delivery.run == run and delivery.event == "run.failed"
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts_left == 5
    body = json.loads(delivery.body)
    assert body["run"]["text"] == "half a reply"
    assert (body["run"]["error_code"], body["run"]["error"]) == (
        "provider_error",
        "Upstream said no.",
    )


def test_a_run_is_delivered_once_to_each_webhook(webhook, thread):
    run = finish(thread)
    deliveries_create_for_run(run_id=run.pk, thread_id=thread.pk)
    assert deliveries_create_missing() == 0
    assert WebhookDelivery.objects.count() == 1


def test_runs_still_going_or_ended_before_the_webhook_get_nothing(users, thread):
    old = finish(thread)
    Webhook.objects.create(
        owner=users[Role.OWNER], thread=thread, url=HOOK, secret="whsec_test"
    )
    Run.objects.create(thread=thread, agent=thread.agent, status=RunStatus.RUNNING)
    assert deliveries_create_missing() == 0
    deliveries_create_for_run(run_id=old.pk, thread_id=thread.pk)
    assert not WebhookDelivery.objects.exists()


def test_the_admin_shows_deliveries_and_redelivers(client, make_user, webhook, thread):
    client.force_login(make_user("boss", is_staff=True, is_superuser=True))
    finish(thread)
    delivery = WebhookDelivery.objects.get()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.FAILED, attempts=1, attempts_left=0
    )
    WebhookAttempt.objects.create(
        delivery=delivery,
        number=1,
        started_at=timezone.now(),
        status_code=502,
        error_code="webhook_bad_status",
    )
    listing = client.get("/admin/webhooks/webhookdelivery/")
    assert listing.status_code == 200 and str(delivery.id) in listing.content.decode()
    page = client.get(f"/admin/webhooks/webhookdelivery/{delivery.id}/change/")
    assert page.status_code == 200 and "webhook_bad_status" in page.content.decode()
    hook_page = client.get(f"/admin/webhooks/webhook/{webhook.id}/change/")
    assert hook_page.status_code == 200
    assert "whsec_test" not in hook_page.content.decode()

    response = client.post(
        "/admin/webhooks/webhookdelivery/",
        {"action": "redeliver", "_selected_action": [str(delivery.id)]},
    )
    assert response.status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts_left == 5
