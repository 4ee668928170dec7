"""UsageRecord (one per finished run: tokens, cost, who asked) and Budget
(a monthly limit per user or per thread).

A record keeps ids and names, not foreign keys to the run or the thread:
resetting or deleting a thread deletes its runs, and must not give anyone
their month's budget back. Only the user is a foreign key (set to null when
the user is deleted; the username stays).
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone


class UsageRecord(models.Model):
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    run_id = models.UUIDField(unique=True)
    # The person who asked (the run's requester), not the thread's owner.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="usage_records",
    )
    username = models.CharField(max_length=150, blank=True)
    thread_id = models.UUIDField(db_index=True)
    agent_id = models.BigIntegerField(null=True, blank=True)
    agent_name = models.CharField(max_length=64, db_index=True)
    agent_version = models.PositiveIntegerField(null=True, blank=True)
    model = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=10)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    # The provider reported no usage (a reply stopped early): the counts are
    # the worker's estimate (usage/metering.py).
    estimated = models.BooleanField(default=False)
    cost = models.DecimalField(max_digits=20, decimal_places=10, default=Decimal(0))

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["user", "created_at"]),
            models.Index(fields=["thread_id", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.username or '-'} {self.agent_name} {self.total_tokens} tokens"

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Budget(models.Model):
    """A monthly limit (calendar month, UTC) of one user's runs or of one
    thread's, in tokens, in cost, or both (over either is over). A hard budget
    also stops a reply that crosses it; any budget refuses new runs once used
    up."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="usage_budget",
    )
    thread = models.OneToOneField(
        "chat.Thread",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="usage_budget",
    )
    monthly_tokens = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Tokens (input + output) a month; empty = no limit.",
    )
    monthly_cost = models.DecimalField(
        max_digits=16,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="Cost a month (the agents' prices); empty = no limit.",
    )
    hard = models.BooleanField(
        default=False,
        help_text="Also stop a reply in progress once it crosses the limit.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(user__isnull=False, thread__isnull=True)
                    | models.Q(user__isnull=True, thread__isnull=False)
                ),
                name="budget_for_a_user_or_a_thread",
            )
        ]

    def __str__(self) -> str:
        return f"budget of {self.scope} {self.subject}"

    @property
    def scope(self) -> str:
        return "user" if self.user_id else "thread"

    @property
    def subject(self) -> str:
        return str(self.user if self.user_id else self.thread_id)

    def clean(self) -> None:
        from usage.validation import budget_errors

        errors = budget_errors(
            user_id=self.user_id,
            thread_id=self.thread_id,
            monthly_tokens=self.monthly_tokens,
            monthly_cost=self.monthly_cost,
        )
        if errors:
            raise ValidationError(errors)
