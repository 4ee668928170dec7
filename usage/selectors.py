"""Reads of usage and budgets: totals with filters and groups, the month's
spend of users and threads, what budgets apply, the admin's 30-day chart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from usage.models import Budget, UsageRecord

GROUPS = ("day", "user", "thread", "agent")
UNITS = ("tokens", "cost")


def month_start(now: datetime | None = None) -> datetime:
    """The start of the calendar month (UTC) that `now` is in."""
    now = (now or timezone.now()).astimezone(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def period_of(now: datetime | None = None) -> str:
    """The month as budgets name it: "2026-12"."""
    return month_start(now).strftime("%Y-%m")


def _totals() -> dict:
    return {
        "runs": Count("id"),
        "input_tokens": Coalesce(Sum("input_tokens"), 0),
        "output_tokens": Coalesce(Sum("output_tokens"), 0),
        "cost": Coalesce(Sum("cost"), Decimal(0)),
    }


def _plain(row: dict) -> dict:
    """A totals row for clients: total tokens added, cost as a decimal string."""
    row = dict(row)
    row["total_tokens"] = row["input_tokens"] + row["output_tokens"]
    row["cost"] = _cost_text(row["cost"])
    return row


def _cost_text(cost) -> str:
    cost = Decimal(cost or 0).quantize(Decimal("0.000001"))
    return format(cost.normalize() if cost else Decimal(0), "f")


def usage_records(
    *,
    user=None,
    username: str | None = None,
    thread_id=None,
    agent: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
) -> QuerySet[UsageRecord]:
    """Records filtered by the user (object or username), thread, agent name
    and days [date_from, date_to] (UTC, both included)."""
    records = UsageRecord.objects.all()
    if user is not None:
        records = records.filter(user=user)
    if username:
        records = records.filter(username=username)
    if thread_id:
        records = records.filter(thread_id=thread_id)
    if agent:
        records = records.filter(agent_name=agent)
    if date_from:
        records = records.filter(
            created_at__gte=datetime.combine(date_from, datetime.min.time(), UTC)
        )
    if date_to and date_to < date.max:  # date.max: no end
        records = records.filter(
            created_at__lt=datetime.combine(
                date_to + timedelta(days=1), datetime.min.time(), UTC
            )
        )
    return records


def usage_summary(*, records: QuerySet[UsageRecord], group_by: str | None) -> dict:
    """{"totals": {...}, "groups": [{"key": ..., totals...}]} of `records`;
    groups (oldest day first, else the biggest spender first) only when
    `group_by` is one of GROUPS."""
    summary = {"totals": _plain(records.aggregate(**_totals())), "groups": []}
    if group_by is None:
        return summary
    key = {
        "day": TruncDate("created_at", tzinfo=UTC),
        "user": F("username"),
        "thread": F("thread_id"),
        "agent": F("agent_name"),
    }[group_by]
    rows = (
        records.order_by()
        .annotate(key=key)
        .values("key")
        .annotate(**_totals())
        .order_by("key" if group_by == "day" else "-cost", "key")
    )
    summary["groups"] = [
        {**_plain(row), "key": str(row["key"]) if row["key"] is not None else None}
        for row in rows
    ]
    return summary


def usage_by_day(*, days: int = 30, now: datetime | None = None) -> list[dict]:
    """The last `days` days (UTC, today included), each with its totals, days
    without runs too (zeros): the admin's chart."""
    today = (now or timezone.now()).astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    found = {
        row["key"]: row
        for row in usage_summary(
            records=usage_records(date_from=first, date_to=today), group_by="day"
        )["groups"]
    }
    empty = {"runs": 0, "input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    return [
        found.get(str(day), {**empty, "cost": "0", "key": str(day)})
        for day in (first + timedelta(days=offset) for offset in range(days))
    ]


