"""Webhooks (a URL and its signing secret), the runs that name one, and the
delivery of each ended run to each webhook, with every attempt kept."""

import uuid

from django.conf import settings
from django.db import models


class Webhook(models.Model):
    """A URL Parley calls when a run ends, signed with `secret`.

    With `thread` set it is that thread's webhook (one per thread): every run of
    the thread that ends is delivered. Without, it is called only for runs that
    name it (`RunWebhook`: the OpenAI-compatible endpoint's
    `metadata.parley_webhook`, `POST /api/runs/{id}/webhook/`).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhooks"
    )
    thread = models.OneToOneField(
        "chat.Thread",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="webhook",
    )
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    # Shown once, when the webhook is created; the receiver keeps it.
    secret = models.CharField(max_length=100, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.url


class RunWebhook(models.Model):
    """A run that named a webhook: its end is delivered there."""

    run = models.ForeignKey(
        "agents.Run", on_delete=models.CASCADE, related_name="named_webhooks"
    )
    webhook = models.ForeignKey(
        Webhook, on_delete=models.CASCADE, related_name="run_links"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "webhook"], name="run_webhook_once")
        ]


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # waiting for its (next) attempt
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # every attempt failed, or the URL is no longer allowed


class WebhookEvent(models.TextChoices):
    RUN_COMPLETED = "run.completed"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"


class WebhookDelivery(models.Model):
    """One ended run for one webhook. `id` is the `X-Parley-Delivery` header:
    the same on every attempt and redelivery, so receivers can drop repeats.

    `body` is the exact JSON sent (the same bytes each attempt; only the
    signature's timestamp changes). A process takes a row by setting
    `locked_until` (webhooks/services.py, `delivery_claim_due`), so several
    workers never send it at once, and a row whose worker stopped mid-attempt
    is taken again once that lapses.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    webhook = models.ForeignKey(
        Webhook, on_delete=models.CASCADE, related_name="deliveries"
    )
    run = models.ForeignKey(
        "agents.Run",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="webhook_deliveries",
    )
    event = models.CharField(max_length=20, choices=WebhookEvent.choices)
    body = models.TextField()
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    # Attempts this delivery may still make (a redelivery grants a new set).
    attempts_left = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    locked_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error_code = models.CharField(max_length=40, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["webhook", "run"], name="webhook_delivery_once_per_run"
            )
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.event} -> {self.webhook_id} ({self.status})"


class WebhookAttempt(models.Model):
    """One try of a delivery: what the receiver answered, or what went wrong."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)
    # The start of the receiver's answer, for whoever debugs the receiver.
    response_excerpt = models.TextField(blank=True)

    class Meta:
        ordering = ["number"]

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300
