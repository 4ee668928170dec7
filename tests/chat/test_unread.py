"""Unread per user, on the server: a read mark set on one device is what every
other device of that user sees, in the API's thread list and the web page's."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client as WebClient
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from chat import services
from chat.models import Message, MessageRole, Role, Thread, ThreadReadMark

pytestmark = pytest.mark.django_db


def token_device(user) -> APIClient:
    """A program using the user's API token (one device)."""
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def browser_device(user) -> WebClient:
    """A browser logged in with a session (another device)."""
    client = WebClient()
    client.force_login(user)
    return client


def say(thread: Thread, author, text: str = "hello") -> Message:
    return Message.objects.create(
        thread=thread, author=author, role=MessageRole.USER, text=text
    )


def api_unread(client, thread) -> bool:
    response = client.get("/api/threads/")
    assert response.status_code == 200, response.content
    [found] = [row for row in response.json()["results"] if row["id"] == str(thread.id)]
    return found["unread"]


def page_unread(client, thread) -> bool:
    threads = client.get(reverse("thread-list-json")).json()["threads"]
    [found] = [row for row in threads if row["id"] == str(thread.id)]
    return found["unread"]


def test_read_on_one_device_is_seen_on_another(users, thread):
    owner = users[Role.OWNER]
    phone, laptop = token_device(owner), browser_device(owner)
    assert phone.post(f"/api/threads/{thread.id}/read/").status_code == 200

    say(thread, users[Role.PARTICIPANT], "are you there?")
    assert api_unread(phone, thread) is True
    assert page_unread(laptop, thread) is True

    # Reading it on the phone clears it on the laptop too.
    answer = phone.post(f"/api/threads/{thread.id}/read/")
    assert answer.status_code == 200
    assert answer.json()["thread"] == str(thread.id)
    assert answer.json()["unread"] is False
    assert page_unread(laptop, thread) is False
    assert api_unread(phone, thread) is False


def test_opening_the_chat_page_reads_the_thread_everywhere(users, thread):
    participant = users[Role.PARTICIPANT]
    laptop, phone = browser_device(participant), token_device(participant)
    say(thread, users[Role.OWNER], "news")
    assert api_unread(phone, thread) is True

    page = laptop.get(reverse("thread-detail", args=[thread.id]))
    assert page.status_code == 200
    assert api_unread(phone, thread) is False
    assert page_unread(laptop, thread) is False


def test_ones_own_messages_do_not_make_a_thread_unread(users, thread):
    owner = users[Role.OWNER]
    services.thread_mark_read(user=owner, thread=thread)
    say(thread, owner, "note to self")
    assert api_unread(token_device(owner), thread) is False


def test_an_agents_reply_makes_the_thread_unread(users, thread, echo_agent):
    owner = users[Role.OWNER]
    services.thread_mark_read(user=owner, thread=thread)
    Message.objects.create(
        thread=thread, agent=echo_agent, role=MessageRole.ASSISTANT, text="done"
    )
    assert api_unread(token_device(owner), thread) is True


def test_each_user_has_their_own_mark(users, thread):
    owner, observer = users[Role.OWNER], users[Role.OBSERVER]
    say(thread, users[Role.PARTICIPANT])
    services.thread_mark_read(user=owner, thread=thread)
    assert api_unread(token_device(owner), thread) is False
    assert api_unread(token_device(observer), thread) is True


def test_a_thread_shared_with_you_is_new_until_you_open_it(users, thread):
    observer = users[Role.OBSERVER]
    assert api_unread(token_device(observer), thread) is True  # no message yet
    token_device(observer).post(f"/api/threads/{thread.id}/read/")
    assert api_unread(token_device(observer), thread) is False


def test_a_new_thread_of_ones_own_is_not_unread(users, echo_agent):
    owner = users[Role.OWNER]
    created = token_device(owner).post(
        "/api/threads/", {"agent": "echo", "title": "mine"}, format="json"
    )
    assert created.status_code == 201
    assert created.json()["unread"] is False
    assert created.json()["last_read_at"] is None
    thread = Thread.objects.get(pk=created.json()["id"])
    say(thread, owner)
    assert api_unread(token_device(owner), thread) is False


