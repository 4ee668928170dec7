"""Webhook reads: a caller's webhooks and their deliveries."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from chat.models import Role, Thread
from chat.permissions import permission_error
from chat.selectors import thread_get_for_user
from realtime.errors import ServiceError
from webhooks.errors import WebhookErrorCode
from webhooks.models import Webhook, WebhookDelivery


def webhook_list_for_user(*, user) -> QuerySet[Webhook]:
    return Webhook.objects.filter(owner=user).order_by("created_at")


def thread_for_webhook_owner(*, user, thread_id) -> Thread:
    """The thread, when `user` owns it: only the owner manages its webhook
    (readers get 403, strangers 404 thread_not_found, as everywhere)."""
    thread, role = thread_get_for_user(thread_id=thread_id, user=user)
    if role != Role.OWNER:
        raise permission_error(role, action="manage this thread's webhook")
    return thread


def thread_webhook_get(*, user, thread_id) -> Webhook:
    """The webhook of a thread `user` owns (404 webhook_not_found: none)."""
    thread = thread_for_webhook_owner(user=user, thread_id=thread_id)
    webhook = Webhook.objects.filter(thread=thread).first()
    if webhook is None:
        raise ServiceError(
            WebhookErrorCode.WEBHOOK_NOT_FOUND,
            "This thread has no webhook.",
            status=404,
        )
    return webhook


def webhook_get_for_user(*, user, webhook_id) -> Webhook:
    """One of the caller's webhooks; anyone else's is a 404."""
    webhook = Webhook.objects.filter(pk=webhook_id, owner=user).first()
    if webhook is None:
        raise ServiceError(
            WebhookErrorCode.WEBHOOK_NOT_FOUND, "No such webhook.", status=404
        )
    return webhook


def delivery_list_for_webhook(*, webhook: Webhook) -> QuerySet[WebhookDelivery]:
    return (
        WebhookDelivery.objects.filter(webhook=webhook)
        .prefetch_related("attempt_log")
        .order_by("-created_at")
    )


def delivery_get_for_user(*, user, delivery_id) -> WebhookDelivery:
    """A delivery of one of the caller's webhooks; anyone else's is a 404."""
    delivery = (
        WebhookDelivery.objects.filter(pk=delivery_id, webhook__owner=user)
        .prefetch_related("attempt_log")
        .first()
    )
    if delivery is None:
        raise ServiceError(
            WebhookErrorCode.DELIVERY_NOT_FOUND, "No such delivery.", status=404
        )
    return delivery


# The OpenAI-compatible endpoint's `metadata` key naming a webhook for the run.
COMPLETION_METADATA_KEY = "parley_webhook"


def webhook_named_in_metadata(*, user, metadata: dict | None) -> Webhook | None:
    """The caller's webhook that a chat completion's `metadata.parley_webhook`
    names (None: it names none); an id that is not one of theirs is a 400."""
    value = (metadata or {}).get(COMPLETION_METADATA_KEY)
    if not value:
        return None
    webhook = None
    try:
        webhook = Webhook.objects.filter(pk=uuid.UUID(str(value)), owner=user).first()
    except ValueError:
        pass
    if webhook is None:
        raise ServiceError(
            WebhookErrorCode.WEBHOOK_NOT_FOUND,
            f"metadata.{COMPLETION_METADATA_KEY} names no webhook of yours "
            "(POST /api/webhooks/ creates one).",
            status=400,
        )
    return webhook
