"""Past a bound of messages waiting to be stored (a burst), the sender hears at
once that its message is queued, and where, instead of silence; nothing is
refused for it."""

from __future__ import annotations

import threading

import pytest
from channels.db import database_sync_to_async

from chat import services
from chat.admission import message_admission
from chat.models import Message, Role
from realtime.batches import ServiceBatches
from tests.eventually import eventually

pytestmark = pytest.mark.django_db(transaction=True)


def test_ahead_counts_waiting_and_in_flight_items():
    batches = ServiceBatches(lambda *, items: items, concurrency=1)
    assert batches.ahead() == 0
    batches.waiting = [(object(), None)] * 3
    batches.in_flight_items = 2
    assert batches.ahead() == 5


@pytest.fixture
def held_admission(monkeypatch):
    """Message batches wait at a gate before they are stored."""
    gate = threading.Event()
    real = services.messages_post

    def held(*, requests):
        gate.wait(10)
        return real(requests=requests)

    monkeypatch.setattr(services, "messages_post", held)
    yield gate
    gate.set()


async def test_a_message_behind_the_bound_hears_queued_with_its_place_at_once(
    settings, thread, users, client_for, held_admission
):
    settings.PARLEY_QUEUED_NOTICE_AFTER = 2
    settings.PARLEY_MAX_ACTIVE_RUNS_PER_USER = 0
    settings.PARLEY_SERVICE_THREADS = 1
    # Three sockets (a socket's messages are read one after another).
    sockets = [client_for(thread.id, users[Role.OWNER]) for _ in range(3)]
    for socket in sockets:
        await socket.join()

    for n, socket in enumerate(sockets):
        await socket.send(
            {"type": "message", "content": f"m{n}", "request_id": f"r{n}"}
        )
        if n < 2:  # each on its way before the next is sent
            await eventually(lambda n=n: message_admission().ahead() == n + 1)
    # Two are ahead of the third (one being stored, one waiting): it hears so
    # while the database still holds the first batch.
    queued = await sockets[2].receive(timeout=2)
    assert queued["type"] == "status" and queued["request_id"] == "r2"
    assert queued["content"] == {"state": "queued", "position": 2}
    assert queued["run_id"] is None and queued.get("event_id") is None  # no event

    held_admission.set()
    stored = [await sockets[2].receive_type("message") for _ in range(3)]
    assert [frame["request_id"] for frame in stored] == ["r0", "r1", "r2"]
    # The first two heard nothing but their messages.
    for socket in sockets[:2]:
        assert (await socket.receive())["type"] == "message"
    texts = await database_sync_to_async(
        lambda: list(
            Message.objects.filter(thread=thread, role="user")
            .order_by("created_at")
            .values_list("text", flat=True)
        )
    )()
    assert texts == ["m0", "m1", "m2"]


async def test_below_the_bound_nothing_extra_is_sent(
    settings, thread, users, client_for
):
    settings.PARLEY_QUEUED_NOTICE_AFTER = 50
    owner = client_for(thread.id, users[Role.OWNER])
    await owner.join()
    await owner.send({"type": "message", "content": "hello", "request_id": "r"})
    first = await owner.receive()
    assert first["type"] == "message" and first["request_id"] == "r"
