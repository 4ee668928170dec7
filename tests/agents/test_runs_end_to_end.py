"""Agent runs through the whole app: a socket sends a message, the worker calls a
real (loopback) OpenAI or Anthropic server through the official SDK, and every
socket in the thread sees the reply stream, end and be stored.

The fake servers (tests/fakes/llm_servers.py) record what they received, so the
tests check the agent config reached the provider as configured, and they play
the failures a real provider has (401, 429, 5xx, broken streams, silence). The
API key lives only in an environment variable of this process, as the worker
reads it; no frame may ever show it.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from channels.db import database_sync_to_async

from agents.models import AgentConfig, Run
from chat.models import Message, Role, Thread, ThreadMember
from tests.fakes import FakeAnthropicServer, FakeOpenAIServer, FakeToolCall, Scenario

pytestmark = pytest.mark.django_db(transaction=True)

OPENAI_KEY_ENV = "PARLEY_TEST_OPENAI_KEY"
ANTHROPIC_KEY_ENV = "PARLEY_TEST_ANTHROPIC_KEY"
OPENAI_KEY = "sk-parley-e2e-openai-0f1e2d3c4b5a6978"
ANTHROPIC_KEY = "sk-ant-parley-e2e-8a7b6c5d4e3f2a1b"
REPLY = "The quick brown fox jumps."
SYSTEM_PROMPT = "You answer in five words."


# --- fixtures and helpers -------------------------------------------------------


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def keys(monkeypatch):
    """Both keys in the worker's environment (the runtime reads it at run time)."""
    monkeypatch.setenv(OPENAI_KEY_ENV, OPENAI_KEY)
    monkeypatch.setenv(ANTHROPIC_KEY_ENV, ANTHROPIC_KEY)
    return (OPENAI_KEY, ANTHROPIC_KEY)


def _thread_for(users, agent) -> Thread:
    thread = Thread.objects.create(owner=users[Role.OWNER], agent=agent, title="e2e")
    ThreadMember.objects.create(
        thread=thread, user=users[Role.PARTICIPANT], role=Role.PARTICIPANT
    )
    return thread


@pytest.fixture
def openai_server():
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def anthropic_server():
    with FakeAnthropicServer() as server:
        yield server


@pytest.fixture
def openai_agent(db, openai_server):
    return AgentConfig.objects.create(
        name="gpt",
        provider="openai",
        model="gpt-test",
        base_url=openai_server.base_url,
        api_key_env=OPENAI_KEY_ENV,
        temperature=0.3,
        max_tokens=321,
        system_prompt=SYSTEM_PROMPT,
        extra_params={"top_p": 0.5, "seed": 7, "num_ctx": 4096},
    )


@pytest.fixture
def anthropic_agent(db, anthropic_server):
    return AgentConfig.objects.create(
        name="claude",
        provider="anthropic",
        model="claude-test",
        base_url=anthropic_server.base_url,
        api_key_env=ANTHROPIC_KEY_ENV,
        max_tokens=222,
        system_prompt=SYSTEM_PROMPT,
        extra_params={"stop_sequences": ["###"]},
    )


@pytest.fixture
def openai_thread(users, openai_agent):
    return _thread_for(users, openai_agent)


@pytest.fixture
def anthropic_thread(users, anthropic_agent):
    return _thread_for(users, anthropic_agent)


@pytest.fixture
async def connect(client_for, keys, users):
    """Opens joined sockets; when the test ends, no frame any of them received may
    hold an API key."""
    opened = []

    async def open_socket(thread, role=Role.OWNER):
        client = client_for(thread.id, users[role])
        connected, _ = await client.connect()
        assert connected
        status = await client.receive()
        assert status["type"] == "status" and status["content"]["state"] == "connected"
        snapshot = await client.receive()
        assert snapshot["content"]["state"] in ("snapshot", "resynced")
        opened.append(client)
        return client

    yield open_socket
    for client in opened:
        for frame in client.frames:
            shown = json.dumps(frame)
            for key in keys:
                assert key not in shown, frame


def until_complete(frame) -> bool:
    return frame["type"] == "state_complete"


def thread_events(frames) -> list[dict]:
    return [frame for frame in frames if frame["event_id"] is not None]


