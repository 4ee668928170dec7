"""Titles: an untitled chat is named after its first message, live on the open
page and in the list; a long title stays on one line, cut short, whole on
hover, at desktop and phone widths."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.test_chat_ui import PHONE, create_thread, send, wait_connected

pytestmark = pytest.mark.browser

LONG_TITLE = (
    "Quarterly planning for the platform team: migrations, the on-call rota, "
    "the database upgrade and everything we promised the support people in May"
)


def is_cut_short(node: Locator) -> bool:
    return node.evaluate("node => node.scrollWidth > node.clientWidth")


def fits_the_screen(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_an_untitled_chat_is_named_after_its_first_message(open_as):
    owner = open_as("owner")
    owner.goto("/threads/new/")
    owner.locator("#agent-echo").check()
    owner.get_by_role("button", name="Start chat").click()
    owner.wait_for_url(re.compile(r"/threads/[0-9a-f-]{36}/$"))
    wait_connected(owner)
    title = owner.locator("#thread-title")
    # Not its id: the agent's name until the first message.
    expect(title).to_have_text("Chat with echo")

    send(owner, "How do I   rotate the API keys\nwithout downtime?")
    expect(title).to_have_text("How do I rotate the API keys without downtime?")
    expect(title).to_have_attribute(
        "title", "How do I rotate the API keys without downtime?"
    )
    expect(owner).to_have_title(
        "How do I rotate the API keys without downtime? · Parley"
    )
    owner.goto("/")
    expect(owner.locator(".thread-title").first).to_have_text(
        "How do I rotate the API keys without downtime?"
    )


def test_a_long_title_is_cut_short_with_the_whole_title_on_hover(
    open_as, artifacts_dir
):
    owner = open_as("owner")
    create_thread(owner, agent="echo", title=LONG_TITLE)
    title = owner.locator("#thread-title")
    expect(title).to_have_attribute("title", LONG_TITLE)
    expect(title).to_have_text(LONG_TITLE)  # all of it is there, for readers too
    for viewport in ({"width": 1280, "height": 800}, PHONE):
        owner.set_viewport_size(viewport)
        assert is_cut_short(title)
        assert fits_the_screen(owner)
        # One line: the header does not grow with the title.
        height = title.evaluate("node => node.getBoundingClientRect().height")
        assert height < 40, height
    owner.screenshot(path=str(artifacts_dir / "title-long-phone.png"))

    owner.goto("/")
    item = owner.locator(".thread-title", has_text=LONG_TITLE[:40])
    expect(item).to_have_attribute("title", LONG_TITLE)
    assert is_cut_short(item)
    assert fits_the_screen(owner)
    owner.screenshot(path=str(artifacts_dir / "title-long-list-phone.png"))
