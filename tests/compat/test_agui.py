"""Parley's AG-UI endpoint (POST /api/agui/<agent>) over a real daphne: the
`@ag-ui/client` npm package's HttpAgent runs agents on it (tests/compat/js),
and the bad inputs and access rules are checked with httpx, every streamed
event parsed with the protocol's own Python models (`ag-ui-protocol`)."""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest
from ag_ui.core import Event
from pydantic import TypeAdapter

from tests.fakes import FakeToolCall, Scenario
from tests.integration.conftest import ROOT, Socket

EVENT = TypeAdapter(Event)


def agui_url(parley, agent: str = "echo") -> str:
    return f"{parley.url}/api/agui/{agent}"


def run_input(text: str, thread_id: str | None = None, **fields) -> dict:
    return {
        "threadId": thread_id or str(uuid.uuid4()),
        "runId": str(uuid.uuid4()),
        "messages": [{"id": "m1", "role": "user", "content": text}],
        "state": {},
        "tools": [],
        "context": [],
        "forwardedProps": {},
        **fields,
    }


def post(parley, body, *, user: str = "owner", agent: str = "echo"):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if user:
        headers["Authorization"] = f"Bearer {parley.tokens[user]}"
    return httpx.post(agui_url(parley, agent), content=content, headers=headers)


def events_of(response) -> list:
    """The stream's events, each parsed by ag_ui.core's models."""
    events = []
    for block in response.text.split("\n\n"):
        data = [line[6:] for line in block.splitlines() if line.startswith("data: ")]
        if data:
            events.append(EVENT.validate_json("\n".join(data)))
    return events


def types_of(events) -> list[str]:
    return [
        event["type"] if isinstance(event, dict) else event.type for event in events
    ]


def roles_and_texts(history: list[dict]) -> list[tuple[str, str]]:
    return [(message["role"], message["text"]) for message in history]


# --- the real client -----------------------------------------------------------


def test_http_agent_receives_the_echo_agents_reply_and_keeps_its_thread(
    parley, node_clients
):
    thread_id = str(uuid.uuid4())  # an id Parley does not know: a new thread
    out = node_clients.run(
        "agui_run.mjs",
        {
            "url": agui_url(parley),
            "token": parley.tokens["owner"],
            "threadId": thread_id,
            "texts": ["Hello from AG-UI", "and a second turn"],
        },
    )
    first, second = out["runs"]
    assert first["error"] is None and second["error"] is None
    types = types_of(first["events"])
    assert types[:3] == ["RUN_STARTED", "STATE_SNAPSHOT", "TEXT_MESSAGE_START"]
    assert types[-3:] == ["TEXT_MESSAGE_END", "STATE_SNAPSHOT", "RUN_FINISHED"]
    deltas = [
        e["delta"] for e in first["events"] if e["type"] == "TEXT_MESSAGE_CONTENT"
    ]
    assert "".join(deltas) == "Hello from AG-UI" and len(deltas) > 1
    assert first["lastAssistantText"] == "Hello from AG-UI"
    assert second["lastAssistantText"] == "and a second turn"
    started = first["events"][0]
    assert started["threadId"] == thread_id
    snapshot = first["events"][1]["snapshot"]["parley"]
    assert snapshot["thread_id"] == thread_id and snapshot["agent"] == "echo"
    # Both runs went to the one Parley thread the client's threadId named.
    assert out["threadId"] == thread_id
    assert roles_and_texts(parley.history(thread_id)) == [
        ("user", "Hello from AG-UI"),
        ("assistant", "Hello from AG-UI"),
        ("user", "and a second turn"),
        ("assistant", "and a second turn"),
    ]
    assert out["state"]["parley"]["status"] == "completed"


