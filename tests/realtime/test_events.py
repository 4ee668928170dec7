"""realtime/events.py: services called from async code, and what they leave behind."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from chat.models import Thread
from realtime.events import call_service

pytestmark = pytest.mark.django_db(transaction=True)


def leaves_an_atomic_block_open(*, thread_id) -> bool:
    """A buggy service: enters a transaction, locks a row, never leaves."""
    transaction.atomic().__enter__()
    list(Thread.objects.select_for_update().filter(pk=thread_id))
    return connection.in_atomic_block


def in_atomic_block() -> bool:
    return connection.in_atomic_block


async def test_a_service_thread_is_never_handed_back_inside_a_transaction(
    thread, settings, caplog
):
    settings.PARLEY_SERVICE_THREADS = 1  # the same thread serves both calls
    assert await call_service(leaves_an_atomic_block_open, thread_id=thread.pk)
    assert "leaves_an_atomic_block_open left its database connection" in caplog.text
    assert not await call_service(in_atomic_block)
    # Its row lock is gone with it: another connection may lock the row at once.
    await call_service(_lock_from_another_connection, thread_id=thread.pk)


def _lock_from_another_connection(*, thread_id) -> None:
    import threading

    from django.db import connections

    failures = []

    def lock():
        try:
            with transaction.atomic():
                with connections["default"].cursor() as cursor:
                    if connections["default"].vendor == "postgresql":
                        cursor.execute("SET LOCAL lock_timeout = '2s'")
                list(Thread.objects.select_for_update().filter(pk=thread_id))
                Thread.objects.filter(pk=thread_id).update(title="locked")
        except Exception as error:  # pragma: no cover - the failure we test for
            failures.append(error)
        finally:
            connections["default"].close()

    other = threading.Thread(target=lock)
    other.start()
    other.join(timeout=10)
    assert not other.is_alive() and not failures, failures
