"""An agent's question in the web UI: a page opened while it is open shows it
(with the time left) and can answer it; after a reload the history shows what
was asked, the answer and who gave it."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_chat_ui import create_thread, reply, send, wait_connected

pytestmark = pytest.mark.browser


def test_a_page_opened_later_answers_the_open_question_and_keeps_it(open_as):
    owner = open_as("owner")
    path = create_thread(
        owner, agent="echo", title="Later", share={"participant": "participant"}
    )
    send(owner, "/ask Which colour?")
    expect(owner.locator(".input-question")).to_have_text("Which colour?")

    participant = open_as("participant")
    participant.goto(path)
    wait_connected(participant)
    expect(participant.locator(".input-question")).to_have_text("Which colour?")
    expect(participant.locator(".input-note")).to_have_text(
        re.compile(r"Answer within \d+ s\.")
    )
    participant.get_by_label("Your answer").fill("blue")
    participant.get_by_role("button", name="Answer").click()
    expect(reply(owner).locator(".msg-body")).to_have_text("You answered: blue")

    for page in (owner, participant):
        page.reload()
        wait_connected(page)
        expect(reply(page)).to_have_attribute("data-status", "completed")
        expect(page.locator(".input-closed")).to_have_text(
            "echo asked: Which colour? — Answered by participant: blue"
        )
