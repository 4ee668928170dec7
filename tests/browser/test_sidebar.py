"""The chat page's sidebar: the thread list beside the chat, live, searchable on
the server, with inline rename and delete, unread dots that every device of a
user agrees on, and a drawer behind a button on narrow screens."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_chat_ui import PHONE, create_thread, reply, send, wait_connected

pytestmark = pytest.mark.browser

# The list polls every 5 s; a change shows at the next poll.
POLL_TIMEOUT_MS = 12_000


def sidebar(page: Page):
    return page.locator("#sidebar")


def sidebar_item(page: Page, title: str):
    return sidebar(page).locator("li.thread-item", has_text=title)


def test_the_sidebar_lists_the_threads_and_marks_the_current_one(open_as):
    owner = open_as("owner")
    first = create_thread(owner, agent="echo", title="Sidebar first")
    create_thread(owner, agent="echo", title="Sidebar second")

    expect(sidebar(owner).get_by_role("heading", name="Chats")).to_be_visible()
    current = sidebar_item(owner, "Sidebar second")
    expect(current).to_have_class(re.compile(r"\bcurrent\b"))
    expect(current.locator(".thread-link")).to_have_attribute("aria-current", "page")
    other = sidebar_item(owner, "Sidebar first")
    expect(other).not_to_have_class(re.compile(r"\bcurrent\b"))

    # Newest activity first; a link opens the chat.
    titles = sidebar(owner).locator(".thread-title").all_inner_texts()
    assert titles.index("Sidebar second") < titles.index("Sidebar first")
    other.locator(".thread-link").click()
    owner.wait_for_url(re.compile(re.escape(first) + "$"))
    wait_connected(owner)
    expect(sidebar_item(owner, "Sidebar first")).to_have_class(
        re.compile(r"\bcurrent\b")
    )


def test_search_finds_a_thread_by_a_word_in_a_message(open_as):
    owner = open_as("owner")
    create_thread(owner, agent="echo", title="Birds")
    send(owner, "the pelican flies at dawn")
    expect(reply(owner)).to_have_attribute("data-status", "completed")
    create_thread(owner, agent="echo", title="Fish")

    box = sidebar(owner).get_by_label("Search chats")
    box.fill("pelic")
    items = sidebar(owner).locator("li.thread-item")
    expect(items).to_have_count(1)
    found = sidebar_item(owner, "Birds")
    expect(found.locator(".thread-snippet")).to_contain_text("the pelican flies")
    expect(found.locator(".thread-snippet mark").first).to_have_text(
        re.compile("pelic", re.I)
    )
    expect(owner.locator("#thread-list-status")).to_have_text("1 chat matches.")

    box.fill("nothing-like-this")
    expect(items).to_have_count(0)
    expect(sidebar(owner).locator("#thread-list-empty")).to_have_text(
        "No chats match “nothing-like-this”."
    )

    # Esc clears the search and brings the whole list back.
    box.press("Escape")
    expect(box).to_have_value("")
    expect(sidebar_item(owner, "Fish")).to_be_visible()
    expect(sidebar_item(owner, "Birds")).to_be_visible()
    expect(owner.locator(".thread-snippet")).to_have_count(0)


def test_rename_inline_reaches_the_header(open_as):
    owner = open_as("owner")
    create_thread(owner, agent="echo", title="Old name")
    item = sidebar_item(owner, "Old name")
    item.hover()
    item.get_by_role("button", name="Rename").click()
    field = item.get_by_label("New title for “Old name”")
    expect(field).to_be_focused()
    field.fill("Fresh name")
    field.press("Enter")

    renamed = sidebar_item(owner, "Fresh name")
    expect(renamed.locator(".thread-title")).to_have_text("Fresh name")
    expect(owner.locator("#thread-title")).to_have_text("Fresh name")
    expect(renamed.get_by_role("button", name="Rename")).to_be_focused()
    owner.reload()
    expect(sidebar_item(owner, "Fresh name")).to_be_visible()

    # Esc gives the rename up.
    item = sidebar_item(owner, "Fresh name")
    item.get_by_role("button", name="Rename").click()
    field = item.get_by_label("New title for “Fresh name”")
    field.fill("Never saved")
    field.press("Escape")
    expect(item.locator(".thread-title")).to_have_text("Fresh name")
    expect(owner.locator("#thread-title")).to_have_text("Fresh name")


def test_delete_inline_asks_first(open_as):
    owner = open_as("owner")
    create_thread(owner, agent="echo", title="Doomed")
    create_thread(owner, agent="echo", title="Keeper")

    answers = iter([False, True])
    questions = []

    def on_dialog(dialog):
        questions.append(dialog.message)
        if next(answers):
            dialog.accept()
        else:
            dialog.dismiss()

    owner.on("dialog", on_dialog)
    doomed = sidebar_item(owner, "Doomed")
    doomed.hover()
    doomed.get_by_role("button", name="Delete").click()
    assert questions and "Doomed" in questions[0]
    expect(doomed).to_be_visible()  # dismissed: nothing deleted

    doomed.get_by_role("button", name="Delete").click()
    expect(doomed).to_have_count(0)
    expect(owner.locator("#thread-list-status")).to_have_text("Deleted “Doomed”.")
    owner.goto("/")
    expect(owner.locator("li.thread-item", has_text="Keeper")).to_be_visible()
    expect(owner.locator("li.thread-item", has_text="Doomed")).to_have_count(0)


def test_the_unread_dot_comes_when_someone_else_writes_and_goes_on_open(open_as):
    owner = open_as("owner")
    shared = create_thread(
        owner, agent="echo", title="Team room", share={"participant": "participant"}
    )
    create_thread(owner, agent="echo", title="Quiet corner")
    # Another device of the owner's, on the Chats page.
    other_device = open_as("owner")

    participant = open_as("participant")
    participant.goto(shared)
    wait_connected(participant)
    send(participant, "news for the team")
    expect(reply(participant)).to_have_attribute("data-status", "completed")

    item = sidebar_item(owner, "Team room")
    expect(item.locator(".unread-badge")).to_be_visible(timeout=POLL_TIMEOUT_MS)
    expect(item).to_have_class(re.compile(r"\bunread\b"))
    expect(owner.locator("#sidebar-toggle .toggle-unread")).to_be_hidden()  # wide
    listed = other_device.locator("li.thread-item", has_text="Team room")
    expect(listed.locator(".unread-badge")).to_be_visible(timeout=POLL_TIMEOUT_MS)

    # Opening it clears the dot here and on the other device.
    item.locator(".thread-link").click()
    owner.wait_for_url(re.compile(re.escape(shared) + "$"))
    wait_connected(owner)
    expect(sidebar_item(owner, "Team room").locator(".unread-badge")).to_be_hidden()
    expect(listed.locator(".unread-badge")).to_be_hidden(timeout=POLL_TIMEOUT_MS)

    # Messages that arrive while the thread is on screen are read as they come.
    send(participant, "and a little more")
    expect(reply(owner, 1)).to_have_attribute("data-status", "completed")
    owner.get_by_role("link", name="Quiet corner").click()
    wait_connected(owner)
    expect(sidebar_item(owner, "Team room").locator(".unread-badge")).to_be_hidden()
    other_device.reload()
    expect(
        other_device.locator("li.thread-item", has_text="Team room").locator(
            ".unread-badge"
        )
    ).to_be_hidden()


def test_the_sidebar_is_a_drawer_at_phone_width(open_as, artifacts_dir):
    owner = open_as("owner", viewport=PHONE)
    create_thread(owner, agent="echo", title="Pocket chat")
    toggle = owner.get_by_role("button", name=re.compile("^Chats"))
    expect(sidebar(owner)).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")

    # Keyboard: the button opens it, focus lands in the search, Esc closes.
    toggle.focus()
    owner.keyboard.press("Enter")
    expect(sidebar(owner)).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(sidebar(owner).get_by_label("Search chats")).to_be_focused()
    expect(sidebar_item(owner, "Pocket chat")).to_be_visible()
    box = sidebar(owner).get_by_label("Search chats")
    assert box.bounding_box()["width"] > 200
    owner.screenshot(path=str(artifacts_dir / "sidebar-phone-open.png"))
    owner.keyboard.press("Escape")
    expect(sidebar(owner)).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(toggle).to_be_focused()

    # The close button and the backdrop close it too.
    toggle.click()
    sidebar(owner).get_by_role("button", name="Close the chat list").click()
    expect(sidebar(owner)).to_be_hidden()
    toggle.click()
    owner.mouse.click(380, 400)  # beside the drawer
    expect(sidebar(owner)).to_be_hidden()
    expect(owner.get_by_label(re.compile("^Message to"))).to_be_visible()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_of_the_sidebar(open_as, artifacts_dir, scheme):
    owner = open_as("owner", color_scheme=scheme)
    create_thread(owner, agent="echo", title=f"A {scheme} chat about planning")
    send(owner, "Let us plan the launch of the new search")
    expect(reply(owner)).to_have_attribute("data-status", "completed")
    participant = open_as("participant")
    path = create_thread(
        participant,
        agent="echo",
        title=f"Shared with a dot ({scheme})",
        share={"owner": "participant"},
    )
    send(participant, "ping the owner")
    expect(
        sidebar_item(owner, f"Shared with a dot ({scheme})").locator(".unread-badge")
    ).to_be_visible(timeout=POLL_TIMEOUT_MS)
    owner.screenshot(path=str(artifacts_dir / f"sidebar-desktop-{scheme}.png"))
    sidebar(owner).get_by_label("Search chats").fill("launch")
    expect(sidebar(owner).locator(".thread-snippet mark").first).to_be_visible()
    owner.screenshot(path=str(artifacts_dir / f"sidebar-search-{scheme}.png"))
    phone = open_as("owner", viewport=PHONE, color_scheme=scheme)
    phone.goto(path)
    wait_connected(phone)
    phone.screenshot(path=str(artifacts_dir / f"sidebar-phone-closed-{scheme}.png"))
    phone.get_by_role("button", name=re.compile("^Chats")).click()
    expect(sidebar(phone)).to_be_visible()
    phone.screenshot(path=str(artifacts_dir / f"sidebar-phone-open-{scheme}.png"))
