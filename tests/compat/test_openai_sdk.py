"""The official `openai` SDK against Parley's OpenAI-compatible endpoint
(/api/openai/v1), over a real daphne: what an SDK user gets back, and what the
thread's members see of it."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from tests.eventually import eventually_sync
from tests.fakes import FakeToolCall, Scenario
from tests.integration.conftest import Socket


def thread_of(raw) -> str:
    return raw.headers["x-parley-thread-id"]


def roles_and_texts(history: list[dict]) -> list[tuple[str, str]]:
    return [(message["role"], message["text"]) for message in history]


# --- models ------------------------------------------------------------------------


def test_models_are_the_enabled_agents(parley):
    with parley.client() as client:
        names = [model.id for model in client.models.list()]
        assert {"echo", "slow-echo", "calc"} <= set(names)
        assert "retired" not in names
        assert client.models.retrieve("echo").owned_by == "parley"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("retired")


# --- replies -------------------------------------------------------------------------


def test_a_non_streaming_call_answers_with_the_echo_agents_reply(parley):
    with parley.client() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="echo",
            messages=[
                {"role": "system", "content": "ignored: the agent has its own"},
                {"role": "user", "content": "Hello from the SDK"},
            ],
        )
        completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == "echo"
    (choice,) = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello from the SDK"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    thread_id = thread_of(raw)
    assert completion.metadata["parley_thread_id"] == thread_id
    # Stored like any reply, in a new thread of the caller's titled after it.
    assert roles_and_texts(parley.history(thread_id)) == [
        ("user", "Hello from the SDK"),
        ("assistant", "Hello from the SDK"),
    ]
    with parley.api() as api:
        thread = api.get(f"/threads/{thread_id}/").json()
    assert (thread["title"], thread["agent"], thread["role"]) == (
        "Hello from the SDK",
        "echo",
        "owner",
    )


def test_a_stream_sends_the_role_then_the_text_then_the_finish_and_usage(parley):
    text = "one two three four five six"
    with parley.client() as client:
        with client.chat.completions.with_streaming_response.create(
            model="echo",
            messages=[{"role": "user", "content": text}],
            stream=True,
            stream_options={"include_usage": True},
        ) as response:
            thread_id = response.headers["x-parley-thread-id"]
            chunks = list(response.parse())
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks[1:] if c.choices]
    assert "".join(piece or "" for piece in contents) == text
    assert len([piece for piece in contents if piece]) > 1  # word by word
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert roles_and_texts(parley.history(thread_id))[-1] == ("assistant", text)


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_using_agent_runs_its_tools_and_the_client_gets_the_final_text(
    parley, model_server, stream
):
    model_server.script(
        Scenario.calls(FakeToolCall("calculate", ('{"expression": "6*7"}',))),
        Scenario.tool_results("The answer is "),
    )
    with parley.client() as client:
        if stream:
            chunks = list(
                client.chat.completions.create(
                    model="calc",
                    messages=[{"role": "user", "content": "What is 6*7?"}],
                    stream=True,
                )
            )
            text = "".join(
                c.choices[0].delta.content or "" for c in chunks if c.choices
            )
            assert chunks[-1].choices[0].finish_reason == "stop"
        else:
            completion = client.chat.completions.create(
                model="calc", messages=[{"role": "user", "content": "What is 6*7?"}]
            )
            text = completion.choices[0].message.content
    assert text == "The answer is 42"
    # The model was asked twice: once for the tool, once with its result.
    assert [request.body["model"] for request in model_server.requests[-2:]] == [
        "fake-model",
        "fake-model",
    ]


def test_a_call_continues_the_thread_its_header_or_metadata_names(parley):
    thread_id = parley.new_thread()
    with parley.client() as client:
        client.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "first"}],
            extra_headers={"X-Parley-Thread-Id": thread_id},
        )
        client.chat.completions.create(
            model="echo",
            messages=[
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "first"},
                {"role": "user", "content": [{"type": "text", "text": "second"}]},
            ],
            metadata={"parley_thread_id": thread_id},
        )
        # A participant writes there too.
        with parley.client("participant") as theirs:
            theirs.chat.completions.create(
                model="echo",
                messages=[{"role": "user", "content": "third"}],
                extra_headers={"X-Parley-Thread-Id": thread_id},
            )
    assert roles_and_texts(parley.history(thread_id)) == [
        ("user", "first"),
        ("assistant", "first"),
        ("user", "second"),
        ("assistant", "second"),
        ("user", "third"),
        ("assistant", "third"),
    ]


async def test_a_member_watching_the_thread_sees_the_call_live(parley):
    thread_id = parley.new_thread()
    async with Socket(
        parley.ws_url(thread_id), parley.tokens["participant"]
    ) as watcher:
        assert (await watcher.receive())["content"]["state"] == "connected"
        assert (await watcher.receive())["content"]["state"] in ("snapshot", "resynced")
        async with parley.async_client() as client:
            call = asyncio.create_task(
                client.chat.completions.create(
                    model="echo",
                    messages=[{"role": "user", "content": "watch this reply"}],
                    extra_headers={"X-Parley-Thread-Id": thread_id},
                )
            )
            frames = await watcher.receive_until(
                lambda frame: frame["type"] == "state_complete"
            )
            completion = await call
    (posted,) = [frame for frame in frames if frame["type"] == "message"]
    assert posted["content"]["text"] == "watch this reply"
    assert posted["content"]["author"] == {"username": "owner"}
    chunks = [frame["content"] for frame in frames if frame["type"] == "response"]
    assert "".join(chunks) == "watch this reply" and len(chunks) > 1
    assert frames[-1]["content"]["text"] == completion.choices[0].message.content
    assert completion.id == f"chatcmpl-{frames[-1]['run_id'].replace('-', '')}"


# --- errors --------------------------------------------------------------------------


def test_an_unknown_or_disabled_model_is_openais_not_found(parley):
    with parley.client() as client:
        for name in ("no-such-agent", "retired"):
            with pytest.raises(openai.NotFoundError) as raised:
                client.chat.completions.create(
                    model=name, messages=[{"role": "user", "content": "hi"}]
                )
            assert raised.value.code == "model_not_found"
            assert raised.value.body["type"] == "invalid_request_error"


def test_a_bad_or_missing_key_is_an_authentication_error(parley):
    with openai.OpenAI(base_url=parley.openai_base_url, api_key="not-a-token") as bad:
        with pytest.raises(openai.AuthenticationError) as raised:
            bad.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "hi"}]
            )
        assert raised.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    response = httpx.get(f"{parley.openai_base_url}/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_malformed_bodies_are_400_in_openais_shape(parley):
    url = f"{parley.openai_base_url}/chat/completions"
    headers = {"Authorization": f"Bearer {parley.tokens['owner']}"}
    for body in (b"{not json", b"[1, 2]", json.dumps({"model": "echo"}).encode()):
        response = httpx.post(url, content=body, headers=headers)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
    with parley.client() as client, pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="echo", messages=[{"role": "system", "content": "no user here"}]
        )
    assert raised.value.param == "messages"
    # Exactly these paths: a trailing slash is not one of them.
    response = httpx.post(url + "/", content=b"{}", headers=headers)
    assert response.status_code == 404 and "error" in response.json()


def test_an_observer_may_not_post_and_a_stranger_does_not_see_the_thread(parley):
    thread_id = parley.new_thread()
    header = {"X-Parley-Thread-Id": thread_id}
    message = [{"role": "user", "content": "may I?"}]
    with parley.client("observer") as client:
        with pytest.raises(openai.PermissionDeniedError) as raised:
            client.chat.completions.create(
                model="echo", messages=message, extra_headers=header
            )
        assert raised.value.code == "read_only"
    with parley.client("stranger") as client:
        with pytest.raises(openai.NotFoundError) as raised:
            client.chat.completions.create(
                model="echo", messages=message, extra_headers=header
            )
        assert raised.value.code == "thread_not_found"
    assert parley.history(thread_id) == []


def test_a_failed_run_is_an_error_and_is_not_retried(parley):
    with parley.client() as client:
        with pytest.raises(openai.InternalServerError) as raised:
            client.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "/fail half a"}]
            )
    assert raised.value.code == "provider_error"
    thread_id = raised.value.response.headers["x-parley-thread-id"]
    # The SDK retries 5xx unless told not to: the message was posted once.
    history = parley.history(thread_id)
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert history[1]["status"] == "failed" and history[1]["text"] == "half a"


def test_a_failed_run_ends_a_stream_with_an_error_event(parley):
    received = []
    with parley.client() as client:
        stream = client.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "/fail streamed then"}],
            stream=True,
        )
        with pytest.raises(openai.APIError) as raised:
            for chunk in stream:
                received.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(received) == "streamed then"
    assert raised.value.code == "provider_error"


def test_the_busy_policy_applies_as_on_the_socket(parley):
    thread_id = parley.new_thread("slow-echo")
    header = {"X-Parley-Thread-Id": thread_id}
    words = " ".join(["word"] * 20)
    with parley.client(max_retries=0) as client:
        stream = client.chat.completions.create(
            model="slow-echo",
            messages=[{"role": "user", "content": words}],
            extra_headers=header,
            stream=True,
        )
        with stream:
            next(iter(stream))  # the run is on
            with pytest.raises(openai.ConflictError) as raised:
                client.chat.completions.create(
                    model="slow-echo",
                    messages=[{"role": "user", "content": "me too"}],
                    extra_headers=header,
                )
            assert raised.value.code == "thread_busy"
            with pytest.raises(openai.BadRequestError) as mismatch:
                client.chat.completions.create(
                    model="echo",
                    messages=[{"role": "user", "content": "other agent"}],
                    extra_headers=header,
                )
            assert mismatch.value.code == "model_mismatch"


def test_a_client_that_hangs_up_does_not_cancel_the_run(parley):
    words = " ".join(f"w{n}" for n in range(12))
    with parley.client() as client:
        with client.chat.completions.with_streaming_response.create(
            model="slow-echo",
            messages=[{"role": "user", "content": words}],
            stream=True,
        ) as response:
            run_id = response.headers["x-parley-run-id"]
            thread_id = response.headers["x-parley-thread-id"]
            stream = response.parse()
            next(iter(stream))
            next(iter(stream))  # the first words have come; hang up
    run = eventually_sync(
        lambda: (
            (run := parley.run(run_id))["status"] != "running"
            and run["status"] != "queued"
            and run
        ),
        what="the run's end",
    )
    assert run["status"] == "completed"
    assert parley.history(thread_id)[-1]["text"] == words


def test_a_member_removed_mid_reply_stops_receiving_it(parley):
    thread_id = parley.new_thread("slow-echo")
    words = " ".join(f"w{n}" for n in range(15))
    with parley.client("participant") as client:
        stream = client.chat.completions.create(
            model="slow-echo",
            messages=[{"role": "user", "content": words}],
            extra_headers={"X-Parley-Thread-Id": thread_id},
            stream=True,
        )
        chunks = iter(stream)
        next(chunks), next(chunks)  # the role, the first word
        with parley.api() as api:
            removed = api.delete(f"/threads/{thread_id}/members/participant/")
            assert removed.status_code == 204
        with pytest.raises(openai.APIError) as raised:
            for _chunk in chunks:
                pass
    assert raised.value.code == "forbidden"


def test_a_run_cancelled_in_the_thread_ends_the_stream_with_its_reason(parley):
    words = " ".join(f"w{n}" for n in range(15))
    with parley.client() as client:
        with client.chat.completions.with_streaming_response.create(
            model="slow-echo",
            messages=[{"role": "user", "content": words}],
            stream=True,
        ) as response:
            run_id = response.headers["x-parley-run-id"]
            chunks = iter(response.parse())
            next(chunks), next(chunks)  # the role, the first word
            with parley.api() as api:
                cancelled = api.post(
                    f"/runs/{run_id}/cancel/", json={"reason": "enough words"}
                )
                assert cancelled.status_code == 200, cancelled.text
            with pytest.raises(openai.APIError) as raised:
                for _chunk in chunks:
                    pass
    assert raised.value.code == "run_cancelled"
    assert "enough words" in raised.value.message
