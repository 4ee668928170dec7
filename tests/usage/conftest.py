"""Fixtures of the usage tests: API clients and usage records made directly."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from usage.models import UsageRecord


@pytest.fixture
def api_for():
    def make(user) -> APIClient:
        client = APIClient()
        client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def record(db):
    """A usage record as a finished run leaves it (defaults: 1 run, now)."""

    def make(
        *,
        user,
        thread,
        input_tokens: int = 10,
        output_tokens: int = 20,
        cost: str = "0",
        agent: str = "echo",
        created_at=None,
    ) -> UsageRecord:
        return UsageRecord.objects.create(
            run_id=uuid.uuid4(),
            user=user,
            username=user.username if user else "",
            thread_id=thread.pk,
            agent_name=agent,
            status="completed",
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=Decimal(cost),
            created_at=created_at or timezone.now(),
        )

    return make
