"""Parley's Vercel AI SDK endpoints (POST /api/aisdk/<agent> and GET
/api/aisdk/<agent>/<chat id>/stream) over a real daphne: the `ai` npm package's
DefaultChatTransport and readUIMessageStream read the UI message stream and
resume it (tests/compat/js), and the bad inputs and access rules are checked
with httpx."""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest

from tests.fakes import FakeToolCall, Scenario
from tests.integration.conftest import ROOT, Socket


def chat_api(parley, agent: str = "echo") -> str:
    return f"{parley.url}/api/aisdk/{agent}"


def chat_body(text: str, chat_id: str | None = None, **fields) -> dict:
    return {
        "id": chat_id or str(uuid.uuid4()),
        "messages": [
            {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}
        ],
        "trigger": "submit-message",
        **fields,
    }


def headers_for(parley, user: str = "owner") -> dict:
    return {"Authorization": f"Bearer {parley.tokens[user]}"} if user else {}


def post(parley, body, *, user: str = "owner", agent: str = "echo"):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        chat_api(parley, agent),
        content=content,
        headers={"Content-Type": "application/json", **headers_for(parley, user)},
    )


def chunks_of(response) -> list:
    """The stream's `data:` payloads: parsed chunks, and the final "[DONE]"."""
    out = []
    for block in response.text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                data = line[6:]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


def roles_and_texts(history: list[dict]) -> list[tuple[str, str]]:
    return [(message["role"], message["text"]) for message in history]


def run_chat(parley, node_clients, **config) -> dict:
    return node_clients.run(
        "aisdk_chat.mjs",
        {"api": chat_api(parley, config.pop("agent", "echo")), **config},
    )


# --- the real client -----------------------------------------------------------


def test_the_ai_sdk_reads_the_echo_agents_reply(parley, node_clients):
    chat_id = str(uuid.uuid4())
    out = run_chat(
        parley,
        node_clients,
        token=parley.tokens["owner"],
        chatId=chat_id,
        text="Hello from useChat",
    )
    first = out["first"]
    assert first["errors"] == []
    assert first["text"] == "Hello from useChat"
    types = [chunk["type"] for chunk in first["chunks"]]
    assert types[:3] == ["start", "start-step", "text-start"]
    assert types[-3:] == ["text-end", "finish-step", "finish"]
    assert types.count("text-delta") > 1  # word by word
    start = first["chunks"][0]
    assert start["messageMetadata"]["parleyThreadId"] == chat_id
    assert first["message"]["id"] == start["messageId"]
    assert out["afterEnd"] is None  # the run is over: resume finds nothing (204)
    assert roles_and_texts(parley.history(chat_id)) == [
        ("user", "Hello from useChat"),
        ("assistant", "Hello from useChat"),
    ]


def test_the_ai_sdk_resumes_a_reply_after_hanging_up_mid_stream(parley, node_clients):
    chat_id = str(uuid.uuid4())
    words = " ".join(f"w{n}" for n in range(12))
    out = run_chat(
        parley,
        node_clients,
        agent="slow-echo",
        token=parley.tokens["owner"],
        chatId=chat_id,
        text=words,
        hangUpAfter=2,
    )
    first, resumed = out["first"], out["resumed"]
    assert first["text"] and words.startswith(first["text"])
    assert first["text"] != words  # it hung up before the end
    assert resumed is not None, "the resume endpoint answered 204 mid-run"
    assert resumed["errors"] == []
    assert resumed["text"] == words  # the whole reply, once
    assert resumed["chunks"][0]["messageId"] == first["chunks"][0]["messageId"]
    assert resumed["chunks"][-1]["type"] == "finish"
    assert out["afterEnd"] is None
    assert roles_and_texts(parley.history(chat_id)) == [
        ("user", words),
        ("assistant", words),
    ]


def test_the_ai_sdk_sees_a_tool_using_agents_tool_steps(
    parley, model_server, node_clients
):
    model_server.script(
        Scenario.calls(FakeToolCall("calculate", ('{"expression": "6*7"}',))),
        Scenario.tool_results("The answer is "),
    )
    out = run_chat(
        parley,
        node_clients,
        agent="calc",
        token=parley.tokens["owner"],
        chatId=str(uuid.uuid4()),
        text="What is 6*7?",
    )
    first = out["first"]
    assert first["errors"] == []
    assert first["text"] == "The answer is 42"
    chunks = first["chunks"]
    call = next(c for c in chunks if c["type"] == "tool-input-available")
    result = next(c for c in chunks if c["type"] == "tool-output-available")
    assert call["toolName"] == "calculate"
    assert call["input"] == {"expression": "6*7"}
    assert result["toolCallId"] == call["toolCallId"] and result["output"] == "42"
    (tool_part,) = [p for p in first["message"]["parts"] if p["type"] == "dynamic-tool"]
    assert tool_part["toolName"] == "calculate"
    assert tool_part["state"] == "output-available" and tool_part["output"] == "42"
    # Two steps: the tool call, then the text written with its result.
    types = [chunk["type"] for chunk in chunks]
    assert types.count("start-step") == types.count("finish-step") == 2


def test_the_docs_example_prints_the_reply_and_finds_nothing_to_resume(
    parley, node_clients
):
    doc = (ROOT / "docs" / "clients.md").read_text()
    (code,) = re.findall(r"```js\n(// example: aisdk\n.*?)```", doc, re.S)
    printed = node_clients.run_module_code(
        code, {"PARLEY_URL": parley.url, "PARLEY_TOKEN": parley.tokens["owner"]}
    )
    assert printed.splitlines() == ["Hello, Parley", "null"]


# --- the wire ------------------------------------------------------------------------


