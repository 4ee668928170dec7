"""Webhook writes: webhooks set and removed, runs naming one, and the delivery
rows' life (created when a run ends, claimed, attempted, redelivered).

A delivery row is created in the transaction that ends the run (on
`agents.signals.run_ended` webhooks/receivers.py calls
`deliveries_create_for_run`), and the dispatcher (webhooks/dispatch.py) is
woken once it commits (webhooks/signals.py). Should creating a row fail, the
dispatcher's sweep finds the run (`deliveries_create_missing`).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from agents.models import FINAL_RUN_STATUSES, Run, RunStatus
from chat.models import Message, MessageRole
from chat.permissions import can_read, thread_role
from realtime.errors import ServiceError
from realtime.events import after_commit
from realtime.retry import Backoff
from webhooks import signing
from webhooks.errors import WebhookErrorCode
from webhooks.models import (
    DeliveryStatus,
    RunWebhook,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
)
from webhooks.selectors import thread_for_webhook_owner, thread_webhook_get
from webhooks.signals import announce_deliveries_due
from webhooks.targets import url_problem

logger = logging.getLogger(__name__)

EVENTS = {
    RunStatus.COMPLETED: WebhookEvent.RUN_COMPLETED,
    RunStatus.FAILED: WebhookEvent.RUN_FAILED,
    RunStatus.CANCELLED: WebhookEvent.RUN_CANCELLED,
}
# Runs that ended longer ago than this are not looked at again by the sweep.
CATCH_UP = timedelta(days=1)
# How much of a receiver's answer an attempt keeps.
EXCERPT_CHARS = 500


def _check_url(url: str) -> None:
    problem = url_problem(url)
    if problem is not None:
        raise ServiceError(problem.code, problem.message, status=400)


# --- webhooks ------------------------------------------------------------------------


def webhook_create(*, owner, url: str, description: str = "", thread=None) -> Webhook:
    """A new webhook with a new secret (the caller shows it, this once)."""
    _check_url(url)
    return Webhook.objects.create(
        owner=owner,
        url=url,
        description=description,
        thread=thread,
        secret=signing.new_secret(),
    )


def thread_webhook_set(
    *, actor, thread_id, url: str, description: str = ""
) -> tuple[Webhook, bool]:
    """Set the thread's webhook (its owner only): (webhook, created). A changed
    URL keeps the secret; a new webhook gets one."""
    with transaction.atomic():
        thread = thread_for_webhook_owner(user=actor, thread_id=thread_id)
        _check_url(url)
        webhook = Webhook.objects.select_for_update().filter(thread=thread).first()
        if webhook is None:
            try:
                with transaction.atomic():
                    return (
                        webhook_create(
                            owner=actor, url=url, description=description, thread=thread
                        ),
                        True,
                    )
            except IntegrityError:  # set at the same moment by another call
                webhook = Webhook.objects.select_for_update().get(thread=thread)
        webhook.url = url
        webhook.description = description
        webhook.save(update_fields=["url", "description", "updated_at"])
        return webhook, False


def thread_webhook_delete(*, actor, thread_id) -> None:
    """Remove the thread's webhook; its pending deliveries go with it."""
    thread_webhook_get(user=actor, thread_id=thread_id).delete()


def webhook_delete(*, webhook: Webhook) -> None:
    webhook.delete()


# --- runs that name a webhook -----------------------------------------------------------


def run_webhook_add(*, actor, run_id, webhook: Webhook) -> tuple[RunWebhook, bool]:
    """Deliver the end of run `run_id` (in a thread the caller reads) to the
    caller's `webhook`: (link, created). A run that has already ended is
    delivered at once.

    The run's row is locked first: either the run's end (which holds that row
    until it commits) comes after this, and finds the link, or it came before,
    and this sees the run ended and creates the delivery itself.
    """
    with transaction.atomic():
        run = (
            Run.objects.select_for_update(of=("self",))
            .select_related("thread")
            .filter(pk=run_id)
            .first()
        )
        if run is None or not can_read(thread_role(thread=run.thread, user=actor)):
            raise ServiceError(
                WebhookErrorCode.RUN_NOT_FOUND, "No such run.", status=404
            )
        link, created = RunWebhook.objects.get_or_create(run=run, webhook=webhook)
        if run.status in FINAL_RUN_STATUSES:
            deliveries_create_for_run(run_id=run.pk, thread_id=run.thread_id)
    return link, created


