"""The web UI when the owner changes someone's access while their page is open:
a demoted participant's page turns read-only in place (and back), a removed
member's page stops and says why. No reload."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_chat_ui import create_thread, send, wait_connected

pytestmark = pytest.mark.browser


def share(owner, path: str, username: str, role: str) -> None:
    owner.goto(path + "settings/")
    owner.get_by_label("Username").fill(username)
    owner.get_by_label("Role").select_option(role)
    owner.get_by_role("button", name="Share").click()
    expect(owner.get_by_text(f"Shared with {username} as {role}.")).to_be_visible()


def test_demotion_and_removal_reach_an_open_page(open_as, artifacts_dir):
    owner = open_as("owner")
    path = create_thread(
        owner, agent="echo", title="Access", share={"participant": "participant"}
    )
    participant = open_as("participant")
    participant.goto(path)
    wait_connected(participant)
    box = participant.get_by_label(re.compile("^Message to"))
    expect(box).to_be_enabled()

    share(owner, path, "participant", "observer")
    expect(box).to_be_disabled()
    expect(participant.get_by_text("You are now an observer")).to_be_visible()
    expect(participant.locator("#role-label")).to_have_text("you are an observer")

    share(owner, path, "participant", "participant")
    expect(box).to_be_enabled()
    send(participant, "back to writing")
    expect(participant.locator("li.msg-mine")).to_have_count(1)

    owner.goto(path + "settings/")
    owner.get_by_role("button", name="Remove participant").click()
    expect(participant.locator("#connection")).to_have_attribute(
        "data-state", "offline"
    )
    expect(
        participant.get_by_text("You no longer have access to this chat.").first
    ).to_be_visible()
    expect(box).to_be_disabled()
    participant.screenshot(path=str(artifacts_dir / "access-removed.png"))