def test_staff_browsing_a_thread_they_are_no_member_of_see_it_read(users, thread):
    say(thread, users[Role.PARTICIPANT])
    assert api_unread(token_device(users[Role.STAFF]), thread) is False


def test_the_mark_never_moves_back(users, thread):
    owner = users[Role.OWNER]
    now = timezone.now()
    services.thread_mark_read(user=owner, thread=thread, at=now)
    late = services.thread_mark_read(
        user=owner, thread=thread, at=now - timedelta(minutes=5)
    )
    assert late.last_read_at == now
    assert ThreadReadMark.objects.get(user=owner, thread=thread).last_read_at == now


def test_only_messages_after_the_mark_count(users, thread):
    owner = users[Role.OWNER]
    message = say(thread, users[Role.PARTICIPANT])
    services.thread_mark_read(
        user=owner, thread=thread, at=message.created_at + timedelta(seconds=1)
    )
    assert api_unread(token_device(owner), thread) is False
    services.thread_mark_read(user=owner, thread=thread)
    later = say(thread, users[Role.PARTICIPANT], "later")
    Message.objects.filter(pk=later.pk).update(
        created_at=timezone.now() + timedelta(seconds=1)
    )
    assert api_unread(token_device(owner), thread) is True


def test_one_thread_answers_with_its_read_state(users, thread):
    owner = users[Role.OWNER]
    device = token_device(owner)
    say(thread, users[Role.PARTICIPANT])
    detail = device.get(f"/api/threads/{thread.id}/").json()
    assert detail["unread"] is True
    assert detail["last_read_at"] is None
    device.post(f"/api/threads/{thread.id}/read/")
    detail = device.get(f"/api/threads/{thread.id}/").json()
    assert detail["unread"] is False
    assert detail["last_read_at"] is not None


def test_a_stranger_cannot_mark_a_thread_read(users, thread):
    response = token_device(users["stranger"]).post(f"/api/threads/{thread.id}/read/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "thread_not_found"
    assert not ThreadReadMark.objects.filter(user=users["stranger"]).exists()


def test_the_list_shows_an_agent_reply_in_progress(users, thread, echo_agent):
    from agents.models import Run, RunStatus

    device = token_device(users[Role.OWNER])
    [row] = device.get("/api/threads/").json()["results"]
    assert row["running"] is False
    Run.objects.create(thread=thread, agent=echo_agent, status=RunStatus.RUNNING)
    [row] = device.get("/api/threads/").json()["results"]
    assert row["running"] is True
    [summary] = (
        browser_device(users[Role.OWNER])
        .get(reverse("thread-list-json"))
        .json()["threads"]
    )
    assert summary["running"] is True


def test_the_chat_pages_read_call_marks_the_thread_for_every_device(users, thread):
    participant = users[Role.PARTICIPANT]
    say(thread, users[Role.OWNER])
    laptop = browser_device(participant)
    answer = laptop.post(reverse("thread-read-mark", args=[thread.id]))
    assert answer.status_code == 200
    assert answer.json()["read"] is True
    assert api_unread(token_device(participant), thread) is False


def test_the_pages_read_call_marks_nothing_for_those_who_cannot_read(
    users, thread, client
):
    url = reverse("thread-read-mark", args=[thread.id])
    assert client.post(url).status_code == 302  # to the login page
    stranger = browser_device(users["stranger"])
    assert stranger.post(url).json() == {"read": False}
    missing = reverse("thread-read-mark", args=["not-a-thread"])
    assert stranger.post(missing).json() == {"read": False}
    assert not ThreadReadMark.objects.filter(user=users["stranger"]).exists()
    # A GET is no read.
    assert browser_device(users[Role.OBSERVER]).get(url).status_code == 405
