"""Agents that act: the tool loop through the real SDKs against loopback model
servers, the built-in tools, failures of tools, approvals, and the history.

A fake model server (tests/fakes/llm_servers.py) asks for tools in its own wire
format and answers with the results it was sent back, so a test sees what a
user would: the tool steps arrive as frames on every socket, in order, and the
reply uses the tool's output.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from rest_framework.test import APIClient

from agents.models import AgentConfig, Run, RunToolStep
from agents.selectors import tool_steps_by_run
from agents.tools import ToolContext, get_tool, make_tool, tool
from agents.tools.builtin import CalculationError, evaluate
from chat.models import Role, Thread, ThreadMember
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, FakeToolCall, Scenario

KEY_ENV = "PARLEY_TEST_TOOLS_KEY"
KEY = "sk-parley-tools-5e4d3c2b1a09f8e7"

# --- tools registered for these tests --------------------------------------------

_state: dict = {}


@tool
def broken_tool(reason: str) -> str:
    """Always raises.

    Args:
        reason: What to say.
    """
    raise RuntimeError(f"broken on purpose: {reason}")


@tool
def huge_tool() -> str:
    """Returns far more than a tool may."""
    return "x" * (65 * 1024)


@tool
async def together_tool(label: str) -> str:
    """Finishes only while another call of it runs at the same time.

    Args:
        label: Echoed back.
    """
    barrier = _state["barrier"]
    await asyncio.wait_for(barrier.wait(), 5)
    return f"together {label}"


@tool
async def slow_tool() -> str:
    """Runs until cancelled (or for a minute)."""
    _state["slow_started"].set()
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        _state["slow_cancelled"] = True
        raise
    return "slept"


@tool
def leaky_tool(secret_name: str) -> str:
    """Returns the value of an environment variable (a badly written tool).

    Args:
        secret_name: The variable.
    """
    import os

    return f"the value is {os.environ.get(secret_name)}"


# --- unit: the registry and the built-ins ------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [("6*7", 42), ("(2+3)**2/5", 5.0), ("-7 // 2", -4), ("sqrt(16) + pi*0", 4.0)],
)
def test_calculate_evaluates_arithmetic(expression, value):
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    "expression",
    ["__import__('os').system('true')", "9**9**9", "1/0", "a+1", "open('x')", ""],
)
def test_calculate_refuses_anything_but_arithmetic(expression):
    with pytest.raises(CalculationError):
        evaluate(expression)


async def test_the_calculate_tool_answers_42_for_six_times_seven():
    assert await get_tool("calculate").call({"expression": "6*7"}, None) == 42


def test_a_tools_schema_comes_from_its_hints_and_docstring():
    def forecast(city: str, days: int = 3, context: ToolContext | None = None) -> str:
        """The weather to come.

        Args:
            city: Where.
            days: How many days ahead.
        """
        return city

    made = make_tool(forecast)
    assert made.description == "The weather to come."
    assert made.parameters["required"] == ["city"]
    assert made.parameters["properties"]["city"] == {
        "type": "string",
        "description": "Where.",
    }
    assert made.parameters["properties"]["days"]["type"] == "integer"
    assert made.parameters["properties"]["days"]["default"] == 3


async def test_sync_and_async_tools_both_run_and_arguments_are_checked():
    assert await get_tool("clock").call({}, None)
    from agents.tools import ToolArgumentsError

    with pytest.raises(ToolArgumentsError):
        await get_tool("calculate").call({"expr": "1"}, None)


# --- end to end --------------------------------------------------------------------


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY


@pytest.fixture(params=["openai", "anthropic"])
def model_server(request):
    server_class = (
        FakeOpenAIServer if request.param == "openai" else FakeAnthropicServer
    )
    with server_class() as server:
        server.provider = request.param
        yield server


@pytest.fixture
def openai_server():
    with FakeOpenAIServer() as server:
        server.provider = "openai"
        yield server


def make_thread(users, server, **agent_fields) -> Thread:
    agent = AgentConfig.objects.create(
        name=f"tooled-{server.provider}",
        provider=server.provider,
        model="model-test",
        base_url=server.base_url,
        api_key_env=KEY_ENV,
        **agent_fields,
    )
    thread = Thread.objects.create(owner=users[Role.OWNER], agent=agent, title="t")
    ThreadMember.objects.create(
        thread=thread, user=users[Role.PARTICIPANT], role=Role.PARTICIPANT
    )
    ThreadMember.objects.create(
        thread=thread, user=users[Role.OBSERVER], role=Role.OBSERVER
    )
    return thread


async def joined(client):
    await client.join()
    return client


def until_complete(frame) -> bool:
    return frame["type"] == "state_complete"


def tool_frames(frames) -> list[tuple[str, dict]]:
    return [
        (frame["content"]["kind"], frame["content"]["data"])
        for frame in frames
        if frame["type"] == "state"
        and frame["content"]["kind"] in ("tool_call", "tool_result")
    ]


def events(frames) -> list[dict]:
    return [frame for frame in frames if frame["event_id"] is not None]


def no_key_in(frames) -> None:
    for frame in frames:
        assert KEY not in json.dumps(frame), frame


@database_sync_to_async
def tool_steps(run_id) -> list[RunToolStep]:
    return list(RunToolStep.objects.filter(run_id=run_id))


@database_sync_to_async
def stored_run(run_id) -> Run:
    return Run.objects.get(pk=run_id)


CALC = FakeToolCall("calculate", ('{"expression": ', '"6*7"}'), id="call_calc")


@pytest.mark.django_db(transaction=True)
async def test_a_run_asks_for_calculate_then_answers_with_its_result(
    users, model_server, key, worker, client_for
):
    thread = await database_sync_to_async(make_thread)(
        users, model_server, tools=["calculate"]
    )
    model_server.script(
        Scenario(tokens=("Let me compute. ",), tool_calls=(CALC,), usage=(10, 4)),
        Scenario(answer_tool_results="The answer is ", usage=(20, 5)),
    )
    owner = await joined(client_for(thread.id, users[Role.OWNER]))
    watcher = await joined(client_for(thread.id, users[Role.OBSERVER]))

    await owner.send({"type": "message", "content": "What is 6 times 7?"})
    frames = await owner.receive_until(until_complete)
    watched = await watcher.receive_until(until_complete)

    assert tool_frames(frames) == [
        (
            "tool_call",
            {
                "id": "call_calc",
                "name": "calculate",
                "arguments": {"expression": "6*7"},
            },
        ),
        ("tool_result", {"id": "call_calc", "name": "calculate", "output": "42"}),
    ]
    done = frames[-1]["content"]
    assert done["status"] == "completed"
    assert done["text"] == "Let me compute. \n\nThe answer is 42"
    assert done["usage"] == {"input_tokens": 30, "output_tokens": 9}
    # The watching socket saw the same events in the same order.
    assert events(watched) == events(frames)
    # Text before the call went out before it; the answer after the result.
    kinds = [
        frame["type"] if frame["type"] != "state" else frame["content"]["kind"]
        for frame in events(frames)
    ]
    assert kinds.index("tool_call") > kinds.index("response")
    assert kinds.index("tool_result") < len(kinds) - 2
    # The model was offered the tool and got the result back in its format.
    first, second = model_server.wait_for_requests(2)
    assert model_server.tools_offered(first.body) == ["calculate"]
    assert model_server.tool_results_of(second.body) == ["42"]
    (step,) = await tool_steps(frames[-1]["run_id"])
    assert (step.name, step.arguments, step.output, step.status) == (
        "calculate",
        {"expression": "6*7"},
        "42",
        "completed",
    )
    # As the history shows it (agents/selectors.py).
    run_id = frames[-1]["run_id"]
    (shown,) = (await database_sync_to_async(tool_steps_by_run)(run_ids=[run_id]))[
        run_id
    ]
    assert shown == {
        **shown,
        "id": "call_calc",
        "name": "calculate",
        "arguments": {"expression": "6*7"},
        "status": "completed",
        "output": "42",
        "error": None,
    }
    assert shown["started_at"].endswith("Z") and shown["finished_at"]
    no_key_in(frames)


@pytest.mark.django_db(transaction=True)
async def test_two_calls_of_one_step_run_at_the_same_time(
    users, openai_server, key, worker, client_for
):
    _state["barrier"] = asyncio.Barrier(2)
    thread = await database_sync_to_async(make_thread)(
        users, openai_server, tools=["together_tool"]
    )
    openai_server.script(
        Scenario.calls(
            FakeToolCall("together_tool", ('{"label": "a"}',), id="call_a"),
            FakeToolCall("together_tool", ('{"label": "b"}',), id="call_b"),
        ),
        Scenario.tool_results("Both: "),
    )
    owner = await joined(client_for(thread.id, users[Role.OWNER]))

    await owner.send({"type": "message", "content": "Do both."})
    frames = await owner.receive_until(until_complete)

    steps = tool_frames(frames)
    assert [kind for kind, _ in steps[:2]] == ["tool_call", "tool_call"]
    results = {data["id"]: data for kind, data in steps if kind == "tool_result"}
    assert results["call_a"]["output"] == "together a"
    assert results["call_b"]["output"] == "together b"
    # Results go back in the order of the calls, whichever finished first.
    assert frames[-1]["content"]["text"] == "Both: together a; together b"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("call", "error_part"),
    [
        (FakeToolCall("broken_tool", ('{"reason": "x"}',)), "broken on purpose: x"),
        (FakeToolCall("huge_tool", ("{}",)), "too large"),
        (FakeToolCall("no_such_tool", ("{}",)), "no tool named 'no_such_tool'"),
        (FakeToolCall("calculate", ('{"expression": 1',)), "not a JSON object"),
        (FakeToolCall("calculate", ('{"expr": "1"}',)), "Invalid arguments"),
    ],
    ids=["raises", "huge", "unknown", "bad-json", "bad-arguments"],
)
async def test_a_failing_tool_gives_the_model_an_error_and_the_run_goes_on(
    users, openai_server, key, worker, client_for, call, error_part
):
    thread = await database_sync_to_async(make_thread)(
        users, openai_server, tools=["calculate", "broken_tool", "huge_tool"]
    )
    openai_server.script(Scenario.calls(call), Scenario.tool_results("Got: "))
    owner = await joined(client_for(thread.id, users[Role.OWNER]))

    await owner.send({"type": "message", "content": "Try it."})
    frames = await owner.receive_until(until_complete)

    (_, result) = tool_frames(frames)[-1]
    assert "output" not in result and error_part in result["error"]
    done = frames[-1]["content"]
    assert done["status"] == "completed"
    assert done["text"].startswith("Got: Error: ")
    assert (
        error_part in openai_server.tool_results_of(openai_server.last_request.body)[0]
    )


@pytest.mark.django_db(transaction=True)
async def test_a_tool_that_takes_too_long_is_an_error_result(
    users, openai_server, key, worker, client_for
):
    _state["slow_started"] = asyncio.Event()
    thread = await database_sync_to_async(make_thread)(
        users, openai_server, tools=["slow_tool"], tool_timeout_seconds=0.2
    )
    openai_server.script(
        Scenario.calls(FakeToolCall("slow_tool", ("{}",))), Scenario.tool_results()
    )
    owner = await joined(client_for(thread.id, users[Role.OWNER]))

    await owner.send({"type": "message", "content": "Sleep."})
    frames = await owner.receive_until(until_complete)

    (_, result) = tool_frames(frames)[-1]
    assert result["error"] == "The tool did not finish within 0.2 s."
    assert frames[-1]["content"]["status"] == "completed"


@pytest.mark.django_db(transaction=True)
async def test_a_slow_tool_is_announced_to_the_thread_once_while_it_runs(
    users, openai_server, key, worker, client_for, settings
):
    settings.PARLEY_SLOW_TOOL_NOTICE_SECONDS = 0.1
    _state["slow_started"] = asyncio.Event()
    thread = await database_sync_to_async(make_thread)(
        users, openai_server, tools=["slow_tool"], tool_timeout_seconds=0.5
    )
    openai_server.script(
        Scenario.calls(FakeToolCall("slow_tool", ("{}",))), Scenario.tool_results()
    )
    watcher = await joined(client_for(thread.id, users[Role.OBSERVER]))
    owner = await joined(client_for(thread.id, users[Role.OWNER]))

    await owner.send({"type": "message", "content": "Sleep."})
    frames = await watcher.receive_until(until_complete)

    notices = [
        frame["content"]["data"]
        for frame in frames
        if frame["type"] == "state" and frame["content"]["kind"] == "notice"
    ]
    assert [notice["code"] for notice in notices] == ["tool_slow"]
    assert "slow_tool" in notices[0]["message"]
    kinds = [f["content"]["kind"] for f in frames if f["type"] == "state"]
    assert kinds.index("tool_call") < kinds.index("notice") < kinds.index("tool_result")
    assert frames[-1]["content"]["status"] == "completed"  # it did not end the run


@pytest.mark.django_db(transaction=True)
async def test_past_max_tool_steps_the_run_fails_with_a_clear_code(
    users, model_server, key, worker, client_for
):
    thread = await database_sync_to_async(make_thread)(
        users, model_server, tools=["calculate"], max_tool_steps=2
    )
    model_server.script(Scenario.calls(CALC))  # it never stops asking
    owner = await joined(client_for(thread.id, users[Role.OWNER]))

    await owner.send({"type": "message", "content": "Loop."})
    frames = await owner.receive_until(until_complete)

    errors = [frame for frame in frames if frame["type"] == "error"]
    assert [error["content"]["code"] for error in errors] == ["tool_steps_exceeded"]
    assert frames[-1]["content"]["status"] == "failed"
    assert len([1 for kind, _ in tool_frames(frames) if kind == "tool_result"]) == 2
    assert len(model_server.requests) == 3


@pytest.mark.django_db(transaction=True)
async def test_cancel_stops_a_tool_mid_call(
    users, openai_server, key, worker, client_for
):
    _state["slow_started"] = asyncio.Event()
    _state["slow_cancelled"] = False
    thread = await database_sync_to_async(make_thread)(
        users, openai_server, tools=["slow_tool"]
    )
    openai_server.script(Scenario.calls(FakeToolCall("slow_tool", ("{}",))))
    owner = await joined(client_for(thread.id, users[Role.OWNER]))
    watcher = await joined(client_for(thread.id, users[Role.OBSERVER]))

    await owner.send({"type": "message", "content": "Sleep."})
    await watcher.receive_until(
        lambda f: f["type"] == "state" and f["content"]["kind"] == "tool_call"
    )
    await asyncio.wait_for(_state["slow_started"].wait(), 5)
    await owner.send({"type": "cancel", "content": None})
    frames = await watcher.receive_until(until_complete, timeout=5)

    assert frames[-1]["content"]["status"] == "cancelled"
    assert _state["slow_cancelled"] is True
    (step,) = await tool_steps(frames[-1]["run_id"])
    assert step.status == "cancelled"
    assert len(openai_server.requests) == 1  # the model was not called again


@pytest.mark.django_db(transaction=True)
async def test_a_tool_output_never_carries_the_provider_key(
    users, openai_server, key, worker, client_for
):
    thread = await database_sync_to_async(make_thread)(
        users, openai_server, tools=["leaky_tool"]
    )
    openai_server.script(
        Scenario.calls(
            FakeToolCall("leaky_tool", (json.dumps({"secret_name": KEY_ENV}),))
        ),
        Scenario.tool_results(),
    )
    owner = await joined(client_for(thread.id, users[Role.OWNER]))

    await owner.send({"type": "message", "content": "Leak."})
    frames = await owner.receive_until(until_complete)

    no_key_in(frames)
    assert KEY not in openai_server.last_request.raw_body.decode()
    (_, result) = tool_frames(frames)[-1]
    assert result["output"] == "the value is [redacted]"


# --- approvals ---------------------------------------------------------------------


async def approval_asked(client) -> dict:
    return await client.receive_type("input_request")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("approve", [True, False])
async def test_an_approval_is_asked_and_any_writer_answers_it(
    users, model_server, key, worker, client_for, approve
):
    thread = await database_sync_to_async(make_thread)(
        users, model_server, tools=["calculate"], approval_required=["calculate"]
    )
    model_server.script(Scenario.calls(CALC), Scenario.tool_results("Now: "))
    owner = await joined(client_for(thread.id, users[Role.OWNER]))
    participant = await joined(client_for(thread.id, users[Role.PARTICIPANT]))

    await owner.send({"type": "message", "content": "6*7?"})
    request = await approval_asked(participant)
    content = request["content"]
    assert content["kind"] == "approval"
    assert content["tool_call"] == {
        "id": "call_calc",
        "name": "calculate",
        "arguments": {"expression": "6*7"},
    }
    await participant.send(
        {
            "type": "input",
            "content": {
                "run_id": request["run_id"],
                "input_id": content["input_id"],
                "approve": approve,
            },
        }
    )
    frames = await owner.receive_until(until_complete)

    received = [
        f["content"]["data"]
        for f in frames
        if f["type"] == "state" and f["content"]["kind"] == "input_received"
    ]
    assert received == [
        {
            "input_id": content["input_id"],
            "by": "participant",
            "answer": "approved" if approve else "denied",
        }
    ]
    (_, result) = tool_frames(frames)[-1]
    if approve:
        assert result["output"] == "42"
        assert frames[-1]["content"]["text"] == "Now: 42"
    else:
        assert result["error"] == "A person in the thread denied this tool call."
        sent_back = model_server.tool_results_of(model_server.last_request.body)
        assert "denied" in sent_back[0]
    assert frames[-1]["content"]["status"] == "completed"


@pytest.mark.django_db(transaction=True)
async def test_no_answer_to_an_approval_is_a_denial(
    users, openai_server, key, worker, client_for
):
    thread = await database_sync_to_async(make_thread)(
        users,
        openai_server,
        tools=["calculate"],
        approval_required=["calculate"],
        input_timeout_seconds=1.0,
    )
    openai_server.script(Scenario.calls(CALC), Scenario.tool_results())
    owner = await joined(client_for(thread.id, users[Role.OWNER]))

    await owner.send({"type": "message", "content": "6*7?"})
    frames = await owner.receive_until(until_complete)

    assert any(
        f["type"] == "state" and f["content"]["kind"] == "input_timeout" for f in frames
    )
    (_, result) = tool_frames(frames)[-1]
    assert "did not run" in result["error"]


@pytest.mark.django_db(transaction=True)
async def test_an_approval_needs_approve_and_a_question_needs_text(
    users, openai_server, key, worker, client_for
):
    thread = await database_sync_to_async(make_thread)(
        users, openai_server, tools=["calculate"], approval_required=["calculate"]
    )
    openai_server.script(Scenario.calls(CALC), Scenario.tool_results())
    owner = await joined(client_for(thread.id, users[Role.OWNER]))
    observer = await joined(client_for(thread.id, users[Role.OBSERVER]))

    await owner.send({"type": "message", "content": "6*7?"})
    request = await approval_asked(owner)
    answer = {"run_id": request["run_id"], "input_id": request["content"]["input_id"]}
    await owner.send({"type": "input", "content": {**answer, "text": "yes"}})
    assert (await owner.receive_type("error"))["content"]["code"] == "input_mismatch"
    await owner.send(
        {"type": "input", "content": {**answer, "approve": True, "text": "y"}}
    )
    assert (await owner.receive_type("error"))["content"]["code"] == "invalid_frame"
    await observer.send({"type": "input", "content": {**answer, "approve": True}})
    assert (await observer.receive_type("error"))["content"]["code"] == "read_only"

    await owner.send({"type": "input", "content": {**answer, "approve": True}})
    frames = await owner.receive_until(until_complete)
    assert tool_frames(frames)[-1][1]["output"] == "42"


# --- ask_thread, history -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_ask_thread_asks_the_people_and_gives_the_model_the_answer(
    users, openai_server, key, worker, client_for
):
    thread = await database_sync_to_async(make_thread)(
        users, openai_server, tools=["ask_thread"]
    )
    openai_server.script(
        Scenario.calls(
            FakeToolCall("ask_thread", ('{"question": "Which city?"}',), id="call_q")
        ),
        Scenario.tool_results("City: "),
    )
    owner = await joined(client_for(thread.id, users[Role.OWNER]))
    participant = await joined(client_for(thread.id, users[Role.PARTICIPANT]))

    await owner.send({"type": "message", "content": "Weather?"})
    request = await participant.receive_type("input_request")
    assert request["content"]["kind"] == "question"
    assert request["content"]["question"] == "Which city?"
    await participant.send(
        {"type": "input", "content": {"run_id": request["run_id"], "text": "Oslo"}}
    )
    frames = await owner.receive_until(until_complete)

    assert frames[-1]["content"]["text"] == "City: Oslo"


@pytest.mark.django_db(transaction=True)
async def test_later_turns_send_the_tool_steps_back_in_the_providers_format(
    users, model_server, key, worker, client_for
):
    thread = await database_sync_to_async(make_thread)(
        users, model_server, tools=["calculate"]
    )
    model_server.script(
        Scenario.calls(CALC, text=["Computing. "]),
        Scenario.tool_results("It is "),
        Scenario.reply(["Sure."]),
    )
    owner = await joined(client_for(thread.id, users[Role.OWNER]))
    await owner.send({"type": "message", "content": "6*7?"})
    await owner.receive_until(until_complete)

    await owner.send({"type": "message", "content": "Thanks."})
    await owner.receive_until(until_complete)

    body = model_server.last_request.body
    messages = body["messages"]
    if model_server.provider == "openai":
        roles = [m["role"] for m in messages if m["role"] != "system"]
        assert roles == ["user", "assistant", "tool", "assistant", "user"]
        assert messages[-4]["tool_calls"][0]["function"] == {
            "name": "calculate",
            "arguments": '{"expression": "6*7"}',
        }
        assert messages[-4]["content"] == "Computing."
        assert messages[-3] == {
            "role": "tool",
            "tool_call_id": "call_calc",
            "content": "42",
        }
        assert messages[-2]["content"] == "It is 42"
    else:
        roles = [m["role"] for m in messages]
        assert roles == ["user", "assistant", "user", "assistant", "user"]
        assert messages[1]["content"] == [
            {"type": "text", "text": "Computing."},
            {
                "type": "tool_use",
                "id": "call_calc",
                "name": "calculate",
                "input": {"expression": "6*7"},
            },
        ]
        assert messages[2]["content"] == [
            {"type": "tool_result", "tool_use_id": "call_calc", "content": "42"}
        ]
        assert messages[3]["content"] == "It is 42"


# --- config validation ----------------------------------------------------------------


@pytest.mark.django_db
def test_the_api_refuses_unknown_tool_names(users):
    client = APIClient()
    client.force_authenticate(users[Role.STAFF])
    base = {"name": "calc", "provider": "echo"}

    response = client.post(
        "/api/agents/", {**base, "tools": ["calculate", "nope"]}, format="json"
    )
    assert response.status_code == 400
    assert "nope" in json.dumps(response.json())

    response = client.post(
        "/api/agents/",
        {**base, "tools": ["clock"], "approval_required": ["calculate"]},
        format="json",
    )
    assert response.status_code == 400
    assert "approval_required" in json.dumps(response.json())

    response = client.post(
        "/api/agents/",
        {
            **base,
            "tools": ["calculate", "ask_thread"],
            "approval_required": ["calculate"],
            "max_tool_steps": 3,
            "tool_timeout_seconds": 5,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    agent = response.json()
    assert agent["tools"] == ["calculate", "ask_thread"]
    assert agent["max_tool_steps"] == 3


@pytest.mark.django_db
def test_the_admin_model_validation_refuses_unknown_tools():
    from django.core.exceptions import ValidationError

    agent = AgentConfig(name="x", provider="echo", tools=["calculate", "ghost"])
    with pytest.raises(ValidationError) as error:
        agent.full_clean()
    assert "tools" in error.value.message_dict


# --- agents written in Python ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_the_example_python_agent_asks_the_thread_and_calls_its_tool(
    users, worker, client_for
):
    @database_sync_to_async
    def weather_thread():
        agent = AgentConfig.objects.create(
            name="weather-bot", provider="python", model="weather"
        )
        agent.full_clean()
        thread = Thread.objects.create(owner=users[Role.OWNER], agent=agent)
        ThreadMember.objects.create(
            thread=thread, user=users[Role.PARTICIPANT], role=Role.PARTICIPANT
        )
        return thread

    thread = await weather_thread()
    owner = await joined(client_for(thread.id, users[Role.OWNER]))
    participant = await joined(client_for(thread.id, users[Role.PARTICIPANT]))

    await owner.send({"type": "message", "content": "What's the weather like?"})
    request = await participant.receive_type("input_request")
    assert (
        request["content"]["question"] == "Which city should I check the weather for?"
    )
    await participant.send(
        {"type": "input", "content": {"run_id": request["run_id"], "text": "Oslo"}}
    )
    frames = await owner.receive_until(until_complete)

    from agents.python_agents.weather import get_weather

    expected = get_weather("Oslo")
    assert tool_frames(frames) == [
        (
            "tool_call",
            {"id": "call_0", "name": "get_weather", "arguments": {"city": "Oslo"}},
        ),
        ("tool_result", {"id": "call_0", "name": "get_weather", "output": expected}),
    ]
    done = frames[-1]["content"]
    assert (done["status"], done["text"]) == ("completed", f"The weather in {expected}")


@pytest.mark.django_db(transaction=True)
async def test_the_example_python_agent_says_so_when_its_tool_call_is_denied(
    users, worker, client_for
):
    @database_sync_to_async
    def weather_thread():
        agent = AgentConfig.objects.create(
            name="weather-asks",
            provider="python",
            model="weather",
            tools=["get_weather"],
            approval_required=["get_weather"],
        )
        return Thread.objects.create(owner=users[Role.OWNER], agent=agent)

    thread = await weather_thread()
    owner = await joined(client_for(thread.id, users[Role.OWNER]))
    await owner.send({"type": "message", "content": "What is the weather in Oslo?"})
    request = await owner.receive_type("input_request")
    assert request["content"]["kind"] == "approval"
    await owner.send(
        {
            "type": "input",
            "content": {
                "run_id": request["run_id"],
                "input_id": request["content"]["input_id"],
                "approve": False,
            },
        }
    )
    done = (await owner.receive_until(until_complete))[-1]["content"]
    assert done["status"] == "completed"
    assert done["text"].startswith("I could not check the weather")


@pytest.mark.django_db
def test_a_python_agent_config_must_name_a_registered_agent():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as error:
        AgentConfig(name="x", provider="python", model="os.system").full_clean()
    assert "weather" in error.value.message_dict["model"][0]


@pytest.mark.django_db(transaction=True)
async def test_a_python_agent_may_let_another_agents_model_phrase_its_answer(
    users, openai_server, key, worker, client_for
):
    @database_sync_to_async
    def weather_thread():
        AgentConfig.objects.create(
            name="phraser",
            provider="openai",
            model="model-test",
            base_url=openai_server.base_url,
            api_key_env=KEY_ENV,
        )
        agent = AgentConfig.objects.create(
            name="weather-bot",
            provider="python",
            model="weather",
            extra_params={"phrase_with": "phraser"},
        )
        return Thread.objects.create(owner=users[Role.OWNER], agent=agent)

    openai_server.script(Scenario.reply(["Oslo ", "looks ", "fine."]))
    thread = await weather_thread()
    owner = await joined(client_for(thread.id, users[Role.OWNER]))

    await owner.send({"type": "message", "content": "What is the weather in Oslo?"})
    frames = await owner.receive_until(until_complete)

    assert frames[-1]["content"]["text"] == "Oslo looks fine."
    from agents.python_agents.weather import get_weather

    (prompt,) = [m["content"] for m in openai_server.last_request.body["messages"]]
    assert get_weather("Oslo") in prompt


# --- history and snapshots (chat/selectors.py shows agents/selectors.py's steps) --

from realtime.protocol import HistoryMessage  # noqa: E402

needs_tool_steps_in_chat = pytest.mark.skipif(
    "tool_steps" not in HistoryMessage.model_fields,
    reason="chat/ does not show tool steps yet (see the issue 15 report)",
)


@database_sync_to_async
def api_history(thread, user) -> list[dict]:
    client = APIClient()
    client.force_authenticate(user)
    response = client.get(f"/api/threads/{thread.id}/messages/")
    assert response.status_code == 200, response.content
    return response.json()["results"]


@needs_tool_steps_in_chat
@pytest.mark.django_db(transaction=True)
async def test_snapshots_and_the_history_show_the_tool_steps(
    users, openai_server, key, worker, client_for
):
    thread = await database_sync_to_async(make_thread)(
        users, openai_server, tools=["calculate"], approval_required=["calculate"]
    )
    openai_server.script(Scenario.calls(CALC), Scenario.tool_results("It is "))
    owner = await joined(client_for(thread.id, users[Role.OWNER]))
    await owner.send({"type": "message", "content": "6*7?"})
    request = await owner.receive_type("input_request")

    # Mid-run: the pending call, and the approval with its call.
    _, snapshot = await client_for(thread.id, users[Role.OBSERVER]).join()
    (progress,) = snapshot["content"]["runs"]
    (pending,) = progress["tool_steps"]
    assert (pending["name"], pending["status"], pending["output"]) == (
        "calculate",
        "pending",
        None,
    )
    (approval,) = progress["input_requests"]
    assert approval["kind"] == "approval"
    assert approval["tool_call"]["arguments"] == {"expression": "6*7"}

    await owner.send(
        {
            "type": "input",
            "content": {
                "run_id": request["run_id"],
                "input_id": request["content"]["input_id"],
                "approve": True,
            },
        }
    )
    await owner.receive_until(until_complete)

    _, snapshot = await client_for(thread.id, users[Role.OBSERVER]).join()
    reply = snapshot["content"]["messages"][-1]
    (step,) = reply["tool_steps"]
    assert (step["id"], step["status"], step["output"]) == (
        "call_calc",
        "completed",
        "42",
    )
    assert snapshot["content"]["messages"][0]["tool_steps"] == []
    prompt, answer = await api_history(thread, users[Role.OBSERVER])
    assert prompt["tool_steps"] == []
    assert answer["tool_steps"] == [step]


@pytest.mark.django_db(transaction=True)
async def test_cancel_while_an_approval_waits_closes_it_and_the_call(
    users, openai_server, key, worker, client_for
):
    from agents.models import RunInput

    thread = await database_sync_to_async(make_thread)(
        users, openai_server, tools=["calculate"], approval_required=["calculate"]
    )
    openai_server.script(Scenario.calls(CALC))
    owner = await joined(client_for(thread.id, users[Role.OWNER]))
    await owner.send({"type": "message", "content": "6*7?"})
    request = await approval_asked(owner)

    await owner.send({"type": "cancel", "content": {"run_id": request["run_id"]}})
    frames = await owner.receive_until(until_complete)

    assert frames[-1]["content"]["status"] == "cancelled"
    assert not [kind for kind, _ in tool_frames(frames) if kind == "tool_result"]
    (step,) = await tool_steps(request["run_id"])
    assert step.status == "cancelled"
    asked = await database_sync_to_async(RunInput.objects.get)(
        input_id=request["content"]["input_id"]
    )
    assert (asked.kind, asked.status, asked.tool_call["name"]) == (
        "approval",
        "cancelled",
        "calculate",
    )