def test_http_agent_sees_a_tool_using_agents_tool_steps(
    parley, model_server, node_clients
):
    model_server.script(
        Scenario.calls(FakeToolCall("calculate", ('{"expression": "6*7"}',))),
        Scenario.tool_results("The answer is "),
    )
    out = node_clients.run(
        "agui_run.mjs",
        {
            "url": agui_url(parley, "calc"),
            "token": parley.tokens["owner"],
            "texts": ["What is 6*7?"],
        },
    )
    (run,) = out["runs"]
    assert run["error"] is None
    events = run["events"]
    types = types_of(events)
    tool_types = [t for t in types if t.startswith("TOOL_CALL")]
    assert tool_types == [
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "TOOL_CALL_RESULT",
    ]
    start = next(e for e in events if e["type"] == "TOOL_CALL_START")
    args = next(e for e in events if e["type"] == "TOOL_CALL_ARGS")
    result = next(e for e in events if e["type"] == "TOOL_CALL_RESULT")
    assert start["toolCallName"] == "calculate"
    assert json.loads(args["delta"]) == {"expression": "6*7"}
    assert result["toolCallId"] == start["toolCallId"] and result["content"] == "42"
    assert types.index("TOOL_CALL_RESULT") < types.index("TEXT_MESSAGE_CONTENT")
    assert run["lastAssistantText"] == "The answer is 42"
    # The client's own message list has the call and its result.
    tool_messages = [m for m in out["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == ["42"]
    assert any(
        call["function"]["name"] == "calculate"
        for message in out["messages"]
        for call in message.get("toolCalls") or []
    )


def test_the_docs_example_runs_twice_in_one_thread(parley, node_clients):
    doc = (ROOT / "docs" / "clients.md").read_text()
    (code,) = re.findall(r"```js\n(// example: agui\n.*?)```", doc, re.S)
    printed = node_clients.run_module_code(
        code, {"PARLEY_URL": parley.url, "PARLEY_TOKEN": parley.tokens["owner"]}
    )
    first, second, thread_id = printed.splitlines()
    assert (first, second) == ("Hello, Parley", "and again")
    assert [text for _, text in roles_and_texts(parley.history(thread_id))] == [
        "Hello, Parley",
        "Hello, Parley",
        "and again",
        "and again",
    ]


# --- the wire, parsed with ag-ui-protocol --------------------------------------------


def test_every_event_parses_with_the_protocols_models_and_ids_are_the_clients(parley):
    body = run_input("parse me please")
    response = post(parley, body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = events_of(response)
    assert (
        types_of(events)[0] == "RUN_STARTED" and types_of(events)[-1] == "RUN_FINISHED"
    )
    assert {events[0].thread_id, events[-1].thread_id} == {body["threadId"]}
    assert {events[0].run_id, events[-1].run_id} == {body["runId"]}
    text = "".join(e.delta for e in events if e.type == "TEXT_MESSAGE_CONTENT")
    assert text == "parse me please"
    assert response.headers["x-parley-thread-id"] == body["threadId"]


def test_a_thread_id_that_is_not_a_uuid_is_one_thread_per_user(parley):
    name = "my-copilot-thread"
    first = post(parley, run_input("one", name))
    again = post(parley, run_input("two", name))
    theirs = post(parley, run_input("three", name), user="participant")
    assert first.status_code == again.status_code == theirs.status_code == 200
    mine = first.headers["x-parley-thread-id"]
    assert again.headers["x-parley-thread-id"] == mine
    assert theirs.headers["x-parley-thread-id"] != mine
    assert [text for _, text in roles_and_texts(parley.history(mine))] == [
        "one",
        "one",
        "two",
        "two",
    ]


def test_a_failed_run_is_a_run_error_with_parleys_code(parley):
    response = post(parley, run_input("/fail half of it"))
    events = events_of(response)
    assert types_of(events)[-1] == "RUN_ERROR"
    assert events[-1].code == "provider_error"
    text = "".join(e.delta for e in events if e.type == "TEXT_MESSAGE_CONTENT")
    assert text == "half of it"
    assert "TEXT_MESSAGE_END" in types_of(events)  # the open message is closed


def test_a_participant_continues_a_shared_thread_and_the_client_state_is_kept(parley):
    thread_id = parley.new_thread()
    body = run_input("from the participant", thread_id, state={"mine": 1})
    events = events_of(post(parley, body, user="participant"))
    snapshots = [e.snapshot for e in events if e.type == "STATE_SNAPSHOT"]
    assert snapshots[0]["mine"] == 1 and snapshots[0]["parley"]["role"] == "participant"
    assert snapshots[-1]["parley"]["status"] == "completed"
    assert roles_and_texts(parley.history(thread_id))[-1] == (
        "assistant",
        "from the participant",
    )


# --- bad input and access ------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        {"threadId": "t"},  # no runId, no messages
        run_input("x", messages=[]),
        run_input("x", messages=[{"id": "a", "role": "assistant", "content": "hi"}]),
        run_input("x", messages=[{"id": "a", "role": "user", "content": "   "}]),
        run_input("x", threadId="t" * 201),
    ],
    ids=[
        "not-json",
        "not-an-object",
        "missing-fields",
        "no-messages",
        "last-is-not-user",
        "empty",
        "thread-id-too-long",
    ],
)
def test_a_malformed_body_is_400_in_parleys_shape(parley, body):
    response = post(parley, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["message"]


def test_an_unknown_or_disabled_agent_is_404(parley):
    for agent in ("no-such-agent", "retired"):
        response = post(parley, run_input("hi"), agent=agent)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "agent_not_found"


def test_no_token_or_a_bad_one_is_401_and_get_is_405(parley):
    assert post(parley, run_input("hi"), user="").status_code == 401
    bad = httpx.post(
        agui_url(parley),
        json=run_input("hi"),
        headers={"Authorization": "Bearer not-a-token"},
    )
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "invalid_api_key"
    got = httpx.get(
        agui_url(parley), headers={"Authorization": f"Bearer {parley.tokens['owner']}"}
    )
    assert got.status_code == 405


def test_an_observer_may_not_run_and_a_stranger_does_not_see_the_thread(parley):
    thread_id = parley.new_thread()
    observer = post(parley, run_input("may I?", thread_id), user="observer")
    assert observer.status_code == 403
    assert observer.json()["error"]["code"] == "read_only"
    stranger = post(parley, run_input("may I?", thread_id), user="stranger")
    assert stranger.status_code == 404
    assert stranger.json()["error"]["code"] == "thread_not_found"
    other_agent = post(parley, run_input("wrong agent", thread_id), agent="slow-echo")
    assert other_agent.status_code == 400
    assert other_agent.json()["error"]["code"] == "model_mismatch"
    assert parley.history(thread_id) == []


# --- questions, cancelling -----------------------------------------------------------


async def test_a_question_reaches_the_client_and_a_member_answers_it(parley):
    thread_id = parley.new_thread()
    body = run_input("/ask What is your name?", thread_id)
    headers = {"Authorization": f"Bearer {parley.tokens['owner']}"}
    events = []
    async with Socket(parley.ws_url(thread_id), parley.tokens["participant"]) as member:
        await member.receive()  # connected
        await member.receive()  # the snapshot
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream("POST", agui_url(parley), json=body, headers=headers) as r,
        ):
            run_id = r.headers["x-parley-run-id"]
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                event = EVENT.validate_json(line[6:])
                events.append(event)
                if event.type == "CUSTOM":
                    await member.send(
                        {
                            "type": "input",
                            "content": {
                                "run_id": run_id,
                                "input_id": event.value["input_id"],
                                "text": "Ada",
                            },
                        }
                    )
    (asked,) = [e for e in events if e.type == "CUSTOM"]
    assert asked.name == "parley.input_request"
    assert asked.value["question"] == "What is your name?"
    assert asked.value["kind"] == "question"
    text = "".join(e.delta for e in events if e.type == "TEXT_MESSAGE_CONTENT")
    assert text == "You answered: Ada"
    assert events[-1].type == "RUN_FINISHED"


async def test_a_run_cancelled_in_the_thread_finishes_with_the_cancelled_outcome(
    parley,
):
    body = run_input(" ".join(f"w{n}" for n in range(15)))
    headers = {"Authorization": f"Bearer {parley.tokens['owner']}"}
    events = []
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream(
            "POST", agui_url(parley, "slow-echo"), json=body, headers=headers
        ) as response,
    ):
        run_id = response.headers["x-parley-run-id"]
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            events.append(EVENT.validate_json(line[6:]))
            if events[-1].type == "TEXT_MESSAGE_CONTENT" and len(events) == 4:
                cancelled = await client.post(
                    f"{parley.url}/api/runs/{run_id}/cancel/",
                    headers={"Authorization": f"Token {parley.tokens['owner']}"},
                )
                assert cancelled.status_code in (200, 202), cancelled.text
    assert events[-1].type == "RUN_FINISHED"
    assert events[-1].outcome.type == "cancelled"
    assert events[-2].snapshot["parley"]["status"] == "cancelled"
