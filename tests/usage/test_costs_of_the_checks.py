"""What the budget checks cost: the admission check reads the budgets once per
batch of messages (and the month's usage only when a budget applies); the
worker's meter never touches the database and compares once per CHECK_EVERY
pieces of text."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agents.models import AgentConfig
from chat.models import Role
from usage.metering import CHECK_EVERY, UsageMeter
from usage.models import Budget
from usage.services import budget_admission

pytestmark = pytest.mark.django_db


def test_without_budgets_the_check_is_one_query(
    users, thread, django_assert_num_queries
):
    with django_assert_num_queries(1):
        budgets = budget_admission(
            user_ids=[user.pk for user in users.values()], thread_ids=[thread.pk]
        )
    assert budgets.require(user_id=users[Role.OWNER].pk, thread_id=thread.pk) is None


def test_with_budgets_it_adds_one_sum_per_kind(
    users, thread, record, django_assert_num_queries
):
    Budget.objects.create(user=users[Role.OWNER], monthly_tokens=100)
    Budget.objects.create(thread=thread, monthly_tokens=1000, hard=True)
    record(user=users[Role.OWNER], thread=thread, input_tokens=10, output_tokens=5)
    with django_assert_num_queries(3):
        budgets = budget_admission(
            user_ids=[users[Role.OWNER].pk, users[Role.PARTICIPANT].pk],
            thread_ids=[thread.pk],
        )
    with django_assert_num_queries(0):
        allowance = budgets.require(user_id=users[Role.OWNER].pk, thread_id=thread.pk)
    assert allowance == {"tokens": 985}


def priced(input_price="0", output_price="0") -> AgentConfig:
    """An agent config (unsaved) with these prices per million tokens."""
    return AgentConfig(
        name="priced",
        input_price_per_million=Decimal(input_price),
        output_price_per_million=Decimal(output_price),
    )


def test_the_meter_compares_once_per_check_every_pieces():
    meter = UsageMeter(agent=priced(), allowance={"tokens": 10}, prompt_chars=0)
    crossings = [meter.add("word ") for _ in range(CHECK_EVERY * 2)]
    # 11 tokens are past 10, but the meter only looks at every CHECK_EVERY-th.
    assert crossings.index(True) == 2 * CHECK_EVERY - 1
    assert meter.stopped_at[0] == 2 * CHECK_EVERY


def test_reported_usage_replaces_the_estimate_and_is_checked_at_once():
    meter = UsageMeter(agent=priced(), allowance={"tokens": 100}, prompt_chars=400)
    for _ in range(3):
        meter.add("x")
    assert meter.tokens() == (100, 3, True)  # 400 characters: ~100 tokens
    assert meter.report({"input_tokens": 20, "output_tokens": 3}) is False
    assert meter.tokens() == (20, 3, False)
    assert meter.report({"input_tokens": 90, "output_tokens": 20}) is True


def test_a_cost_allowance_is_checked_at_the_agents_prices():
    # 1 per million input, 1000 per million output: each output token 0.001.
    meter = UsageMeter(
        agent=priced("1", "1000"), allowance={"cost": "0.005"}, prompt_chars=0
    )
    assert not any(meter.add("w") for _ in range(CHECK_EVERY - 1))
    assert meter.add("w")  # 8 tokens: 0.008 > 0.005


def test_without_an_allowance_the_meter_only_counts():
    meter = UsageMeter(agent=priced(), allowance=None, prompt_chars=8)
    assert not any(meter.add("w") for _ in range(10_000))
    assert meter.tokens() == (2, 10_000, True)