# --- deliveries: created when a run ends -----------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def run_payload(*, run: Run, text: str, delivery_id, event: str) -> dict:
    """What a receiver gets (docs/clients.md, "Webhooks")."""
    return {
        "id": str(delivery_id),
        "event": event,
        "created_at": _iso(timezone.now()),
        "run": {
            "id": str(run.pk),
            "thread_id": str(run.thread_id),
            "agent": run.agent.name,
            "status": run.status,
            "requested_by": run.requested_by.username if run.requested_by else None,
            "text": text,
            "usage": run.usage or {},
            "error_code": run.error_code or None,
            "error": run.error or None,
            "cancel_reason": run.cancel_reason or None,
            "created_at": _iso(run.created_at),
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
        },
    }


def _reply_text(run: Run) -> str:
    text = (
        Message.objects.filter(run_id=run.pk, role=MessageRole.ASSISTANT)
        .order_by("-created_at")
        .values_list("text", flat=True)
        .first()
    )
    return text if text is not None else run.partial_text


def deliveries_create_for_run(
    *, run_id, thread_id, text: str | None = None
) -> list[WebhookDelivery]:
    """The delivery rows of an ended run: one per webhook that wants it (the
    thread's, and those the run named). Call in the transaction that ended the
    run; the dispatcher is woken after the commit. `text`: the reply, when the
    caller has it (else it is read). Rows that exist already are left alone."""
    webhooks = list(
        Webhook.objects.filter(Q(thread_id=thread_id) | Q(run_links__run_id=run_id))
        .exclude(deliveries__run_id=run_id)
        .distinct()
    )
    if not webhooks:
        return []
    run = Run.objects.select_related("agent", "requested_by").filter(pk=run_id).first()
    if run is None or run.status not in FINAL_RUN_STATUSES:
        return []
    if text is None:
        text = _reply_text(run)
    event = EVENTS[RunStatus(run.status)]
    now = timezone.now()
    made = []
    for webhook in webhooks:
        if (
            webhook.thread_id is not None
            and run.finished_at is not None
            and webhook.created_at > run.finished_at
            and not RunWebhook.objects.filter(run=run, webhook=webhook).exists()
        ):
            continue  # the thread's webhook was set after this run ended
        delivery = WebhookDelivery(
            webhook=webhook,
            run=run,
            event=event,
            attempts_left=settings.PARLEY_WEBHOOK_MAX_ATTEMPTS,
            next_attempt_at=now,
        )
        payload = run_payload(run=run, text=text, delivery_id=delivery.pk, event=event)
        delivery.body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        try:
            with transaction.atomic():
                delivery.save(force_insert=True)
        except IntegrityError:  # the sweep and the run's end, at the same moment
            continue
        made.append(delivery)
    if made:
        after_commit(announce_deliveries_due)
    return made


def deliveries_create_missing(*, now: datetime | None = None) -> int:
    """Deliveries for runs that ended (within CATCH_UP) without one: where
    creating them when the run ended failed (logged by webhooks/receivers.py).
    Returns how many were created."""
    now = now or timezone.now()
    since = now - CATCH_UP
    delivered = WebhookDelivery.objects.filter(run_id=OuterRef("pk"))
    thread_runs = (
        Run.objects.filter(
            status__in=FINAL_RUN_STATUSES,
            finished_at__gte=since,
            thread__webhook__isnull=False,
        )
        .filter(finished_at__gte=F("thread__webhook__created_at"))
        .exclude(Exists(delivered.filter(webhook_id=OuterRef("thread__webhook__id"))))
    )
    named = RunWebhook.objects.filter(
        run__status__in=FINAL_RUN_STATUSES, run__finished_at__gte=since
    ).exclude(
        Exists(
            WebhookDelivery.objects.filter(
                run_id=OuterRef("run_id"), webhook_id=OuterRef("webhook_id")
            )
        )
    )
    missing = set(thread_runs.values_list("pk", "thread_id")[:500])
    missing |= set(named.values_list("run_id", "run__thread_id")[:500])
    created = 0
    for run_id, thread_id in missing:
        with transaction.atomic():
            created += len(
                deliveries_create_for_run(run_id=run_id, thread_id=thread_id)
            )
    return created


# --- deliveries: attempts ------------------------------------------------------------