# --- budgets ------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """One monthly limit that applies to a run: whose (`scope` user or
    thread), in what unit, how much, whether it stops replies."""

    scope: str  # "user" or "thread"
    unit: str  # "tokens" or "cost"
    limit: int | Decimal
    hard: bool
    default: bool = False  # from the deployment's default, not a Budget row


def _limits_of(
    *, scope: str, tokens, cost, hard: bool, default: bool = False
) -> list[Limit]:
    limits = []
    if tokens is not None:
        limits.append(Limit(scope, "tokens", int(tokens), hard, default))
    if cost is not None:
        limits.append(Limit(scope, "cost", Decimal(cost), hard, default))
    return limits


def default_user_limits() -> list[Limit]:
    """The budget of users without one of their own (settings; 0 = none)."""
    tokens = settings.PARLEY_DEFAULT_MONTHLY_TOKEN_BUDGET or None
    cost = settings.PARLEY_DEFAULT_MONTHLY_COST_BUDGET or None
    return _limits_of(
        scope="user",
        tokens=tokens,
        cost=cost,
        hard=settings.PARLEY_DEFAULT_BUDGET_HARD,
        default=True,
    )


def budget_limits(
    *, user_ids: list, thread_ids: list
) -> tuple[dict[object, list[Limit]], dict[str, list[Limit]]]:
    """The limits that apply to each user (their Budget, else the default)
    and to each thread (its Budget, if any): one query."""
    by_user: dict[object, list[Limit]] = {}
    by_thread: dict[str, list[Limit]] = {}
    if user_ids or thread_ids:
        for budget in Budget.objects.filter(
            Q(user_id__in=user_ids) | Q(thread_id__in=thread_ids)
        ):
            limits = _limits_of(
                scope=budget.scope,
                tokens=budget.monthly_tokens,
                cost=budget.monthly_cost,
                hard=budget.hard,
            )
            if budget.user_id is not None:
                by_user[budget.user_id] = limits
            else:
                by_thread[str(budget.thread_id)] = limits
    default = default_user_limits()
    if default:
        for user_id in user_ids:
            by_user.setdefault(user_id, default)
    return by_user, by_thread


@dataclass(frozen=True)
class Spent:
    tokens: int = 0
    cost: Decimal = Decimal(0)

    def of(self, unit: str) -> int | Decimal:
        return self.tokens if unit == "tokens" else self.cost


def month_spent(
    *, user_ids: list, thread_ids: list, now: datetime | None = None
) -> tuple[dict[object, Spent], dict[str, Spent]]:
    """What each user and each thread spent this calendar month: one query
    per kind asked for (none for an empty list)."""
    since = month_start(now)
    totals = {
        "tokens": Coalesce(Sum(F("input_tokens") + F("output_tokens")), 0),
        "cost": Coalesce(Sum("cost"), Decimal(0)),
    }
    by_user: dict[object, Spent] = {}
    by_thread: dict[str, Spent] = {}
    if user_ids:
        for row in (
            UsageRecord.objects.filter(user_id__in=user_ids, created_at__gte=since)
            .order_by()
            .values("user_id")
            .annotate(**totals)
        ):
            by_user[row["user_id"]] = Spent(row["tokens"], Decimal(row["cost"]))
    if thread_ids:
        for row in (
            UsageRecord.objects.filter(thread_id__in=thread_ids, created_at__gte=since)
            .order_by()
            .values("thread_id")
            .annotate(**totals)
        ):
            by_thread[str(row["thread_id"])] = Spent(
                row["tokens"], Decimal(row["cost"])
            )
    return by_user, by_thread


def budget_status(*, user, thread=None, now: datetime | None = None) -> list[dict]:
    """The limits that apply to `user`'s runs (in `thread`, when given) with
    what was used of each this month: what the web UI's "used X of Y this
    month" and `GET /api/usage/budget/` show. [] = unlimited."""
    thread_ids = [str(thread.pk)] if thread is not None else []
    user_limits, thread_limits = budget_limits(
        user_ids=[user.pk], thread_ids=thread_ids
    )
    limits = user_limits.get(user.pk, []) + (
        thread_limits.get(thread_ids[0], []) if thread_ids else []
    )
    if not limits:
        return []
    spent_by_user, spent_by_thread = month_spent(
        user_ids=[user.pk] if user_limits else [],
        thread_ids=thread_ids if thread_limits else [],
        now=now,
    )
    period = period_of(now)
    status = []
    for limit in limits:
        spent = (
            spent_by_user.get(user.pk, Spent())
            if limit.scope == "user"
            else spent_by_thread.get(thread_ids[0], Spent())
        )
        status.append(limit_details(limit, spent.of(limit.unit), period))
    return status


def limit_details(limit: Limit, used, period: str) -> dict:
    """A limit and what was used of it, as clients see it (`budget_exceeded`'s
    details, the budget status)."""
    plain = (lambda value: int(value)) if limit.unit == "tokens" else _cost_text
    return {
        "scope": limit.scope,
        "unit": limit.unit,
        "used": plain(used),
        "limit": plain(limit.limit),
        "period": period,
        "hard": limit.hard,
        "default": limit.default,
    }


def budget_list() -> QuerySet[Budget]:
    """Every budget, users' first (staff's list)."""
    return Budget.objects.select_related("user", "thread").order_by(
        "thread_id", "user__username", "pk"
    )
