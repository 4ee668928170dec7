"""Tool steps and approvals in the web UI (issue 15): each tool call shows as a
collapsible step (name, arguments, result) before the reply's text, live and
after a reload; an approval is a prompt with Approve / Deny for writers, seen
without buttons by observers, gone for everyone once one writer answered; an
error result looks different from a result.

Two kinds of agent drive the tools: the offline `weather` agent written in
Python (its `get_weather` tool, behind an approval here: approved) and `openai`
agents whose model is the loopback fake OpenAI server, which asks for
`calculate` (the error result, and the denied approval: the model gets the
denial as the tool's result and answers with it). Screenshots of each state go
to tests/artifacts/.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_chat_ui import PHONE, create_thread, reply, send, wait_connected
from tests.fakes import FakeOpenAIServer, FakeToolCall, Scenario

pytestmark = pytest.mark.browser

CALC = FakeToolCall("calculate", ('{"expression": ', '"6*7"}'), id="call_calc")
# Long and without a space: it must wrap, not widen the page, on a phone.
LONG_EXPRESSION = "1/0" + "+1" * 60
BAD_CALC = FakeToolCall(
    "calculate", (f'{{"expression": "{LONG_EXPRESSION}"}}',), id="call_bad"
)


@pytest.fixture(scope="module")
def model_server():
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture(scope="module")
def server_setup(model_server) -> str:
    """The agents these tests use, made in the server's database."""
    return f"""
from agents.models import AgentConfig
AgentConfig.objects.create(
    name="weather", provider="python", model="weather",
    description="Tells the weather after a writer approves.",
    approval_required=["get_weather"], input_timeout_seconds=60,
)
AgentConfig.objects.create(
    name="calc", provider="openai", model="model-test",
    base_url={model_server.base_url!r}, tools=["calculate"],
    description="A fake model that calculates.",
)
AgentConfig.objects.create(
    name="calc-approved", provider="openai", model="model-test",
    base_url={model_server.base_url!r}, tools=["calculate"],
    approval_required=["calculate"], input_timeout_seconds=60,
    description="A fake model that calculates once a writer approves.",
)
"""


def steps(page: Page, index: int = 0):
    return reply(page, index).locator(".tool-step")


def toggle(step):
    return step.locator(".tool-toggle")


def shoot(page: Page, artifacts_dir, name: str) -> None:
    page.screenshot(path=str(artifacts_dir / f"tools-{name}.png"), full_page=True)


def expect_step(step, *, name: str, arguments: str, result: str, state: str):
    expect(step).to_have_attribute("data-state", state)
    expect(step.locator(".tool-name")).to_have_text(name)
    expect(step.locator(".tool-arguments")).to_have_text(arguments)
    expect(step.locator(".tool-output")).to_have_text(result)


def expect_no_horizontal_overflow(page: Page) -> None:
    overflow = page.evaluate(
        """() => {
          const wide = [];
          const limit = document.documentElement.clientWidth;
          document.querySelectorAll('.tool-step, .tool-step *, .approval-request, .approval-request *')
            .forEach((node) => {
              const box = node.getBoundingClientRect();
              if (box.width && box.right > limit + 0.5) wide.push(node.className);
            });
          return {wide, scroll: document.documentElement.scrollWidth, limit};
        }"""
    )
    assert overflow["wide"] == [], overflow
    assert overflow["scroll"] <= overflow["limit"], overflow


# --- tests ------------------------------------------------------------------------


