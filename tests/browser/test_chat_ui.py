"""The chat UI as people use it: two browsers on one thread, streaming, reload,
stop, a network blip, hostile replies, questions from the agent, the live list.

The `slow-echo` agent streams the user's text back at ten words a second, so a
test can act mid-reply; the words are numbered, so a duplicated or lost chunk
shows in the final text.
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}


def numbered_words(count: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{index:02d}" for index in range(1, count + 1))


# --- helpers -------------------------------------------------------------------


def create_thread(
    page: Page, *, agent: str, title: str, share: dict[str, str] | None = None
) -> str:
    """Start a chat through the "New chat" page, share it, and return its URL path."""
    page.goto("/threads/new/")
    page.locator(f"#agent-{agent}").check()
    page.get_by_label("Title").fill(title)
    page.get_by_role("button", name="Start chat").click()
    page.wait_for_url(re.compile(r"/threads/[0-9a-f-]{36}/$"))
    path = page.url.split(page.url.split("/threads/")[0])[1]
    for username, role in (share or {}).items():
        page.goto(path + "settings/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Role").select_option(role)
        page.get_by_role("button", name="Share").click()
        expect(page.get_by_text(f"Shared with {username} as {role}.")).to_be_visible()
    page.goto(path)
    wait_connected(page)
    return path


def wait_connected(page: Page) -> None:
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")


def send(page: Page, text: str) -> None:
    box = page.get_by_label(re.compile("^Message to"))
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")


def reply(page: Page, index: int = 0):
    return page.locator("li.msg-agent").nth(index)


def reply_text(page: Page, index: int = 0) -> str:
    return reply(page, index).locator(".msg-body").inner_text().strip()


def wait_for_words(page: Page, count: int, index: int = 0, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = (
            reply_text(page, index)
            if page.locator("li.msg-agent").count() > index
            else ""
        )
        if len(text.split()) >= count:
            return text
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} words arrived")


def collect_until_complete(
    page: Page, expected: str, index: int = 0, timeout: float = 15
):
    """Sample the reply while it streams; every sample must be a prefix of `expected`."""
    samples = []
    deadline = time.monotonic() + timeout
    item = reply(page, index)
    while time.monotonic() < deadline:
        if item.count():
            status = item.get_attribute("data-status")
            text = item.locator(".msg-body").inner_text().strip()
            samples.append(text)
            assert expected.startswith(text), f"{text!r} is not a prefix of the reply"
            if status == "completed":
                return samples
        time.sleep(0.05)
    raise AssertionError(f"the reply did not complete; last samples {samples[-3:]}")


# --- tests ----------------------------------------------------------------------


def test_owner_and_observer_see_the_same_streamed_reply(open_as):
    owner = open_as("owner")
    path = create_thread(
        owner,
        agent="slow-echo",
        title="Streaming together",
        share={"observer": "observer"},
    )
    observer = open_as("observer")
    observer.goto(path)
    wait_connected(observer)

    # The observer can read but not write, and is told so.
    expect(observer.locator("#observer-note")).to_be_visible()
    expect(observer.get_by_label(re.compile("^Message to"))).to_be_disabled()
    expect(observer.get_by_role("button", name="Send")).to_be_disabled()
    expect(owner.locator("#observer-note")).to_be_hidden()

    expected = numbered_words(25)
    send(owner, expected)
    expect(observer.locator("li.msg-user .msg-body")).to_have_text(expected)

    # Both see the reply while it is still streaming ...
    partial = wait_for_words(observer, 3)
    assert expected.startswith(partial) and partial != expected
    expect(reply(owner)).to_have_attribute("aria-busy", "true")
    expect(owner.get_by_role("button", name="Stop")).to_be_visible()
    # ... and the same complete reply at the end.
    for page in (owner, observer):
        expect(reply(page)).to_have_attribute(
            "data-status", "completed", timeout=15_000
        )
        expect(reply(page).locator(".msg-body.markdown p")).to_have_text(expected)
    assert reply_text(owner) == reply_text(observer) == expected
    expect(owner.get_by_role("button", name="Stop")).to_be_hidden()


def test_reload_mid_stream_continues_without_duplicates(open_as):
    owner = open_as("owner")
    create_thread(owner, agent="slow-echo", title="Reload")
    expected = numbered_words(30)
    send(owner, expected)
    before = wait_for_words(owner, 6)
    assert expected.startswith(before)

    owner.reload()
    wait_connected(owner)
    # The snapshot brings back the text so far, and the stream carries on from it.
    samples = collect_until_complete(owner, expected)
    assert len(samples[0].split()) >= len(before.split())
    expect(reply(owner).locator(".msg-body.markdown p")).to_have_text(expected)
    assert owner.locator("li.msg-agent").count() == 1
    assert owner.locator("li.msg-user").count() == 1


def test_network_blip_mid_stream_resumes_from_the_last_event(open_as):
    owner = open_as("owner")
    create_thread(owner, agent="slow-echo", title="Blip")
    expected = numbered_words(30, prefix="b")
    send(owner, expected)
    wait_for_words(owner, 5)
    first_socket_events = owner.evaluate("window.parleyChat.state.lastEventId")

    owner.evaluate("window.parleyChat.dropConnection()")
    expect(owner.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    wait_connected(owner)
    wait_for_words(owner, 12)

    # The browser loses the network for a moment: shown as offline, then back.
    owner.context.set_offline(True)
    expect(owner.locator("#connection")).to_have_attribute("data-state", "offline")
    expect(owner.locator("#connection")).to_contain_text("Offline")
    expect(owner.get_by_role("button", name="Send")).to_be_disabled()
    time.sleep(0.5)
    owner.context.set_offline(False)
    wait_connected(owner)

    collect_until_complete(owner, expected)
    assert reply_text(owner) == expected
    assert owner.evaluate("window.parleyChat.state.lastEventId") > first_socket_events


def test_stop_mid_stream_keeps_the_partial_reply_marked_stopped(open_as):
    owner = open_as("owner")
    path = create_thread(
        owner, agent="slow-echo", title="Stop", share={"participant": "participant"}
    )
    participant = open_as("participant")
    participant.goto(path)
    wait_connected(participant)

    expected = numbered_words(40, prefix="s")
    send(owner, expected)
    wait_for_words(participant, 5)
    owner.get_by_role("button", name="Stop").click()

    for page in (owner, participant):
        expect(reply(page)).to_have_attribute(
            "data-status", "cancelled", timeout=10_000
        )
        expect(reply(page).locator(".badge")).to_have_text("stopped")
    stopped = reply_text(owner)
    assert stopped == reply_text(participant)
    assert expected.startswith(stopped)
    assert 5 <= len(stopped.split()) < 40
    expect(owner.get_by_role("button", name="Stop")).to_be_hidden()

    # After a reload the partial reply is still there, still marked stopped.
    participant.reload()
    wait_connected(participant)
    expect(reply(participant).locator(".badge")).to_have_text("stopped")
    assert reply_text(participant) == stopped


def test_a_reply_with_html_and_script_renders_inert(open_as):
    owner = open_as("owner")
    path = create_thread(
        owner, agent="echo", title="Hostile", share={"observer": "observer"}
    )
    observer = open_as("observer")
    observer.goto(path)
    wait_connected(observer)
    dialogs = []
    for page in (owner, observer):
        page.on(
            "dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss())
        )

    hostile = (
        "<img src=x onerror=alert(1)> <script>window.pwned = true; alert(2)</script> "
        '<a href="javascript:alert(3)">click</a> **done**'
    )
    send(owner, hostile)
    for page in (owner, observer):
        expect(reply(page)).to_have_attribute("data-status", "completed")
        expect(reply(page).locator(".markdown strong")).to_have_text("done")
        messages = page.locator("#messages")
        assert messages.locator("img, script, iframe").count() == 0
        assert messages.locator('a[href^="javascript"]').count() == 0
        # The markup is shown as text, as written.
        expect(reply(page).locator(".msg-body")).to_contain_text(
            "<img src=x onerror=alert(1)>"
        )
        expect(page.locator("li.msg-user .msg-body")).to_have_text(hostile)
        assert page.evaluate("window.pwned") is None
    # Still inert when the history is rendered by the server.
    observer.reload()
    wait_connected(observer)
    assert observer.locator("#messages img, #messages script").count() == 0
    assert observer.evaluate("window.pwned") is None
    assert dialogs == []


def test_markdown_reply_keyboard_and_screenshots(open_as, artifacts_dir):
    owner = open_as("owner")
    path = create_thread(
        owner, agent="echo", title="Markdown", share={"observer": "observer"}
    )
    box = owner.get_by_label(re.compile("^Message to"))
    # Shift+Enter adds a line; Enter sends.
    box.type("first line")
    box.press("Shift+Enter")
    box.type("second line")
    expect(box).to_have_value("first line\nsecond line")
    box.press("Enter")
    expect(owner.locator("li.msg-user .msg-body").first).to_have_text(
        "first line\nsecond line"
    )
    expect(reply(owner)).to_have_attribute("data-status", "completed")

    markdown = (
        "Here is **Markdown**, with a [link](https://example.com):\n\n"
        "- a list item\n- another one\n\n"
        "| language | year |\n| --- | ---: |\n| Python | 1991 |\n| Rust | 2015 |\n\n"
        '```\ndef greet(name):\n    return f"hello {name}"\n```'
    )
    box.fill(markdown)
    box.press("Enter")
    rendered = reply(owner, 1).locator(".msg-body.markdown")
    expect(rendered.locator("table td").first).to_have_text("Python")
    expect(rendered.locator("pre code")).to_contain_text("def greet(name):")
    expect(rendered.locator("ul li")).to_have_count(2)
    link = rendered.get_by_role("link", name="link")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    owner.screenshot(path=str(artifacts_dir / "chat-desktop.png"))

    phone = open_as("observer", viewport=PHONE)
    phone.goto(path)
    wait_connected(phone)
    expect(reply(phone, 1).locator("table")).to_be_visible()
    expect(phone.locator("#observer-note")).to_be_visible()
    # Usable at phone width: nothing wider than the screen.
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    phone.screenshot(path=str(artifacts_dir / "chat-phone.png"))
    owner.set_viewport_size(PHONE)
    owner.screenshot(path=str(artifacts_dir / "chat-phone-owner.png"))


def test_any_participant_answers_the_agents_question(open_as):
    owner = open_as("owner")
    path = create_thread(
        owner,
        agent="echo",
        title="Question",
        share={"participant": "participant", "observer": "observer"},
    )
    participant = open_as("participant")
    participant.goto(path)
    wait_connected(participant)
    observer = open_as("observer")
    observer.goto(path)
    wait_connected(observer)

    send(owner, "/ask What colour is the sky?")
    for page in (owner, participant, observer):
        expect(page.locator(".input-question")).to_have_text("What colour is the sky?")
    expect(observer.get_by_label("Your answer")).to_be_disabled()

    participant.get_by_label("Your answer").fill("blue")
    participant.get_by_role("button", name="Answer").click()
    for page in (owner, participant, observer):
        expect(reply(page)).to_have_attribute("data-status", "completed")
        expect(reply(page).locator(".msg-body")).to_have_text("You answered: blue")
        expect(page.locator(".input-closed")).to_contain_text("Answered by participant")


def test_thread_list_shows_new_chats_and_activity_live(open_as, artifacts_dir):
    owner = open_as("owner")
    expect(owner.get_by_role("heading", name="Your chats")).to_be_visible()
    participant = open_as("participant")
    path = create_thread(
        participant, agent="echo", title="Shared later", share={"owner": "participant"}
    )

    # The owner's list picks up the new chat without a reload, marked as new.
    item = owner.locator("li.thread-item", has_text="Shared later")
    expect(item).to_be_visible(timeout=12_000)
    expect(item.locator(".unread-badge")).to_be_visible()
    expect(item).to_contain_text("shared by participant")

    # Opening it clears the marker; new activity brings it back.
    owner.goto(path)
    wait_connected(owner)
    owner.goto("/")
    item = owner.locator("li.thread-item", has_text="Shared later")
    expect(item.locator(".unread-badge")).to_be_hidden()
    send(participant, "anyone there?")
    expect(reply(participant)).to_have_attribute("data-status", "completed")
    expect(item.locator(".unread-badge")).to_be_visible(timeout=12_000)
    expect(item.locator(".thread-preview")).to_contain_text("anyone there?")
    owner.screenshot(path=str(artifacts_dir / "thread-list-desktop.png"))


def test_settings_rename_reset_and_delete_reach_open_pages(open_as):
    owner = open_as("owner")
    owner.on("dialog", lambda dialog: dialog.accept())
    path = create_thread(
        owner, agent="echo", title="Before", share={"participant": "participant"}
    )
    participant = open_as("participant")
    participant.goto(path)
    wait_connected(participant)
    expect(participant.get_by_role("link", name="Settings")).to_have_count(0)

    owner.goto(path + "settings/")
    owner.get_by_label("Title").fill("After")
    owner.get_by_role("button", name="Rename").click()
    expect(participant.locator("#thread-title")).to_have_text("After")

    owner.goto(path)
    wait_connected(owner)
    send(owner, "hello")
    expect(reply(participant)).to_have_attribute("data-status", "completed")
    owner.goto(path + "settings/")
    owner.get_by_role("button", name="Reset chat").click()
    owner.wait_for_url("**" + path)
    expect(participant.locator("li.msg")).to_have_count(0)
    expect(participant.get_by_text("This chat was reset")).to_be_visible()

    owner.goto(path + "settings/")
    owner.get_by_role("button", name="Delete chat").click()
    owner.wait_for_url(re.compile(r"/$"))
    expect(participant.locator("#connection")).to_have_attribute(
        "data-state", "offline"
    )
    expect(participant.get_by_text("This chat was deleted.")).to_be_visible()
    expect(participant.get_by_label(re.compile("^Message to"))).to_be_disabled()


def test_a_second_message_waits_as_queued_below_its_own_reply(open_as):
    owner = open_as("owner")
    create_thread(owner, agent="slow-echo", title="Queue")
    first, second = numbered_words(15, prefix="q"), numbered_words(3, prefix="r")
    send(owner, first)
    wait_for_words(owner, 2)
    send(owner, second)
    expect(reply(owner, 1).locator(".badge")).to_have_text(re.compile("^queued"))
    expect(reply(owner, 1)).to_have_attribute("data-status", "queued")
    expect(reply(owner, 1)).to_have_attribute(
        "data-status", "completed", timeout=15_000
    )
    order = owner.locator("#messages > li .msg-body").all_inner_texts()
    assert [text.strip() for text in order] == [first, first, second, second]


def test_a_failed_reply_explains_itself(open_as):
    owner = open_as("owner")
    create_thread(owner, agent="echo", title="Failure")
    send(owner, "/fail half an answer")
    expect(reply(owner)).to_have_attribute("data-status", "failed")
    expect(reply(owner).locator(".badge")).to_have_text("failed")
    expect(reply(owner).locator(".msg-error")).to_have_text(
        "The echo agent failed on request."
    )
    expect(
        owner.get_by_role("alert").filter(has_text="failed on request")
    ).to_be_visible()
    assert reply_text(owner).startswith("half an answer")