def test_the_stream_has_the_ui_message_stream_headers_and_ends_with_done(parley):
    response = post(parley, chat_body("wire check"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    chunks = chunks_of(response)
    assert chunks[-1] == "[DONE]" and chunks[-2]["type"] == "finish"
    deltas = [c["delta"] for c in chunks[:-1] if c["type"] == "text-delta"]
    assert "".join(deltas) == "wire check"


def test_a_failed_run_ends_with_an_error_chunk(parley):
    chunks = chunks_of(post(parley, chat_body("/fail half of it")))
    assert chunks[-1] == "[DONE]"
    assert chunks[-2]["type"] == "error"
    assert chunks[-2]["errorText"].startswith("provider_error")


def test_a_chat_id_that_is_not_a_uuid_is_one_thread_per_user(parley):
    chat_id = "aB3dE5fG7hJ9kL1m"  # useChat's own generated ids look like this
    first = post(parley, chat_body("one", chat_id))
    again = post(parley, chat_body("two", chat_id))
    theirs = post(parley, chat_body("three", chat_id), user="participant")
    mine = first.headers["x-parley-thread-id"]
    assert again.headers["x-parley-thread-id"] == mine
    assert theirs.headers["x-parley-thread-id"] != mine
    assert [text for _, text in roles_and_texts(parley.history(mine))] == [
        "one",
        "one",
        "two",
        "two",
    ]


def test_resume_is_204_for_a_new_chat_an_idle_one_and_a_strangers(parley):
    def resume(chat_id, user="owner"):
        return httpx.get(
            f"{chat_api(parley)}/{chat_id}/stream", headers=headers_for(parley, user)
        )

    assert resume(str(uuid.uuid4())).status_code == 204  # no such thread yet
    assert resume("not-a-uuid-chat").status_code == 204
    thread_id = parley.new_thread()
    assert resume(thread_id).status_code == 204  # idle
    assert resume(thread_id, user="stranger").status_code == 204
    assert resume(thread_id, user="").status_code == 401


# --- bad input and access ------------------------------------------------------------


def _file_part_body():
    body = chat_body("x")
    body["messages"][0]["parts"].append(
        {"type": "file", "mediaType": "image/png", "url": "data:image/png;base64,"}
    )
    return body


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        {"messages": []},
        chat_body("x", messages=[]),
        chat_body(
            "x",
            messages=[
                {
                    "id": "a",
                    "role": "assistant",
                    "parts": [{"type": "text", "text": "hi"}],
                }
            ],
        ),
        chat_body("x", trigger="regenerate-message"),
        chat_body("   "),
        _file_part_body(),
    ],
    ids=[
        "not-json",
        "not-an-object",
        "no-id",
        "no-messages",
        "last-is-not-user",
        "regenerate",
        "empty",
        "file-part",
    ],
)
def test_a_malformed_body_is_400_in_parleys_shape(parley, body):
    response = post(parley, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "validation_error"


def test_an_unknown_agent_is_404_and_a_bad_token_401(parley):
    for agent in ("no-such-agent", "retired"):
        response = post(parley, chat_body("hi"), agent=agent)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "agent_not_found"
    assert post(parley, chat_body("hi"), user="").status_code == 401


def test_an_observer_may_not_post_and_a_stranger_does_not_see_the_thread(parley):
    thread_id = parley.new_thread()
    observer = post(parley, chat_body("may I?", thread_id), user="observer")
    assert observer.status_code == 403
    assert observer.json()["error"]["code"] == "read_only"
    stranger = post(parley, chat_body("may I?", thread_id), user="stranger")
    assert stranger.status_code == 404
    assert stranger.json()["error"]["code"] == "thread_not_found"
    assert parley.history(thread_id) == []


# --- questions, cancelling -----------------------------------------------------------


async def test_a_question_is_a_data_part_and_a_member_answers_it(parley):
    thread_id = parley.new_thread()
    body = chat_body("/ask What is your name?", thread_id)
    chunks = []
    async with Socket(parley.ws_url(thread_id), parley.tokens["participant"]) as member:
        await member.receive()  # connected
        await member.receive()  # the snapshot
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream(
                "POST", chat_api(parley), json=body, headers=headers_for(parley)
            ) as response,
        ):
            run_id = response.headers["x-parley-run-id"]
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunks.append(json.loads(line[6:]))
                if chunks[-1]["type"] == "data-parley-input-request":
                    await member.send(
                        {
                            "type": "input",
                            "content": {
                                "run_id": run_id,
                                "input_id": chunks[-1]["id"],
                                "text": "Ada",
                            },
                        }
                    )
    (asked,) = [c for c in chunks if c["type"] == "data-parley-input-request"]
    assert asked["data"]["question"] == "What is your name?"
    text = "".join(c["delta"] for c in chunks if c["type"] == "text-delta")
    assert text == "You answered: Ada"
    assert chunks[-1]["type"] == "finish"


async def test_a_run_cancelled_in_the_thread_ends_with_an_abort_chunk(parley):
    body = chat_body(" ".join(f"w{n}" for n in range(15)))
    chunks = []
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream(
            "POST",
            chat_api(parley, "slow-echo"),
            json=body,
            headers=headers_for(parley),
        ) as response,
    ):
        run_id = response.headers["x-parley-run-id"]
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunks.append(json.loads(line[6:]))
            deltas = [c for c in chunks if c["type"] == "text-delta"]
            if chunks[-1]["type"] == "text-delta" and len(deltas) == 2:
                cancelled = await client.post(
                    f"{parley.url}/api/runs/{run_id}/cancel/",
                    json={"reason": "enough"},
                    headers={"Authorization": f"Token {parley.tokens['owner']}"},
                )
                assert cancelled.status_code in (200, 202), cancelled.text
    assert chunks[-1] == {"type": "abort", "reason": "enough"}
    assert chunks[-2]["type"] == "finish-step"
