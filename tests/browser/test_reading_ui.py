"""Reading a chat: copy a reply or a code block, code highlighted the same live
and after a reload, message times in the reader's own zone and language, and
dark mode following the system with a remembered toggle.

The `echo` agent answers with the message itself, so a test chooses the
reply's Markdown by sending it.
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_chat_ui import PHONE, create_thread, reply, send

pytestmark = pytest.mark.browser

CODE_REPLY = (
    "Reverse it like this:\n\n"
    "```python\n"
    "def backwards(items):\n"
    "    # a new list, the old one untouched\n"
    "    return items[::-1]\n"
    "```\n\n"
    "and in a shell:\n\n"
    "```\necho done\n```"
)
PYTHON_CODE = (
    "def backwards(items):\n"
    "    # a new list, the old one untouched\n"
    "    return items[::-1]"
)
CLIPBOARD = ["clipboard-read", "clipboard-write"]
GERMAN_WEEKDAYS = (
    "Montag",
    "Dienstag",
    "Mittwoch",
    "Donnerstag",
    "Freitag",
    "Samstag",
    "Sonntag",
)


def clipboard_text(page: Page) -> str:
    return page.evaluate("navigator.clipboard.readText()")


def send_code_reply(page: Page) -> None:
    box = page.get_by_label(re.compile("^Message to"))
    box.fill(CODE_REPLY)
    box.press("Enter")
    expect(reply(page)).to_have_attribute("data-status", "completed")
    expect(reply(page).locator(".code-block")).to_have_count(2)


def test_copy_a_whole_reply_and_each_code_block(open_as, server):
    owner = open_as("owner", permissions=CLIPBOARD)
    create_thread(owner, agent="echo", title="Copying")
    send_code_reply(owner)

    # The whole reply: its Markdown, as written.
    copy_reply = reply(owner).locator(".msg-actions .copy-button")
    expect(copy_reply).to_have_accessible_name("Copy reply")
    copy_reply.click()
    expect(copy_reply).to_have_text("Copied")
    expect(copy_reply).to_have_accessible_name("Copied")
    assert clipboard_text(owner) == CODE_REPLY
    assert owner.evaluate("window.parleyChat.state.lastCopied") == CODE_REPLY
    # The state is visible for a moment, then the button is ready again.
    expect(copy_reply).to_have_text("Copy", timeout=5_000)

    # One code block: its code only, by keyboard this time.
    python_block = reply(owner).locator(".code-block").first
    expect(python_block.locator(".code-language")).to_have_text("python")
    copy_code = python_block.locator(".copy-button")
    expect(copy_code).to_have_accessible_name("Copy python code")
    copy_code.focus()
    owner.keyboard.press("Enter")
    expect(copy_code).to_have_text("Copied")
    assert clipboard_text(owner) == PYTHON_CODE

    shell_block = reply(owner).locator(".code-block").nth(1)
    expect(shell_block.locator(".code-language")).to_have_text("code")
    shell_block.get_by_role("button", name="Copy code").click()
    expect(shell_block.locator(".copy-button")).to_have_text("Copied")
    assert clipboard_text(owner) == "echo done"

    # A reload redraws the reply from the server's HTML: one bar per block.
    owner.reload()
    expect(reply(owner).locator(".code-block")).to_have_count(2)
    expect(reply(owner).locator(".code-block-bar")).to_have_count(2)
    expect(reply(owner).locator(".msg-actions .copy-button")).to_have_count(1)


def test_code_is_highlighted_alike_live_and_after_a_reload(open_as, artifacts_dir):
    owner = open_as("owner")
    create_thread(owner, agent="echo", title="Highlighting")
    send_code_reply(owner)
    code = reply(owner).locator("pre.highlight code.language-python")
    expect(code).to_contain_text("def backwards(items):")
    expect(code.locator("span.k").first).to_have_text("def")
    expect(code.locator("span.nf")).to_have_text("backwards")
    expect(code.locator("span.c1")).to_have_text("# a new list, the old one untouched")
    # Colours come from the stylesheet (classes), none from style attributes.
    assert owner.locator("#messages pre [style], #messages pre[style]").count() == 0
    keyword_colour = code.locator("span.k").first.evaluate(
        "node => getComputedStyle(node).color"
    )
    assert keyword_colour == "rgb(255, 123, 114)"
    live = (
        reply(owner)
        .locator("pre")
        .evaluate_all("blocks => blocks.map(block => block.outerHTML)")
    )

    # The stored reply, rendered by the page's own view, looks the same.
    owner.reload()
    expect(reply(owner).locator("pre.highlight span.k").first).to_have_text("def")
    stored = (
        reply(owner)
        .locator("pre")
        .evaluate_all("blocks => blocks.map(block => block.outerHTML)")
    )
    assert stored == live
    owner.screenshot(path=str(artifacts_dir / "reading-code-light.png"))


def test_times_are_the_servers_shown_in_the_readers_zone_and_language(open_as):
    owner = open_as("owner", locale="de-DE", timezone_id="Asia/Tokyo")
    path = create_thread(owner, agent="echo", title="Zeiten")
    send(owner, "wie spät ist es?")
    expect(reply(owner)).to_have_attribute("data-status", "completed")

    def check_times(page: Page) -> None:
        for item in (page.locator("li.msg-user").first, reply(page)):
            time = item.locator("time.msg-time")
            expect(time).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\d"))
            stamp = datetime.fromisoformat(
                time.get_attribute("datetime").replace("Z", "+00:00")
            )
            local = stamp.astimezone(ZoneInfo("Asia/Tokyo"))
            expect(time).to_have_text(re.compile(rf"{local:%H:%M}$"))
            # The whole date on hover: weekday and year, in German, in Tokyo time.
            expect(time).to_have_attribute("title", re.compile(str(local.year)))
            title = time.get_attribute("title")
            assert any(day in title for day in GERMAN_WEEKDAYS), title
            assert f"{local:%H:%M}" in title

    check_times(owner)
    # After a reload the server renders the history: the same times.
    owner.reload()
    check_times(owner)
    # Another reader elsewhere sees the same moment in their own zone.
    other = open_as("owner", locale="en-US", timezone_id="America/New_York")
    other.goto(path)
    time = other.locator("li.msg-user time.msg-time").first
    stamp = datetime.fromisoformat(
        time.get_attribute("datetime").replace("Z", "+00:00")
    )
    local = stamp.astimezone(ZoneInfo("America/New_York"))
    expect(time).to_have_text(re.compile(rf"^{local:%I:%M}\s(AM|PM)$"))


def body_background(page: Page) -> str:
    return page.evaluate("getComputedStyle(document.body).backgroundColor")


LIGHT_BACKGROUND = "rgb(246, 247, 249)"
DARK_BACKGROUND = "rgb(18, 21, 28)"


def test_dark_mode_follows_the_system_and_the_toggle_is_remembered(
    open_as, artifacts_dir
):
    dark = open_as("owner", color_scheme="dark")
    create_thread(dark, agent="echo", title="Dark")
    send_code_reply(dark)
    toggle = dark.get_by_role("button", name="Dark theme")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    assert body_background(dark) == DARK_BACKGROUND
    dark.screenshot(path=str(artifacts_dir / "reading-dark.png"))
    dark.set_viewport_size(PHONE)
    assert dark.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    dark.screenshot(path=str(artifacts_dir / "reading-dark-phone.png"))

    # The toggle picks light over the system's dark, and a reload keeps it.
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    expect(dark.locator("html")).to_have_attribute("data-theme", "light")
    assert body_background(dark) == LIGHT_BACKGROUND
    dark.reload()
    expect(dark.get_by_role("button", name="Dark theme")).to_have_attribute(
        "aria-pressed", "false"
    )
    assert body_background(dark) == LIGHT_BACKGROUND
    dark.screenshot(path=str(artifacts_dir / "reading-light-phone.png"))

    # A light system: light until dark is picked, on every page.
    light = open_as("participant", color_scheme="light")
    light.goto("/")
    assert body_background(light) == LIGHT_BACKGROUND
    toggle = light.get_by_role("button", name="Dark theme")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    toggle.press("Enter")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    assert body_background(light) == DARK_BACKGROUND
    light.goto("/threads/new/")
    expect(light.locator("html")).to_have_attribute("data-theme", "dark")
    assert body_background(light) == DARK_BACKGROUND
    light.screenshot(path=str(artifacts_dir / "reading-dark-new-chat.png"))


def test_light_desktop_screenshot_with_code_times_and_copy(open_as, artifacts_dir):
    owner = open_as("owner", color_scheme="light")
    create_thread(owner, agent="echo", title="Light")
    send_code_reply(owner)
    expect(reply(owner).locator("time.msg-time")).to_be_visible()
    owner.screenshot(path=str(artifacts_dir / "reading-light.png"))
