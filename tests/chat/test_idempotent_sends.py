"""A message sent again with the same `client_id` (a resend after a cut
connection) is the same message: one message, one run, over the socket and the
API, within a day (chat.services.MessageRequest)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone
from rest_framework.test import APIClient

from agents.models import Run
from chat.models import Message, Role
from chat.services import MessageRequest, messages_post

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_resend_over_a_new_socket_after_a_cut_is_the_same_message(
    thread, users, client_for
):
    client_id = str(uuid.uuid4())
    first = client_for(thread.id, users[Role.OWNER])
    await first.join()
    await first.send(
        {"type": "message", "content": "hello", "client_id": client_id,
         "request_id": "first"}
    )  # fmt: skip
    posted = await first.receive_type("message")
    await first.close()  # cut right after sending

    again = client_for(thread.id, users[Role.OWNER])
    await again.join()
    await again.send(
        {"type": "message", "content": "hello", "client_id": client_id,
         "request_id": "again"}
    )  # fmt: skip
    reply = await again.receive_until(
        lambda f: f["type"] == "message" and f["request_id"] == "again"
    )
    resent = reply[-1]

    assert resent["content"]["id"] == posted["content"]["id"]
    assert resent["run_id"] == posted["run_id"]
    assert resent["content"]["client_id"] == client_id
    assert resent["event_id"] is None  # a reply to this socket, not a new event
    stored = await sync_to_async(list)(
        Message.objects.filter(thread=thread, role="user").values_list("id", flat=True)
    )
    assert [str(pk) for pk in stored] == [posted["content"]["id"]]
    assert await Run.objects.filter(thread=thread).acount() == 1


def test_the_same_client_id_twice_in_one_batch_posts_once(thread, users):
    owner, client_id = users[Role.OWNER], uuid.uuid4()
    first, second = messages_post(
        requests=[
            MessageRequest(thread.pk, owner, "hi", "r1", client_id),
            MessageRequest(thread.pk, owner, "hi", "r2", client_id),
        ]
    )
    assert first.pk == second.pk
    assert (first.resent, second.resent) == (False, True)
    assert Message.objects.filter(thread=thread).count() == 1


def test_a_client_id_is_the_senders_own_in_its_thread_for_a_day(thread, users):
    client_id = uuid.uuid4()
    owner, participant = users[Role.OWNER], users[Role.PARTICIPANT]
    (mine,) = messages_post(
        requests=[MessageRequest(thread.pk, owner, "a", None, client_id)]
    )
    (theirs,) = messages_post(
        requests=[MessageRequest(thread.pk, participant, "b", None, client_id)]
    )
    assert theirs.pk != mine.pk and not theirs.resent  # another sender's

    Message.objects.filter(pk=mine.prompt.pk).update(
        created_at=timezone.now() - timedelta(hours=25)
    )
    Run.objects.filter(pk__in=[mine.pk, theirs.pk]).update(status="completed")
    (later,) = messages_post(
        requests=[MessageRequest(thread.pk, owner, "a", None, client_id)]
    )
    assert later.pk != mine.pk and not later.resent  # a day later: a new message


def test_the_api_returns_the_first_run_for_a_resend(thread, users):
    api = APIClient()
    api.force_authenticate(users[Role.OWNER])
    body = {"content": "hello", "client_id": str(uuid.uuid4())}
    url = f"/api/threads/{thread.id}/runs/"

    first = api.post(url, body, format="json")
    again = api.post(url, body, format="json")

    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]
    assert Message.objects.filter(thread=thread).count() == 1


async def test_a_client_id_that_is_not_a_uuid_is_an_invalid_frame(
    thread, users, client_for
):
    client = client_for(thread.id, users[Role.OWNER])
    await client.join()
    await client.send({"type": "message", "content": "hi", "client_id": "x"})
    error = await client.receive_type("error")
    assert error["content"]["code"] == "invalid_frame"
    assert "client_id" in error["content"]["message"]