def test_a_tool_step_shows_in_order_collapsible_and_after_a_reload(
    open_as, model_server, artifacts_dir
):
    model_server.script(
        Scenario(tokens=("Let me compute. ",), tool_calls=(CALC,)),
        Scenario(answer_tool_results="The answer is "),
    )
    owner = open_as("owner")
    create_thread(owner, agent="calc", title="Six times seven")
    send(owner, "What is 6 times 7?")

    item = reply(owner)
    expect(item).to_have_attribute("data-status", "completed")
    expect(item.locator(".msg-body")).to_contain_text("The answer is 42")
    for page_state in ("live", "reloaded"):
        item = reply(owner)
        step = steps(owner).first
        expect(steps(owner)).to_have_count(1)
        # Collapsed: the name and how it ended, not the details.
        expect(toggle(step)).to_have_attribute("aria-expanded", "false")
        expect(step.locator(".tool-name")).to_have_text("calculate")
        expect(step.locator(".tool-status")).to_have_text("done")
        expect(step.locator(".tool-detail")).to_be_hidden()
        # The step comes before the reply's text.
        assert item.evaluate(
            """(li) => {
              const step = li.querySelector('.tool-step');
              const body = li.querySelector('.msg-body');
              return !!(step.compareDocumentPosition(body) & Node.DOCUMENT_POSITION_FOLLOWING);
            }"""
        )
        shoot(owner, artifacts_dir, f"step-collapsed-{page_state}")

        toggle(step).click()
        expect(toggle(step)).to_have_attribute("aria-expanded", "true")
        expect(step.locator(".tool-detail")).to_be_visible()
        expect_step(
            step,
            name="calculate",
            arguments='{\n  "expression": "6*7"\n}',
            result="42",
            state="completed",
        )
        expect(toggle(step)).to_be_focused()
        shoot(owner, artifacts_dir, f"step-expanded-{page_state}")

        # The keyboard toggles it too, and focus stays on the toggle.
        owner.keyboard.press("Enter")
        expect(toggle(step)).to_have_attribute("aria-expanded", "false")
        expect(step.locator(".tool-detail")).to_be_hidden()
        owner.keyboard.press("Space")
        expect(toggle(step)).to_have_attribute("aria-expanded", "true")
        expect(toggle(step)).to_be_focused()

        if page_state == "live":
            owner.reload()
            wait_connected(owner)
            expect(reply(owner)).to_have_attribute("data-status", "completed")

    # The model got the result back.
    assert model_server.tool_results_of(model_server.last_request.body) == ["42"]


def _approval_thread(open_as, agent: str):
    owner = open_as("owner")
    path = create_thread(
        owner,
        agent=agent,
        title=f"{agent}, approved?",
        share={"participant": "participant", "observer": "observer"},
    )
    participant = open_as("participant")
    participant.goto(path)
    wait_connected(participant)
    observer = open_as("observer", viewport=PHONE)
    observer.goto(path)
    wait_connected(observer)
    return owner, participant, observer


WEATHER_CALL = ("get_weather", '{\n  "city": "Oslo"\n}')
CALC_CALL = ("calculate", '{\n  "expression": "6*7"\n}')


def _expect_pending_approval(page: Page, call=WEATHER_CALL, *, writer: bool):
    prompt = reply(page).locator(".approval-request")
    expect(prompt).to_be_visible()
    expect(prompt.locator(".approval-tool")).to_have_text(call[0])
    expect(prompt.locator(".tool-arguments")).to_have_text(call[1])
    approve = prompt.get_by_role("button", name="Approve")
    deny = prompt.get_by_role("button", name="Deny")
    if writer:
        expect(approve).to_be_enabled()
        expect(deny).to_be_enabled()
    else:
        expect(approve).to_have_count(0)
        expect(deny).to_have_count(0)
        expect(prompt.locator(".input-note")).to_have_text(
            "Only the owner and participants can approve."
        )
    step = steps(page).first
    expect(step).to_have_attribute("data-state", "awaiting")
    expect(step.locator(".tool-status")).to_have_text("waiting for approval")
    return prompt


def test_a_writer_approves_and_the_others_see_it_answered(open_as, artifacts_dir):
    owner, participant, observer = _approval_thread(open_as, "weather")
    send(owner, "What is the weather in Oslo?")

    _expect_pending_approval(owner, writer=True)
    participant_prompt = _expect_pending_approval(participant, writer=True)
    _expect_pending_approval(observer, writer=False)
    shoot(owner, artifacts_dir, "approval-writer")
    shoot(observer, artifacts_dir, "approval-observer-phone")
    expect_no_horizontal_overflow(observer)

    # A page opened now sees the same pending approval (from the snapshot).
    participant.reload()
    wait_connected(participant)
    participant_prompt = _expect_pending_approval(participant, writer=True)

    participant_prompt.get_by_role("button", name="Approve").click()
    # The pressed button goes away with the prompt; focus moves to what replaces it.
    expect(reply(participant).locator(".input-closed")).to_be_focused()
    for page in (owner, participant, observer):
        item = reply(page)
        expect(item.locator(".approval-request")).to_have_count(0)
        expect(item.get_by_role("button", name="Approve")).to_have_count(0)
        expect(item.locator(".input-closed")).to_contain_text("Approved by participant")
        expect(item).to_have_attribute("data-status", "completed")
        expect(item.locator(".msg-body")).to_have_text(
            re.compile(r"^The weather in Oslo: \w+, -?\d+ °C\s*$")
        )
        toggle(steps(page).first).click()
        expect_step(
            steps(page).first,
            name="get_weather",
            arguments='{\n  "city": "Oslo"\n}',
            result=re.compile(r"^Oslo: \w+, -?\d+ °C\s*$"),
            state="completed",
        )
    shoot(owner, artifacts_dir, "approval-approved")
    shoot(observer, artifacts_dir, "approval-approved-phone")
    expect_no_horizontal_overflow(observer)

    observer.reload()
    wait_connected(observer)
    item = reply(observer)
    expect(item.locator(".input-closed")).to_contain_text("Approved by participant")
    expect(steps(observer).first).to_have_attribute("data-state", "completed")


