"""Writes of the usage app: charging a finished run to the person who asked,
the budget check of a batch of messages before their runs exist, and budgets
set by staff.

Where they run and what they cost:
- `budget_admission` runs once per batch of messages in chat.services'
  admission transaction: one query for the budgets that apply (users' own,
  threads'), and only when some apply one aggregate per kind over this
  month's usage records (indexed by user and by thread, then time). No budget
  and no default: one query on a small table.
- `run_finish_and_charge` is the worker's finish (agents.services.run_finish)
  plus one INSERT of the run's UsageRecord, in the same transaction.
- The hard-budget stop mid-reply is usage/metering.py: no database at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import transaction

from agents.models import Run
from agents.validation import effective_config
from realtime.errors import ErrorCode, ServiceError
from usage.metering import UsageMeter, run_cost
from usage.models import Budget, UsageRecord
from usage.selectors import (
    Limit,
    Spent,
    budget_limits,
    limit_details,
    month_spent,
    period_of,
)

logger = logging.getLogger(__name__)

COST_PLACES = Decimal("0.0000000001")  # UsageRecord.cost's decimal places


# --- before a run: the budget check ---------------------------------------------


@dataclass
class BudgetAdmission:
    """The budgets of one batch of messages and what was spent of them this
    month, read once; `require` answers for each message without a query."""

    user_limits: dict = field(default_factory=dict)
    thread_limits: dict = field(default_factory=dict)
    user_spent: dict = field(default_factory=dict)
    thread_spent: dict = field(default_factory=dict)
    period: str = ""

    def require(self, *, user_id, thread_id) -> dict | None:
        """Refuse (`budget_exceeded`, status 402) a run asked by `user_id` in
        `thread_id` when a budget of the user or of the thread is used up.
        Otherwise what its hard budgets leave (the run's `budget_allowance`:
        {"tokens": n, "cost": "x"}, the smaller of user's and thread's), or
        None when no hard budget applies."""
        thread_id = str(thread_id)
        checks = [
            (limit, self.user_spent.get(user_id, Spent()))
            for limit in self.user_limits.get(user_id, ())
        ] + [
            (limit, self.thread_spent.get(thread_id, Spent()))
            for limit in self.thread_limits.get(thread_id, ())
        ]
        allowance: dict = {}
        for limit, spent in checks:
            used = spent.of(limit.unit)
            if used >= limit.limit:
                raise budget_exceeded(limit, used, self.period)
            if limit.hard:
                left = limit.limit - used
                if limit.unit in allowance:
                    left = min(left, allowance[limit.unit])
                allowance[limit.unit] = left
        if not allowance:
            return None
        if "cost" in allowance:
            allowance["cost"] = str(allowance["cost"])
        return allowance


def budget_exceeded(limit: Limit, used, period: str) -> ServiceError:
    """The refusal of a run whose requester (or thread) used its budget up."""
    details = limit_details(limit, used, period)
    whose = "You have" if limit.scope == "user" else "This thread has"
    unit = "tokens" if limit.unit == "tokens" else "in cost"
    return ServiceError(
        ErrorCode.BUDGET_EXCEEDED,
        f"{whose} used {details['used']} of {details['limit']} {unit} this month "
        f"({period}); new replies wait for next month or a higher budget.",
        status=402,
        details=details,
    )


def budget_admission(
    *, user_ids, thread_ids, now: datetime | None = None
) -> BudgetAdmission:
    """Read the budgets of a batch of messages (users, threads) and this
    month's spend of those that have one."""
    user_limits, thread_limits = budget_limits(
        user_ids=list(user_ids), thread_ids=[str(pk) for pk in thread_ids]
    )
    if not user_limits and not thread_limits:
        return BudgetAdmission()
    user_spent, thread_spent = month_spent(
        user_ids=list(user_limits), thread_ids=list(thread_limits), now=now
    )
    return BudgetAdmission(
        user_limits=user_limits,
        thread_limits=thread_limits,
        user_spent=user_spent,
        thread_spent=thread_spent,
        period=period_of(now),
    )


# --- when a run ends: charging it -------------------------------------------------


def usage_charge(*, run: Run, status: str, meter: UsageMeter) -> UsageRecord:
    """Record what `run` spent, charged to its requester (the person who sent
    the message, in shared threads too), at its agent's prices. The counts are
    the provider's, or the meter's estimate where it reported none."""
    input_tokens, output_tokens, estimated = meter.tokens()
    agent = run.agent
    username = ""
    if run.requested_by_id is not None:
        username = (
            get_user_model()
            .objects.filter(pk=run.requested_by_id)
            .values_list("username", flat=True)
            .first()
            or ""
        )
    return UsageRecord.objects.create(
        run_id=run.pk,
        user_id=run.requested_by_id if username else None,
        username=username,
        thread_id=run.thread_id,
        agent_id=agent.pk,
        agent_name=agent.name,
        agent_version=agent.version,
        model=effective_config(agent, run.thread.config or {})["model"],
        status=str(status),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        estimated=estimated,
        cost=run_cost(
            agent, input_tokens=input_tokens, output_tokens=output_tokens
        ).quantize(COST_PLACES),
    )


def run_finish_and_charge(*, run: Run, meter: UsageMeter, **finish) -> Run | None:
    """agents.services.run_finish (same arguments) plus, in its transaction,
    the run's UsageRecord and its agent version stamp (the version the worker
    ran, when the config changed after the message was admitted). Should the
    charge fail, the run still finishes (logged)."""
    from agents.services import run_finish

    with transaction.atomic():
        ended = run_finish(run_id=str(run.pk), **finish)
        if ended is None:
            return None
        try:
            with transaction.atomic():
                usage_charge(run=run, status=finish["status"], meter=meter)
                if run.agent_version != run.agent.version:
                    Run.objects.filter(pk=run.pk).update(
                        agent_version=run.agent.version
                    )
        except Exception:
            logger.exception("could not record the usage of run %s", run.pk)
    return ended


# --- budgets, set by staff -----------------------------------------------------------


def budget_set(
    *,
    user=None,
    thread=None,
    monthly_tokens: int | None = None,
    monthly_cost: Decimal | None = None,
    hard: bool = False,
) -> tuple[Budget, bool]:
    """Create or replace the budget of a user or of a thread: (budget, created)."""
    from usage.validation import budget_errors

    errors = budget_errors(
        user_id=getattr(user, "pk", None),
        thread_id=getattr(thread, "pk", None),
        monthly_tokens=monthly_tokens,
        monthly_cost=monthly_cost,
    )
    if errors:
        raise ServiceError(
            ErrorCode.VALIDATION_ERROR,
            "; ".join(f"{name}: {problem}" for name, problem in errors.items()),
            details=errors,
        )
    lookup = {"user": user} if user is not None else {"thread": thread}
    return Budget.objects.update_or_create(
        **lookup,
        defaults={
            "monthly_tokens": monthly_tokens,
            "monthly_cost": monthly_cost,
            "hard": hard,
        },
    )


def budget_delete(*, budget: Budget) -> None:
    budget.delete()
