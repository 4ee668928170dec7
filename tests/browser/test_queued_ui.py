"""A burst: while the page's message waits to be stored behind others, the
page says it is queued and how many are ahead; the notice goes once the
message is stored and shown."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_chat_ui import create_thread, reply, send, wait_connected
from tests.browser.test_resend_ui import user_message

pytestmark = pytest.mark.browser


def test_a_queued_message_says_so_until_it_is_stored(open_as):
    owner = open_as("owner")
    path = create_thread(owner, agent="echo", title="Busy moment")
    held: dict = {}

    def route(ws):
        server = ws.connect_to_server()

        def from_page(message):
            if user_message(message) and "server" not in held:
                # The server's answer to a message behind a burst, while it waits.
                frame = json.loads(message)
                ws.send(
                    json.dumps(
                        {
                            "type": "status",
                            "content": {"state": "queued", "position": 120},
                            "thread_id": path.rstrip("/").rsplit("/", 1)[-1],
                            "run_id": None,
                            "request_id": frame["request_id"],
                            "event_id": None,
                        }
                    )
                )
                held.update(server=server, message=message)
                return
            server.send(message)

        ws.on_message(from_page)
        server.on_message(lambda message: ws.send(message))

    owner.route_web_socket(re.compile(r"/ws/threads/"), route)
    owner.goto(path)
    wait_connected(owner)

    send(owner, "in the middle of a burst")

    notice = owner.locator(".alert-info", has_text="queued (120 ahead)")
    expect(notice).to_be_visible()
    held["server"].send(held["message"])  # now it is stored
    expect(reply(owner)).to_contain_text("in the middle of a burst")
    expect(notice).to_have_count(0)
