"""Several agents in one chat, in the web UI (issue 16): the owner adds an agent
in Settings, `@` in the composer offers the chat's agents (mouse and
keyboard), every reply shows its agent's name and initials on a colour of its
own, and other people's messages sit on the left with their names. Screenshots
go to tests/artifacts/agents-*.png.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_chat_ui import create_thread, reply, wait_connected

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server_setup() -> str:
    """Two echo agents that answer at once, and a planner for the list."""
    return """
from agents.models import AgentConfig
for name in ("alpha", "beta", "code-reviewer"):
    AgentConfig.objects.create(
        name=name, provider="echo", extra_params={"tokens_per_second": 0}
    )
"""


def composer(page: Page):
    return page.get_by_label(re.compile("^Message to"))


def options(page: Page):
    return page.locator("#mention-list [role=option]")


def option_names(page: Page):
    return page.locator("#mention-list [role=option] .mention-name")


def avatar_colour(item) -> str:
    return item.locator(".msg-meta .avatar").evaluate(
        "(node) => getComputedStyle(node).backgroundColor"
    )


def add_agent(page: Page, path: str, name: str) -> None:
    page.goto(path + "settings/")
    page.get_by_label("Add an agent").select_option(name)
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.get_by_text(f"{name} joined the chat.")).to_be_visible()


def test_mentions_autocomplete_and_replies_show_their_agent(open_as, artifacts_dir):
    owner = open_as("owner")
    path = create_thread(
        owner, agent="alpha", title="Two agents", share={"participant": "participant"}
    )
    add_agent(owner, path, "beta")
    add_agent(owner, path, "code-reviewer")
    expect(owner.locator(".agent-list li")).to_have_count(3)
    owner.goto(path)
    wait_connected(owner)
    expect(owner.locator("#agents-label")).to_have_text("alpha, beta, code-reviewer")

    # `@` lists the chat's agents, the default marked; typing narrows them.
    box = composer(owner)
    box.click()
    box.press_sequentially("@")
    expect(owner.locator("#mention-list")).to_be_visible()
    expect(option_names(owner)).to_have_text(["@alpha", "@beta", "@code-reviewer"])
    expect(options(owner).first).to_contain_text("default")
    expect(options(owner).first).to_have_attribute("aria-selected", "true")
    expect(options(owner).nth(2).locator(".avatar")).to_have_text("CR")
    owner.screenshot(path=str(artifacts_dir / "agents-autocomplete.png"))
    box.press_sequentially("b")
    expect(option_names(owner)).to_have_text(["@beta"])
    box.press("Enter")  # picks, does not send
    expect(owner.locator("#mention-list")).to_be_hidden()
    expect(box).to_have_value("@beta ")
    expect(owner.locator("li.msg-user")).to_have_count(0)

    box.press_sequentially("hello from beta")
    box.press("Enter")
    expect(box).to_have_value("")
    first = reply(owner, 0)
    expect(first).to_have_attribute("data-status", "completed")
    expect(first.locator(".msg-author")).to_have_text("beta")
    expect(first.locator(".avatar")).to_have_text("BE")
    expect(first.locator(".msg-body")).to_have_text("hello from beta")

    # No mention: the default agent answers.
    box.press_sequentially("and the default")
    box.press("Enter")
    second = reply(owner, 1)
    expect(second).to_have_attribute("data-status", "completed")
    expect(second.locator(".msg-author")).to_have_text("alpha")
    expect(second.locator(".avatar")).to_have_text("AL")
    assert avatar_colour(first) != avatar_colour(second)

    # The keyboard: arrows move, Tab picks, a second mention is offered too,
    # Escape closes without picking.
    box.press_sequentially("@")
    box.press("ArrowDown")
    box.press("ArrowDown")
    expect(options(owner).nth(2)).to_have_attribute("aria-selected", "true")
    expect(box).to_have_attribute("aria-activedescendant", "mention-option-2")
    box.press("Tab")
    expect(box).to_have_value("@code-reviewer ")
    box.press_sequentially("@al")
    expect(option_names(owner)).to_have_text(["@alpha"])
    box.press("Escape")
    expect(owner.locator("#mention-list")).to_be_hidden()
    expect(box).to_have_value("@code-reviewer @al")
    box.fill("")
    # Not at the start: an `@` later in the text offers nothing.
    box.press_sequentially("mail me @")
    expect(owner.locator("#mention-list")).to_be_hidden()
    box.fill("")

    # Both agents of one message answer in turn, each under its own name.
    box.press_sequentially("@alpha @beta both of you")
    box.press("Enter")
    expect(owner.locator("li.msg-agent[data-status=completed]")).to_have_count(4)
    expect(owner.locator("li.msg-agent .msg-author")).to_have_text(
        ["beta", "alpha", "alpha", "beta"]
    )
    owner.screenshot(path=str(artifacts_dir / "agents-replies.png"), full_page=True)

    # The participant sees the owner's messages on the left, named, and the
    # replies with their agents, after a reload too.
    participant = open_as("participant")
    participant.goto(path)
    wait_connected(participant)
    for page_state in ("live", "reloaded"):
        expect(participant.locator("li.msg-agent .msg-author")).to_have_text(
            ["beta", "alpha", "alpha", "beta"]
        )
        others = participant.locator("li.msg-user:not(.msg-mine)")
        expect(others).to_have_count(3)
        expect(others.first.locator(".msg-author")).to_have_text("owner")
        expect(others.first.locator(".avatar")).to_have_text("OW")
        list_box = participant.locator("#messages").bounding_box()
        message_box = others.first.bounding_box()
        assert message_box["x"] - list_box["x"] < 24, (page_state, message_box)
        if page_state == "live":
            participant.reload()
            wait_connected(participant)

    composer(participant).press_sequentially("mine, on the right")
    composer(participant).press("Enter")
    mine = participant.locator("li.msg-mine")
    expect(mine).to_have_count(1)
    list_box = participant.locator("#messages").bounding_box()
    mine_box = mine.bounding_box()
    assert (
        list_box["x"] + list_box["width"] - (mine_box["x"] + mine_box["width"]) < 24
    ), mine_box
    expect(participant.locator("li.msg-agent")).to_have_count(5)
    expect(participant.locator("li.msg-agent").nth(4)).to_have_attribute(
        "data-agent", "alpha"
    )
    participant.screenshot(
        path=str(artifacts_dir / "agents-participant.png"), full_page=True
    )


def test_an_unknown_mention_explains_which_agents_there_are(open_as):
    owner = open_as("owner")
    create_thread(owner, agent="alpha", title="Unknown mention")
    box = composer(owner)
    box.fill("@nobody are you there")
    box.press("Escape")
    box.press("Enter")
    alert = owner.locator("#alerts")
    expect(alert).to_contain_text("No agent named 'nobody' in this thread")
    expect(alert).to_contain_text("@alpha")
    expect(box).to_have_value("@nobody are you there")  # nothing typed is lost


def test_an_agent_added_while_the_chat_is_open_is_offered_at_once(open_as):
    owner = open_as("owner")
    path = create_thread(
        owner, agent="alpha", title="Growing", share={"participant": "participant"}
    )
    participant = open_as("participant")
    participant.goto(path)
    wait_connected(participant)
    expect(participant.locator("#agents-label")).to_have_text("alpha")

    add_agent(owner, path, "beta")
    expect(participant.locator("#agents-label")).to_have_text("alpha, beta")
    box = composer(participant)
    box.click()
    box.press_sequentially("@")
    expect(option_names(participant)).to_have_text(["@alpha", "@beta"])
    box.press_sequentially("beta hi")
    expect(participant.locator("#mention-list")).to_be_hidden()
    box.press("Enter")
    expect(reply(participant).locator(".msg-author")).to_have_text("beta")
    expect(reply(participant)).to_have_attribute("data-status", "completed")