def test_a_writer_denies_and_the_reply_goes_on(open_as, model_server, artifacts_dir):
    model_server.script(Scenario.calls(CALC), Scenario.tool_results("Result: "))
    owner, participant, observer = _approval_thread(open_as, "calc-approved")
    send(owner, "What is 6 times 7?")

    owner_prompt = _expect_pending_approval(owner, CALC_CALL, writer=True)
    _expect_pending_approval(participant, CALC_CALL, writer=True)
    _expect_pending_approval(observer, CALC_CALL, writer=False)

    owner_prompt.get_by_role("button", name="Deny").click()
    denial = "A person in the thread denied this tool call."
    for page in (owner, participant, observer):
        item = reply(page)
        expect(item.get_by_role("button", name="Deny")).to_have_count(0)
        expect(item.locator(".input-closed")).to_contain_text("Denied by owner")
        expect(item).to_have_attribute("data-status", "completed")
        # The model got the denial as the tool's result and answered with it.
        expect(item.locator(".msg-body")).to_contain_text(denial)
        step = steps(page).first
        expect(step).to_have_attribute("data-state", "denied")
        expect(step.locator(".tool-status")).to_have_text("denied")
        toggle(step).click()
        expect(step.locator(".tool-output")).to_have_text(denial)
        expect(step.locator(".tool-output")).to_have_class(
            re.compile(r"\btool-error\b")
        )
    shoot(participant, artifacts_dir, "approval-denied")
    assert model_server.tool_results_of(model_server.last_request.body) == [
        f"Error: {denial}"
    ]

    participant.reload()
    wait_connected(participant)
    step = steps(participant).first
    expect(step).to_have_attribute("data-state", "denied")
    expect(reply(participant).locator(".input-closed")).to_contain_text(
        "Denied by owner"
    )


def test_an_error_result_looks_different_from_a_result(
    open_as, model_server, artifacts_dir
):
    model_server.script(
        Scenario.calls(CALC, BAD_CALC),
        Scenario.tool_results("Results: "),
    )
    owner = open_as("owner", viewport=PHONE)
    create_thread(owner, agent="calc", title="One fails")
    send(owner, "Compute 6*7 and 1/0.")
    expect(reply(owner)).to_have_attribute("data-status", "completed")

    for page_state in ("live", "reloaded"):
        good, bad = steps(owner).nth(0), steps(owner).nth(1)
        expect(steps(owner)).to_have_count(2)
        toggle(good).click()
        toggle(bad).click()
        expect(good).to_have_attribute("data-state", "completed")
        expect(bad).to_have_attribute("data-state", "failed")
        expect(good.locator(".tool-status")).to_have_text("done")
        expect(bad.locator(".tool-status")).to_have_text("error")
        expect(good.locator(".tool-result-label")).to_have_text("Result")
        expect(bad.locator(".tool-result-label")).to_have_text("Error")
        expect(good.locator(".tool-output")).to_have_text("42")
        expect(bad.locator(".tool-output")).to_contain_text("zero")
        expect(bad.locator(".tool-arguments")).to_contain_text(LONG_EXPRESSION)
        colours = [
            step.locator(".tool-output").evaluate(
                "(node) => [getComputedStyle(node).color,"
                " getComputedStyle(node).borderLeftColor]"
            )
            for step in (good, bad)
        ]
        assert colours[0] != colours[1], colours
        expect_no_horizontal_overflow(owner)
        shoot(owner, artifacts_dir, f"error-phone-{page_state}")
        reply(owner).screenshot(
            path=str(artifacts_dir / f"tools-error-phone-{page_state}-reply.png")
        )
        if page_state == "live":
            owner.reload()
            wait_connected(owner)
            expect(reply(owner)).to_have_attribute("data-status", "completed")
