"""Agent teams in the web UI (issue 16): the owner sets a round-robin team on
the Settings page; during the team's run a line says who has the floor and
which turn it is, for the owner and for an observer, and Stop ends the whole
chain, not just the turn. Screenshots go to tests/artifacts/teams-*.png.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_agents_ui import add_agent
from tests.browser.test_chat_ui import create_thread, send, wait_connected

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server_setup() -> str:
    """Two echo agents that answer at a readable pace (a turn takes seconds)."""
    return """
from agents.models import AgentConfig
for name in ("alpha", "beta"):
    AgentConfig.objects.create(
        name=name, provider="echo", extra_params={"tokens_per_second": 8}
    )
"""


def set_team(page: Page, path: str, *, max_turns: int) -> None:
    page.goto(path + "settings/")
    page.get_by_label("Policy", exact=True).select_option("round_robin")
    page.get_by_label("Turn limit").fill(str(max_turns))
    page.get_by_role("button", name="Save team").click()
    expect(page.get_by_text("round robin team")).to_be_visible()


def test_the_floor_line_follows_the_turns_and_stop_ends_the_chain(
    open_as, artifacts_dir
):
    owner = open_as("owner")
    path = create_thread(
        owner, agent="alpha", title="A team", share={"observer": "observer"}
    )
    add_agent(owner, path, "beta")
    set_team(owner, path, max_turns=4)
    observer = open_as("observer")
    observer.goto(path)
    wait_connected(observer)
    owner.goto(path)
    wait_connected(owner)
    floor = owner.locator("#team-floor")
    expect(floor).to_be_hidden()

    send(owner, "one two three four five six seven eight nine ten")
    expect(floor).to_have_text("alpha has the floor (turn 1 of 4)")
    expect(observer.locator("#team-floor")).to_have_text(
        "alpha has the floor (turn 1 of 4)"
    )
    expect(floor).to_have_text("beta has the floor (turn 2 of 4)", timeout=10_000)
    expect(owner.locator("li.msg-agent")).to_have_count(2)
    expect(owner.locator("li.msg-agent").nth(1).locator(".msg-author")).to_have_text(
        "beta"
    )
    owner.screenshot(path=str(artifacts_dir / "teams-floor.png"), full_page=True)

    owner.locator("#stop-button").click()
    expect(floor).to_have_text("The team stopped: turn 2 was cancelled.")
    expect(floor).to_have_attribute("data-ended", "true")
    expect(observer.locator("#team-floor")).to_have_text(
        "The team stopped: turn 2 was cancelled."
    )
    expect(owner.locator("li.msg-agent").nth(1)).to_have_attribute(
        "data-status", "cancelled"
    )
    expect(owner.locator("#stop-button")).to_be_hidden()
    # The chain is over: no third turn started (the floor line would say so).
    expect(owner.locator("li.msg-agent")).to_have_count(2)
    owner.screenshot(path=str(artifacts_dir / "teams-stopped.png"), full_page=True)
    observer.screenshot(path=str(artifacts_dir / "teams-observer.png"), full_page=True)
