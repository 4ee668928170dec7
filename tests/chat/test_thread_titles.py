"""An untitled thread takes a title from its first message (chat/services.py),
and open pages hear of it as `thread_updated`."""

from __future__ import annotations

import json

import pytest

from chat import services
from chat.models import Role, Thread
from chat.services import TITLE_FROM_MESSAGE_CHARS, thread_title_from_text
from realtime.eventlog import get_event_log
from realtime.events import call_service
from realtime.protocol import parse_server_frame

pytestmark = pytest.mark.django_db(transaction=True)


def untitled_thread(owner) -> Thread:
    return services.thread_create(owner=owner, agent_name="echo")


def test_an_untitled_thread_is_named_after_its_first_message(users, echo_agent):
    owner = users[Role.OWNER]
    thread = untitled_thread(owner)
    services.message_post(
        thread=thread, user=owner, text="  How do I   reverse a list\nin Python?  "
    )
    thread.refresh_from_db()
    assert thread.title == "How do I reverse a list in Python?"
    assert thread.display_title == "How do I reverse a list in Python?"


def test_later_messages_leave_the_title_alone(users, echo_agent):
    owner = users[Role.OWNER]
    thread = untitled_thread(owner)
    services.message_post(thread=thread, user=owner, text="first question")
    services.message_post(thread=thread, user=owner, text="second question")
    thread.refresh_from_db()
    assert thread.title == "first question"


def test_a_titled_thread_keeps_its_title(thread, users):
    services.message_post(thread=thread, user=users[Role.OWNER], text="hello there")
    thread.refresh_from_db()
    assert thread.title == "t"


def test_a_thread_renamed_to_nothing_stays_untitled(thread, users):
    owner = users[Role.OWNER]
    services.message_post(thread=thread, user=owner, text="hello")
    services.thread_update(actor=owner, thread=thread, title="")
    services.message_post(thread=thread, user=owner, text="not a title")
    thread.refresh_from_db()
    assert thread.title == ""
    assert thread.display_title == "Chat with echo"


def test_leading_mentions_are_left_out_of_the_title(users, echo_agent):
    owner = users[Role.OWNER]
    thread = untitled_thread(owner)
    services.message_post(thread=thread, user=owner, text="@echo what is 2 + 2?")
    thread.refresh_from_db()
    assert thread.title == "what is 2 + 2?"


def test_a_long_first_message_is_cut_at_a_word():
    text = "Please summarise " + " ".join(f"paragraph{n}" for n in range(40))
    title = thread_title_from_text(text)
    assert len(title) <= TITLE_FROM_MESSAGE_CHARS
    assert title.endswith("…")
    words = title[:-1].split()
    assert text.startswith(" ".join(words))
    assert all(word in text.split() for word in words)


def test_a_short_message_is_its_own_title():
    assert thread_title_from_text("hi") == "hi"


async def test_open_pages_hear_the_new_title(users, echo_agent):
    owner = users[Role.OWNER]
    thread = await call_service(services.thread_create, owner=owner, agent_name="echo")
    await call_service(
        services.message_post, thread=thread, user=owner, text="name me please"
    )
    events = await get_event_log().read_after(str(thread.pk), 0)
    frames = []
    for event in events or []:
        parse_server_frame(event.text)  # every frame keeps to the protocol
        frames.append(json.loads(event.text))
    updates = [
        frame["content"]
        for frame in frames
        if frame["type"] == "status" and frame["content"]["state"] == "thread_updated"
    ]
    assert [update["title"] for update in updates] == ["name me please"]
    assert updates[0]["agent"] == "echo"
