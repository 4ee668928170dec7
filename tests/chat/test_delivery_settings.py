"""The seed's `config` fields: `agent_name` switches the thread's agent;
`progressive_updates`, `stream_format` and `stream_mode` say how replies are
delivered, open to every thread and honoured at run time; bad values are
`invalid_config`."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from agents.models import AgentConfig
from chat.models import Role, Thread

pytestmark = pytest.mark.django_db(transaction=True)


def complete(frame: dict) -> bool:
    return frame["type"] == "state_complete"


async def configure(client, content: dict) -> dict:
    await client.send({"type": "config", "content": content, "request_id": "cfg"})
    frames = await client.receive_until(lambda f: f.get("request_id") == "cfg")
    return frames[-1]


async def test_message_mode_delivers_the_reply_as_one_chunk(
    thread, users, worker, client_for
):
    owner = client_for(thread.id, users[Role.OWNER])
    await owner.join()
    reply = await configure(owner, {"stream_mode": "message"})
    assert reply["content"]["config"]["stream_mode"] == "message"

    await owner.send({"type": "message", "content": "one two three four five"})
    frames = await owner.receive_until(complete)
    chunks = [f["content"] for f in frames if f["type"] == "response"]
    assert chunks == ["one two three four five"]
    assert frames[-1]["content"]["chunks"] == 1


async def test_sentences_mode_cuts_at_sentence_ends(thread, users, worker, client_for):
    owner = client_for(thread.id, users[Role.OWNER])
    await owner.join()
    await configure(owner, {"stream_mode": "sentences"})
    await owner.send({"type": "message", "content": "First one. Second one! Last"})
    frames = await owner.receive_until(complete)
    chunks = [f["content"] for f in frames if f["type"] == "response"]
    assert chunks == ["First one. ", "Second one! ", "Last"]


async def test_without_progressive_updates_only_the_final_state_comes(
    thread, users, worker, client_for
):
    owner = client_for(thread.id, users[Role.OWNER])
    await owner.join()
    await owner.send({"type": "message", "content": "with updates"})
    with_updates = await owner.receive_until(complete)
    assert any(f["type"] == "state" for f in with_updates)  # the echo's usage

    await configure(owner, {"progressive_updates": False})
    await owner.send({"type": "message", "content": "without them"})
    without = await owner.receive_until(complete)
    assert not any(f["type"] == "state" for f in without)
    assert without[-1]["content"]["text"] == "without them"


async def test_agent_name_switches_the_threads_agent_for_the_next_reply(
    thread, users, worker, client_for
):
    await AgentConfig.objects.acreate(
        name="shouter", provider="echo", extra_params={"tokens_per_second": 0}
    )
    owner = client_for(thread.id, users[Role.OWNER])
    observer = client_for(thread.id, users[Role.OBSERVER])
    await owner.join()
    await observer.join()

    await configure(owner, {"agent_name": "shouter", "stream_mode": "message"})

    updated = (
        await observer.receive_until(
            lambda f: (
                f["type"] == "status" and f["content"]["state"] == "thread_updated"
            )
        )
    )[-1]
    assert updated["content"]["agent"] == "shouter"
    stored = await Thread.objects.select_related("agent").aget(pk=thread.pk)
    assert stored.agent.name == "shouter"
    await owner.send({"type": "message", "content": "hello"})
    done = (await owner.receive_until(complete))[-1]
    message = await thread.messages.select_related("agent").aget(
        run_id=done["run_id"], role="assistant"
    )
    assert message.agent.name == "shouter"


@pytest.mark.parametrize(
    "content, field",
    [
        ({"stream_mode": "words"}, "stream_mode"),
        ({"stream_format": "html"}, "stream_format"),
        ({"progressive_updates": "yes"}, "progressive_updates"),
        ({"provider": "openai"}, "provider"),
        ({"agent_name": "nobody"}, "nobody"),
    ],
)
async def test_a_bad_value_is_invalid_config(thread, users, client_for, content, field):
    owner = client_for(thread.id, users[Role.OWNER])
    await owner.join()
    error = await configure(owner, content)
    assert error["type"] == "error"
    assert error["content"]["code"] in ("invalid_config", "agent_not_found")
    assert field in error["content"]["message"]


def test_a_text_thread_shows_replies_as_written(thread, users, client):
    thread.config = {"stream_format": "text"}
    thread.save()
    thread.messages.create(role="assistant", text="**not bold**", agent=thread.agent)
    client.force_login(users[Role.OWNER])
    page = client.get(f"/threads/{thread.id}/").content.decode()
    assert 'data-stream-format="text"' in page
    assert '<div class="msg-body plain">**not bold**</div>' in page
    api = APIClient()
    api.force_authenticate(users[Role.OWNER])
    assert api.get(f"/api/threads/{thread.id}/").json()["config"] == {
        "stream_format": "text"
    }
