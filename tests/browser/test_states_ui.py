"""What a chat says it is doing: Esc stops a reply and the focus stays in the
composer, the reply's badge says "waiting for your answer" while a question
waits and "offline" / "reconnecting" while the socket is down, and an error
is shown once.

`slow-echo` streams ten numbered words a second, so a test acts mid-reply.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_chat_ui import (
    create_thread,
    numbered_words,
    reply,
    send,
    wait_connected,
    wait_for_words,
)

pytestmark = pytest.mark.browser

# Every text the first reply's badge shows, recorded in the page as it changes.
RECORD_BADGES = """() => {
  window.badgeTexts = [];
  const badge = document.querySelector("li.msg-agent .badge");
  new MutationObserver(() => window.badgeTexts.push(badge.textContent))
    .observe(badge, { childList: true, characterData: true, subtree: true });
}"""


def composer(page: Page):
    return page.get_by_label(re.compile("^Message to"))


def test_escape_stops_a_reply_and_the_focus_stays_in_the_composer(open_as):
    owner = open_as("owner")
    create_thread(owner, agent="slow-echo", title="Escape")
    send(owner, numbered_words(40, prefix="e"))
    wait_for_words(owner, 4)
    expect(composer(owner)).to_be_focused()
    owner.keyboard.press("Escape")
    expect(reply(owner)).to_have_attribute("data-status", "cancelled")
    expect(reply(owner).locator(".badge")).to_have_text("stopped")
    expect(composer(owner)).to_be_focused()

    # Esc elsewhere on the page stops too; with the mouse, Stop leaves the
    # focus in the composer as well.
    send(owner, numbered_words(40, prefix="f"))
    wait_for_words(owner, 4, index=1)
    owner.locator("#messages").focus()
    owner.keyboard.press("Escape")
    expect(reply(owner, 1)).to_have_attribute("data-status", "cancelled")
    send(owner, numbered_words(40, prefix="g"))
    wait_for_words(owner, 4, index=2)
    owner.get_by_role("button", name="Stop").click()
    expect(composer(owner)).to_be_focused()
    expect(reply(owner, 2)).to_have_attribute("data-status", "cancelled")
    # Typing goes on straight away.
    owner.keyboard.type("next")
    expect(composer(owner)).to_have_value("next")


def test_escape_first_closes_the_agent_list_then_stops(open_as):
    owner = open_as("owner")
    create_thread(owner, agent="slow-echo", title="Escape mentions")
    send(owner, numbered_words(40, prefix="m"))
    wait_for_words(owner, 3)
    composer(owner).type("@")
    expect(owner.locator("#mention-list")).to_be_visible()
    owner.keyboard.press("Escape")
    expect(owner.locator("#mention-list")).to_be_hidden()
    expect(reply(owner)).to_have_attribute("aria-busy", "true")
    owner.keyboard.press("Escape")
    expect(reply(owner)).to_have_attribute("data-status", "cancelled")


def test_the_badge_says_waiting_for_your_answer_while_a_question_waits(open_as):
    owner = open_as("owner")
    path = create_thread(
        owner, agent="echo", title="Waiting", share={"observer": "observer"}
    )
    observer = open_as("observer")
    observer.goto(path)
    wait_connected(observer)
    send(owner, "/ask Tea or coffee?")
    expect(owner.locator(".input-question")).to_have_text("Tea or coffee?")
    expect(reply(owner).locator(".badge")).to_have_text("waiting for your answer")
    expect(reply(observer).locator(".badge")).to_have_text("waiting for an answer")
    # Still so after a reload (the snapshot brings the open question back).
    owner.reload()
    wait_connected(owner)
    expect(reply(owner).locator(".badge")).to_have_text("waiting for your answer")

    owner.get_by_label("Your answer").fill("tea")
    owner.get_by_role("button", name="Answer").click()
    for page in (owner, observer):
        expect(reply(page)).to_have_attribute("data-status", "completed")
        expect(reply(page).locator(".badge")).to_be_hidden()
        expect(reply(page).locator(".msg-body")).to_have_text("You answered: tea")


def test_the_badge_says_offline_and_reconnecting_while_the_socket_is_down(open_as):
    owner = open_as("owner")
    create_thread(owner, agent="slow-echo", title="Down")
    expected = numbered_words(60, prefix="d")
    send(owner, expected)
    wait_for_words(owner, 3)
    badge = reply(owner).locator(".badge")
    expect(badge).to_have_text("writing…")
    owner.evaluate(RECORD_BADGES)

    owner.context.set_offline(True)
    expect(owner.locator("#connection")).to_have_attribute("data-state", "offline")
    expect(badge).to_have_text("offline")
    owner.context.set_offline(False)
    wait_connected(owner)
    expect(badge).to_have_text("writing…")

    owner.evaluate("window.parleyChat.dropConnection()")
    wait_connected(owner)
    owner.wait_for_function("window.badgeTexts.includes('reconnecting')")
    expect(badge).to_have_text("writing…")
    expect(reply(owner)).to_have_attribute("data-status", "completed", timeout=15_000)
    assert reply(owner).locator(".msg-body").inner_text().strip() == expected
    seen = owner.evaluate("window.badgeTexts")
    assert "offline" in seen and "reconnecting" in seen
    assert "thinking…" not in seen[seen.index("offline") :]


def test_a_failed_reply_shows_its_error_once(open_as):
    owner = open_as("owner")
    create_thread(owner, agent="echo", title="Once")
    send(owner, "/fail part of it")
    expect(reply(owner)).to_have_attribute("data-status", "failed")
    message = "The echo agent failed on request."
    expect(reply(owner).locator(".msg-error")).to_have_text(message)
    # Announced where it is shown (role=alert), and nowhere else.
    expect(owner.get_by_role("alert").filter(has_text=message)).to_have_count(1)
    expect(owner.get_by_text(message)).to_have_count(1)
    expect(owner.locator("#alerts")).to_have_text("")
    owner.reload()
    wait_connected(owner)
    expect(reply(owner)).to_have_attribute("data-status", "failed")
    expect(owner.get_by_text(message)).to_have_count(1)
