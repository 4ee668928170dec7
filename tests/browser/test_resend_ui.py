"""A message sent just before the connection drops is not lost and not doubled:
the page sends it again after reconnecting with the same `client_id`, and the
server posts it at most once."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_chat_ui import create_thread, reply, send, wait_connected

pytestmark = pytest.mark.browser


def relay(page, *, drop_from_page=None, drop_from_server=None):
    """Route the page's thread sockets through the test: the first frame that
    `drop_from_page` (or `drop_from_server`) matches is lost, and the page's
    socket is cut right after it, as a network blip would."""
    lost: list[str] = []

    def route(ws):
        server = ws.connect_to_server()

        def from_page(message):
            if drop_from_page and not lost and drop_from_page(message):
                lost.append(message)
                ws.close()
                return
            server.send(message)

        def from_server(message):
            if drop_from_server and not lost and drop_from_server(message):
                lost.append(message)
                ws.close()
                return
            ws.send(message)

        ws.on_message(from_page)
        server.on_message(from_server)

    page.route_web_socket(re.compile(r"/ws/threads/"), route)
    return lost


def user_message(message) -> bool:
    return isinstance(message, str) and '"type":"message"' in message.replace(" ", "")


def test_a_message_lost_on_its_way_is_sent_again_once(open_as):
    owner = open_as("owner")
    path = create_thread(owner, agent="echo", title="Lost on the way")
    lost = relay(owner, drop_from_page=user_message)
    owner.goto(path)  # the relay applies to sockets opened from now on
    wait_connected(owner)

    send(owner, "one message, once")

    expect(reply(owner)).to_contain_text("one message, once")
    assert len(lost) == 1
    owner.reload()
    wait_connected(owner)
    expect(owner.locator("li.msg-user")).to_have_count(1)
    expect(owner.locator("li.msg-agent")).to_have_count(1)


def test_a_message_whose_confirmation_was_lost_is_not_posted_twice(open_as):
    owner = open_as("owner")
    path = create_thread(owner, agent="echo", title="Confirmation lost")
    lost = relay(
        owner,
        drop_from_server=lambda m: (
            isinstance(m, str) and '"type":"message"' in m and '"role":"user"' in m
        ),
    )
    owner.goto(path)
    wait_connected(owner)

    send(owner, "stored before the cut")

    expect(reply(owner)).to_contain_text("stored before the cut")
    assert len(lost) == 1
    owner.reload()
    wait_connected(owner)
    expect(owner.locator("li.msg-user")).to_have_count(1)
    expect(owner.locator("li.msg-agent")).to_have_count(1)