def chunks_of(frames) -> list[dict]:
    return [frame for frame in frames if frame["type"] == "response"]


def assert_well_formed_reply(frames) -> str:
    """The chunks are numbered 0, 1, 2 ... and join to the final text."""
    chunks = chunks_of(frames)
    done = frames[-1]
    assert done["type"] == "state_complete"
    assert [chunk["stream_index"] for chunk in chunks] == list(range(len(chunks)))
    assert all(chunk["run_id"] == done["run_id"] for chunk in chunks)
    text = "".join(chunk["content"] for chunk in chunks)
    assert text == done["content"]["text"]
    return text


async def ask(client, text: str, *, request_id: str | None = None) -> list[dict]:
    await client.send({"type": "message", "content": text, "request_id": request_id})
    return await client.receive_until(until_complete, timeout=15)


@database_sync_to_async
def stored_run(run_id) -> Run:
    return Run.objects.get(pk=run_id)


@database_sync_to_async
def assistant_texts(run_id) -> list[str]:
    return list(
        Message.objects.filter(run_id=run_id, role="assistant").values_list(
            "text", flat=True
        )
    )


@database_sync_to_async
def update(instance, **fields):
    for name, value in fields.items():
        setattr(instance, name, value)
    instance.save()


def conversation(request) -> list[tuple[str, str]]:
    """(role, content) of the messages an OpenAI request carried."""
    return [
        (message["role"], message["content"]) for message in request.body["messages"]
    ]


# --- openai: the happy path -------------------------------------------------------


async def test_openai_reply_streams_to_every_socket_and_is_stored(
    openai_thread, openai_server, worker, connect
):
    openai_server.script(Scenario.reply(usage=(12, 5)))
    owner = await connect(openai_thread)
    participant = await connect(openai_thread, Role.PARTICIPANT)

    owner_frames = await ask(owner, "Tell me about foxes.", request_id="q1")
    participant_frames = await participant.receive_until(until_complete)

    assert thread_events(owner_frames) == thread_events(participant_frames)
    assert owner_frames[0]["type"] == "message"
    assert owner_frames[0]["request_id"] == "q1"
    assert assert_well_formed_reply(owner_frames) == REPLY
    done = owner_frames[-1]["content"]
    assert done["status"] == "completed" and done["error"] is None
    assert done["usage"] == {"input_tokens": 12, "output_tokens": 5}
    run = await stored_run(owner_frames[-1]["run_id"])
    assert run.status == "completed" and run.usage == done["usage"]
    assert await assistant_texts(run.id) == [REPLY]


async def test_openai_request_carries_the_agent_config_and_the_key_from_the_env(
    openai_thread, openai_server, worker, connect
):
    owner = await connect(openai_thread)
    await ask(owner, "What is a fox?")

    sent = openai_server.last_request
    assert sent.path == "/v1/chat/completions"
    assert sent.api_key == OPENAI_KEY
    body = sent.body
    assert body["model"] == "gpt-test"
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 321
    assert body["stream"] is True
    assert (body["top_p"], body["seed"], body["num_ctx"]) == (0.5, 7, 4096)
    assert conversation(sent) == [
        ("system", SYSTEM_PROMPT),
        ("user", "What is a fox?"),
    ]


async def test_persistent_agent_sends_earlier_messages_in_order(
    openai_thread, openai_server, worker, connect
):
    owner = await connect(openai_thread)
    await ask(owner, "first question")  # the fake server echoes the prompt
    await ask(owner, "second question")

    assert conversation(openai_server.last_request) == [
        ("system", SYSTEM_PROMPT),
        ("user", "first question"),
        ("assistant", "first question"),
        ("user", "second question"),
    ]


async def test_a_queued_message_is_answered_with_the_reply_before_it_in_history(
    openai_thread, openai_server, worker, connect
):
    openai_server.script(Scenario.echo(delay=0.02))
    owner = await connect(openai_thread)

    # Sent while the first reply still streams: queued behind it.
    await owner.send({"type": "message", "content": "first question here"})
    await owner.send({"type": "message", "content": "second question"})
    await owner.receive_until(
        lambda frame: (
            until_complete(frame) and frame["content"]["text"] == "second question"
        ),
        timeout=15,
    )

    assert conversation(openai_server.last_request) == [
        ("system", SYSTEM_PROMPT),
        ("user", "first question here"),
        ("assistant", "first question here"),
        ("user", "second question"),
    ]


