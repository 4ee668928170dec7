"""The web UI when `make run`'s server is killed mid-reply and restarted: the
page reconnects by itself and shows the reply failed, with its reason and the
text up to the worker's last checkpoint, and so does a reload."""

from __future__ import annotations

import re
import signal

import pytest
from playwright.sync_api import expect

from tests.browser.test_chat_ui import (
    create_thread,
    numbered_words,
    reply,
    reply_text,
    send,
    wait_connected,
    wait_for_words,
)
from tests.integration.test_crash_keeps_text import EmbeddedServer

pytestmark = pytest.mark.browser


@pytest.fixture
def restartable_server(tmp_path):
    server = EmbeddedServer(tmp_path)
    server.prepare()
    server.start()
    try:
        yield server
    except BaseException:
        print(server.logs())
        raise
    finally:
        server.stop()


def expect_failed_with_text(page, early: str) -> None:
    item = reply(page)
    expect(item).to_have_attribute("data-status", "failed", timeout=30_000)
    expect(item.locator(".badge")).to_have_text("failed")
    expect(item.locator(".msg-error")).to_have_text(
        re.compile("The worker running this reply stopped")
    )
    assert reply_text(page).startswith(early)


def test_a_reply_cut_by_a_server_kill_shows_failed_with_its_text(
    browser, restartable_server
):
    server = restartable_server
    context = browser.new_context(base_url=f"http://{server.host}")
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("demo")
    page.get_by_label("Password").fill("demo-password")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"http://{server.host}/")
    create_thread(page, agent="echo", title="Crash")
    send(page, numbered_words(300))  # 15 s at the demo echo's 20 words/s

    # More than one checkpoint interval (1 s here) after `early` was shown.
    early = wait_for_words(page, 30)
    wait_for_words(page, 60)
    server.kill(signal.SIGKILL)
    server.start(port=server.port)

    expect_failed_with_text(page, early)  # the page reconnected by itself
    page.reload()
    wait_connected(page)
    expect_failed_with_text(page, early)
    context.close()
