"""Validation of budgets, shared by the admin (Budget.clean) and the API."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

MAX_MONTHLY_TOKENS = 10**15
MAX_MONTHLY_COST = Decimal("9999999999.999999")  # Budget.monthly_cost's digits


def _is_whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_cost(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        cost = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return cost if cost.is_finite() else None


def budget_errors(
    *, user_id, thread_id, monthly_tokens: Any, monthly_cost: Any
) -> dict[str, str]:
    """Field -> problem: a budget is for one user or one thread, and limits
    tokens, cost or both, each a number >= 0."""
    errors: dict[str, str] = {}
    if (user_id is None) == (thread_id is None):
        errors["user"] = "A budget is for one user or for one thread (not both)."
    if monthly_tokens is None and monthly_cost is None:
        errors["monthly_tokens"] = "Give a monthly token limit, a cost limit or both."
    if monthly_tokens is not None and (
        not _is_whole_number(monthly_tokens)
        or not 0 <= monthly_tokens <= MAX_MONTHLY_TOKENS
    ):
        errors["monthly_tokens"] = "A whole number of tokens >= 0."
    if monthly_cost is not None:
        cost = _as_cost(monthly_cost)
        if cost is None or not Decimal(0) <= cost <= MAX_MONTHLY_COST:
            errors["monthly_cost"] = "A cost: a number >= 0."
    return errors