async def test_history_is_trimmed_to_the_budget_keeping_the_newest(
    openai_thread, openai_server, worker, connect, settings
):
    owner = await connect(openai_thread)
    await ask(owner, "alpha question")
    await ask(owner, "bravo question")
    # Room for the prompt and the last exchange only.
    settings.PARLEY_HISTORY_MAX_CHARS = len("charlie") + 2 * len("bravo question") + 3
    await ask(owner, "charlie")

    assert conversation(openai_server.last_request) == [
        ("system", SYSTEM_PROMPT),
        ("user", "bravo question"),
        ("assistant", "bravo question"),
        ("user", "charlie"),
    ]


async def test_a_history_longer_than_one_read_arrives_whole_and_in_order(
    openai_thread, openai_server, worker, connect, monkeypatch
):
    monkeypatch.setattr("agents.prompts.HISTORY_PAGE", 2)
    owner = await connect(openai_thread)
    for word in ("one", "two", "three"):
        await ask(owner, word)
    await ask(owner, "four")

    assert conversation(openai_server.last_request) == [
        ("system", SYSTEM_PROMPT),
        ("user", "one"),
        ("assistant", "one"),
        ("user", "two"),
        ("assistant", "two"),
        ("user", "three"),
        ("assistant", "three"),
        ("user", "four"),
    ]


async def test_non_persistent_agent_sends_only_the_prompt(
    openai_thread, openai_agent, openai_server, worker, connect
):
    await update(openai_agent, persistent=False)
    owner = await connect(openai_thread)
    await ask(owner, "first question")
    await ask(owner, "second question")

    assert conversation(openai_server.last_request) == [
        ("system", SYSTEM_PROMPT),
        ("user", "second question"),
    ]


async def test_thread_overrides_from_a_config_frame_reach_the_provider(
    openai_thread, openai_server, worker, connect
):
    owner = await connect(openai_thread)
    overrides = {
        "model": "gpt-override",
        "temperature": 1.1,
        "system_prompt": "Be verbose.",
        "max_tokens": 77,
    }
    await owner.send({"type": "config", "content": overrides, "request_id": "cfg"})
    frames = await owner.receive_until(
        lambda f: f["content"].get("state") == "thread_updated"
    )
    assert frames[-1]["content"]["config"] == overrides
    # The reply to the request, in either order with the event it caused.
    (reply,) = [f for f in frames if f["request_id"] == "cfg"] or [
        await owner.receive_type("status")
    ]
    assert reply["content"] == {
        "state": "accepted",
        "request": "config",
        "config": overrides,
    }

    await ask(owner, "Go on.")

    body = openai_server.last_request.body
    assert (body["model"], body["temperature"], body["max_tokens"]) == (
        "gpt-override",
        1.1,
        77,
    )
    assert body["messages"][0] == {"role": "system", "content": "Be verbose."}


async def test_overrides_from_two_sockets_add_up(
    openai_thread, openai_server, worker, connect
):
    owner = await connect(openai_thread)
    participant = await connect(openai_thread, Role.PARTICIPANT)
    await owner.send({"type": "config", "content": {"model": "gpt-override"}})
    await participant.receive_type("status")
    await participant.send({"type": "config", "content": {"temperature": 0.9}})
    await owner.receive_type("status")
    await owner.receive_type("status")

    await ask(owner, "Both?")

    body = openai_server.last_request.body
    assert (body["model"], body["temperature"]) == ("gpt-override", 0.9)


async def test_an_override_the_agent_does_not_allow_is_refused(
    openai_thread, openai_agent, openai_server, worker, connect
):
    await update(openai_agent, allowed_overrides=["temperature"])
    owner = await connect(openai_thread)

    await owner.send(
        {"type": "config", "content": {"model": "gpt-5"}, "request_id": "c"}
    )
    error = await owner.receive_type("error")
    assert error["content"]["code"] == "invalid_config"
    assert error["request_id"] == "c"
    await owner.send({"type": "config", "content": {"temperature": 0.1}})
    assert (await owner.receive_type("status"))["content"]["state"] == "thread_updated"

    await ask(owner, "Which model?")
    body = openai_server.last_request.body
    assert (body["model"], body["temperature"]) == ("gpt-test", 0.1)