def retry_delay(attempts_made: int) -> float:
    """Seconds before the next attempt after `attempts_made` failed ones: the
    project's one backoff (realtime/retry.py), growing 3x, with jitter."""
    backoff = Backoff(
        settings.PARLEY_WEBHOOK_RETRY_FIRST_SECONDS,
        maximum=settings.PARLEY_WEBHOOK_RETRY_MAX_SECONDS,
        factor=3.0,
    )
    delay = 0.0
    for _ in range(max(attempts_made, 1)):
        delay = backoff.next_delay()
    return delay


def lease_seconds() -> float:
    # Longer than an attempt can take, so a live attempt keeps its row.
    return settings.PARLEY_WEBHOOK_TIMEOUT_SECONDS * 2 + 30


def delivery_claim_due(*, limit: int, now: datetime | None = None) -> list[dict]:
    """Take up to `limit` deliveries due now for this process: each comes back
    with what the attempt needs. A row another process holds (its
    `locked_until` ahead) is skipped; one whose holder stopped is taken."""
    now = now or timezone.now()
    due = list(
        WebhookDelivery.objects.filter(
            status=DeliveryStatus.PENDING, next_attempt_at__lte=now
        )
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    lease = now + timedelta(seconds=lease_seconds())
    claimed = []
    for delivery_id in due:
        # Conditional: of two processes that read the same row, one takes it.
        taken = (
            WebhookDelivery.objects.filter(
                pk=delivery_id, status=DeliveryStatus.PENDING
            )
            .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
            .update(locked_until=lease)
        )
        if taken:
            claimed.append(delivery_id)
    return list(
        WebhookDelivery.objects.filter(pk__in=claimed)
        .annotate(url=F("webhook__url"), secret=F("webhook__secret"))
        .values("id", "url", "secret", "body", "event", "attempts")
    )


def delivery_next_due(*, now: datetime | None = None) -> float | None:
    """Seconds until the next pending delivery that no process holds is due
    (None: none). Rows held elsewhere come back to the sweep when let go."""
    now = now or timezone.now()
    moment = (
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING)
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
    )
    if moment is None:
        return None
    return max((moment - now).total_seconds(), 0.0)


def delivery_record_attempt(
    *,
    delivery_id,
    started_at: datetime,
    duration_ms: int,
    status_code: int | None,
    error_code: str = "",
    error: str = "",
    response_excerpt: str = "",
    final: bool = False,
) -> WebhookDelivery | None:
    """Store an attempt and what follows: delivered (2xx), another attempt after
    the backoff, or failed (attempts used up, or `final`: retrying cannot help,
    the URL is no longer allowed). Returns the row (None: it is gone)."""
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update().filter(pk=delivery_id).first()
        )
        if delivery is None:
            return None
        delivery.attempts += 1
        delivery.attempts_left = max(delivery.attempts_left - 1, 0)
        WebhookAttempt.objects.create(
            delivery=delivery,
            number=delivery.attempts,
            started_at=started_at,
            duration_ms=duration_ms,
            status_code=status_code,
            error_code=error_code,
            error=error[:2000],
            response_excerpt=response_excerpt[:EXCERPT_CHARS],
        )
        delivery.last_status_code = status_code
        delivery.last_error_code = error_code
        delivery.last_error = error[:2000]
        delivery.locked_until = None
        now = timezone.now()
        if status_code is not None and 200 <= status_code < 300:
            delivery.status = DeliveryStatus.DELIVERED
            delivery.delivered_at = now
            delivery.next_attempt_at = None
        elif final or delivery.attempts_left == 0:
            delivery.status = DeliveryStatus.FAILED
            delivery.next_attempt_at = None
        else:
            delivery.next_attempt_at = now + timedelta(
                seconds=retry_delay(delivery.attempts)
            )
        delivery.save()
    return delivery


def delivery_redeliver(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery again, whatever became of it (the same id and body: a
    receiver that kept it sees a repeat), with a new set of attempts."""
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().get(pk=delivery.pk)
        delivery.status = DeliveryStatus.PENDING
        delivery.attempts_left = settings.PARLEY_WEBHOOK_MAX_ATTEMPTS
        delivery.next_attempt_at = timezone.now()
        delivery.locked_until = None
        delivery.save(
            update_fields=["status", "attempts_left", "next_attempt_at", "locked_until"]
        )
        after_commit(announce_deliveries_due)
    return delivery