async def test_stream_off_gives_exactly_one_response_chunk(
    openai_thread, openai_agent, openai_server, worker, connect
):
    await update(openai_agent, stream=False, chunk_size=4)
    openai_server.script(Scenario.reply())
    owner = await connect(openai_thread)

    frames = await ask(owner, "Whole, please.")

    assert openai_server.last_request.body.get("stream") in (None, False)
    assert [chunk["content"] for chunk in chunks_of(frames)] == [REPLY]
    assert chunks_of(frames)[0]["stream_index"] == 0
    assert frames[-1]["content"]["status"] == "completed"
    assert await assistant_texts(frames[-1]["run_id"]) == [REPLY]


async def test_unbuffered_agent_sends_every_token_as_a_chunk(
    openai_thread, openai_agent, openai_server, worker, connect
):
    await update(openai_agent, buffer_chunks=False)
    tokens = ["One ", "two ", "three ", "four."]
    openai_server.script(Scenario.reply(tokens))
    owner = await connect(openai_thread)

    frames = await ask(owner, "Count.")

    assert [chunk["content"] for chunk in chunks_of(frames)] == tokens
    assert assert_well_formed_reply(frames) == "".join(tokens)


async def test_tool_calls_and_usage_arrive_as_state_frames_in_order(
    openai_thread, openai_server, worker, connect
):
    # The agent has no tool of that name: the model gets an error result, and
    # answers again (agents/execution.py's tool loop; tests/agents/test_tools.py).
    call = FakeToolCall("get_weather", ('{"city": ', '"Oslo"}'), id="call_1")
    openai_server.script(
        Scenario.reply(["Let me check. "], tool_calls=[call], usage=(20, 9)),
        Scenario.reply(["No weather tool."], usage=(30, 4)),
    )
    owner = await connect(openai_thread)
    participant = await connect(openai_thread, Role.PARTICIPANT)

    frames = await ask(owner, "Weather in Oslo?")
    assert thread_events(frames) == thread_events(
        await participant.receive_until(until_complete)
    )

    states = [frame for frame in frames if frame["type"] == "state"]
    (tool_call,) = [
        state["content"] for state in states if state["content"]["kind"] == "tool_call"
    ]
    assert tool_call["data"] == {
        "id": "call_1",
        "name": "get_weather",
        "arguments": {"city": "Oslo"},
    }
    (tool_result,) = [
        state["content"]
        for state in states
        if state["content"]["kind"] == "tool_result"
    ]
    assert "no tool named 'get_weather'" in tool_result["data"]["error"]
    usage_states = [
        state["content"] for state in states if state["content"]["kind"] == "usage"
    ]
    # Usage adds up over the model calls of the reply.
    assert [usage["data"] for usage in usage_states] == [
        {"input_tokens": 20, "output_tokens": 9},
        {"input_tokens": 50, "output_tokens": 13},
    ]
    # The text streamed before the tool call is published before it.
    first_state = frames.index(states[0])
    assert [chunk["content"] for chunk in chunks_of(frames[:first_state])] == [
        "Let me check. "
    ]
    done = frames[-1]["content"]
    assert done["text"] == "Let me check. \n\nNo weather tool."
    assert done["status"] == "completed"
    assert done["usage"] == {"input_tokens": 50, "output_tokens": 13}


# --- openai: failures ---------------------------------------------------------------

# scenario, error code, text streamed before the failure, settings
FAILURES = {
    "401 unauthorized": (Scenario.error(401), "provider_auth_failed", "", {}),
    "429 persistent": (
        Scenario.error(429, retry_after="0.01"),
        "provider_rate_limited",
        "",
        {},
    ),
    "500 server error": (
        Scenario.error(500, retry_after="0.01"),
        "provider_unavailable",
        "",
        {},
    ),
    "malformed stream": (
        Scenario.malformed(2),
        "provider_bad_response",
        "The quick ",
        {},
    ),
    "dropped mid-stream": (
        Scenario.dropped(3),
        "provider_connection_lost",
        "The quick brown ",
        {},
    ),
    "silent mid-stream": (
        Scenario.stalled(2),
        "provider_timeout",
        "The quick ",
        {"PARLEY_PROVIDER_TIMEOUT_SECONDS": 0.3},
    ),
    "no answer at all": (
        Scenario.hanging(),
        "provider_timeout",
        "",
        {"PARLEY_PROVIDER_TIMEOUT_SECONDS": 0.3, "PARLEY_PROVIDER_MAX_RETRIES": 0},
    ),
}


async def expect_failure(frames, code: str, partial: str) -> dict:
    errors = [frame for frame in frames if frame["type"] == "error"]
    assert [error["content"]["code"] for error in errors] == [code]
    assert errors[0]["run_id"] == frames[-1]["run_id"]
    assert errors[0]["content"]["message"]
    done = frames[-1]["content"]
    assert done["status"] == "failed"
    assert done["error"]["code"] == code
    assert assert_well_formed_reply(frames) == partial
    run = await stored_run(frames[-1]["run_id"])
    assert run.status == "failed" and run.error_code == code
    assert await assistant_texts(run.id) == [partial]  # a failure is kept, text or not
    return done


@pytest.mark.parametrize("failure", FAILURES)
async def test_openai_failures_end_the_run_failed_with_the_partial_text_kept(
    openai_thread, openai_server, worker, connect, settings, failure, caplog
):
    scenario, code, partial, overrides = FAILURES[failure]
    settings.PARLEY_PROVIDER_MAX_RETRIES = 2
    for name, value in overrides.items():
        setattr(settings, name, value)
    openai_server.script(scenario)
    owner = await connect(openai_thread)
    participant = await connect(openai_thread, Role.PARTICIPANT)

    with caplog.at_level(logging.DEBUG):
        frames = await ask(owner, "Tell me about foxes.")

    await expect_failure(frames, code, partial)
    assert thread_events(await participant.receive_until(until_complete)) == (
        thread_events(frames)
    )
    run = await stored_run(frames[-1]["run_id"])
    assert OPENAI_KEY not in run.error
    assert OPENAI_KEY not in caplog.text
    if failure == "429 persistent":  # bounded retries, honouring Retry-After
        assert len(openai_server.requests) == 3


async def test_a_missing_key_fails_before_any_network_call(
    openai_thread, openai_server, worker, connect, monkeypatch
):
    monkeypatch.delenv(OPENAI_KEY_ENV)
    owner = await connect(openai_thread)

    frames = await ask(owner, "Anyone there?")

    done = await expect_failure(frames, "provider_key_missing", "")
    assert OPENAI_KEY_ENV in done["error"]["message"]
    assert openai_server.requests == []


async def test_a_rate_limit_then_success_completes_the_reply(
    openai_thread, openai_server, worker, connect, settings
):
    settings.PARLEY_PROVIDER_MAX_RETRIES = 2
    openai_server.script(Scenario.error(429, retry_after="0.01"), Scenario.reply())
    owner = await connect(openai_thread)

    frames = await ask(owner, "Again?")

    assert not [frame for frame in frames if frame["type"] == "error"]
    assert frames[-1]["content"]["status"] == "completed"
    assert assert_well_formed_reply(frames) == REPLY
    assert len(openai_server.requests) == 2


async def test_cancel_closes_the_upstream_stream_within_a_second_and_tells_everyone(
    openai_thread, openai_server, worker, connect
):
    tokens = [f"word{number} " for number in range(200)]
    openai_server.script(Scenario.reply(tokens, delay=0.05))
    owner = await connect(openai_thread)
    participant = await connect(openai_thread, Role.PARTICIPANT)

    await owner.send({"type": "message", "content": "Talk for a while."})
    await owner.receive_until(
        lambda frame: frame["type"] == "response" and frame["stream_index"] >= 1
    )
    upstream = openai_server.last_request
    await participant.send({"type": "cancel", "content": None})
    closed = await asyncio.to_thread(upstream.wait_client_closed, 1.0)

    assert closed, "the provider stream was still open 1 s after the cancel"
    owner_frames = await owner.receive_until(until_complete)
    participant_frames = await participant.receive_until(until_complete)
    done = owner_frames[-1]["content"]
    assert done["status"] == "cancelled"
    assert participant_frames[-1]["content"] == done
    partial = done["text"]
    assert partial.startswith("word0 word1 ") and len(partial) < len("".join(tokens))
    run = await stored_run(owner_frames[-1]["run_id"])
    assert run.status == "cancelled"
    assert await assistant_texts(run.id) == [partial]


# --- anthropic ----------------------------------------------------------------------


async def test_anthropic_reply_streams_to_every_socket_as_configured(
    anthropic_thread, anthropic_server, worker, connect
):
    anthropic_server.script(Scenario.reply(usage=(8, 5)))
    owner = await connect(anthropic_thread)
    participant = await connect(anthropic_thread, Role.PARTICIPANT)
    await ask(owner, "first question")

    frames = await ask(owner, "Tell me about foxes.")
    participant_frames = await participant.receive_until(
        lambda frame: until_complete(frame) and frame["run_id"] == frames[-1]["run_id"]
    )

    assert (
        thread_events(frames)
        == thread_events(participant_frames)[-len(thread_events(frames)) :]
    )
    assert assert_well_formed_reply(frames) == REPLY
    assert frames[-1]["content"]["usage"] == {"input_tokens": 8, "output_tokens": 5}
    assert await assistant_texts(frames[-1]["run_id"]) == [REPLY]
    sent = anthropic_server.last_request
    assert sent.path == "/v1/messages"
    assert sent.api_key == ANTHROPIC_KEY
    body = sent.body
    assert (body["model"], body["max_tokens"], body["system"]) == (
        "claude-test",
        222,
        SYSTEM_PROMPT,
    )
    assert body["stop_sequences"] == ["###"]
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("user", "first question"),
        ("assistant", REPLY),
        ("user", "Tell me about foxes."),
    ]


@pytest.mark.parametrize(
    ("scenario", "code", "partial"),
    [
        (Scenario.error(401), "provider_auth_failed", ""),
        (Scenario.error_event(2), "provider_unavailable", "The quick "),
        (Scenario.dropped(3), "provider_connection_lost", "The quick brown "),
    ],
    ids=["401", "overloaded mid-stream", "dropped mid-stream"],
)
async def test_anthropic_failures_end_failed_with_the_partial_text(
    anthropic_thread, anthropic_server, worker, connect, scenario, code, partial
):
    anthropic_server.script(scenario)
    owner = await connect(anthropic_thread)

    frames = await ask(owner, "Tell me about foxes.")

    await expect_failure(frames, code, partial)


async def test_anthropic_tool_use_arrives_as_state_frames(
    anthropic_thread, anthropic_server, worker, connect
):
    call = FakeToolCall("lookup", ('{"q": ', '"fox"}'), id="toolu_1")
    anthropic_server.script(
        Scenario.reply(["Looking. "], tool_calls=[call]), Scenario.reply(["Done."])
    )
    owner = await connect(anthropic_thread)

    frames = await ask(owner, "Look up foxes.")

    calls = [
        frame["content"]["data"]
        for frame in frames
        if frame["type"] == "state" and frame["content"]["kind"] == "tool_call"
    ]
    assert calls == [{"id": "toolu_1", "name": "lookup", "arguments": {"q": "fox"}}]
    assert frames[-1]["content"]["status"] == "completed"
    assert frames[-1]["content"]["text"] == "Looking. \n\nDone."


async def test_anthropic_cancel_closes_the_upstream_stream_within_a_second(
    anthropic_thread, anthropic_server, worker, connect
):
    tokens = [f"word{number} " for number in range(200)]
    anthropic_server.script(Scenario.reply(tokens, delay=0.05))
    owner = await connect(anthropic_thread)
    participant = await connect(anthropic_thread, Role.PARTICIPANT)

    await owner.send({"type": "message", "content": "Talk for a while."})
    await participant.receive_until(
        lambda frame: frame["type"] == "response" and frame["stream_index"] >= 1
    )
    upstream = anthropic_server.last_request
    await owner.send({"type": "cancel", "content": None})

    assert await asyncio.to_thread(upstream.wait_client_closed, 1.0)
    complete = (await participant.receive_until(until_complete))[-1]
    done = complete["content"]
    assert done["status"] == "cancelled"
    assert (await owner.receive_until(until_complete))[-1]["content"] == done
    assert done["text"].startswith("word0 word1 ")
    assert await assistant_texts(complete["run_id"]) == [done["text"]]
