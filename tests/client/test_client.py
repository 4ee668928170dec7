"""parley_client against a real daphne (the embedded mode): replies stream,
requests get their replies, refusals and closes are the right errors,
questions are answered by a callback, and REST helpers work."""

from __future__ import annotations

import asyncio

import pytest
from parley_client import (
    ConnectionClosedError,
    ConnectionState,
    InputRequested,
    ParleyAPI,
    ParleyAPISync,
    ParleyClient,
    RequestError,
    RetryPolicy,
    RunCompleted,
    StateChanged,
    SyncParleyClient,
    TextDelta,
)

from tests.eventually import eventually


def client_for(server, thread_id: str, user: str = "owner", **options) -> ParleyClient:
    return ParleyClient(server.url, thread_id, token=server.tokens[user], **options)


async def test_ask_streams_the_echo_reply(embedded):
    thread_id = embedded.new_thread()
    text = "the quick brown fox jumps over the lazy dog"
    states = []

    async with client_for(embedded, thread_id, on_state_change=states.append) as client:
        assert client.state is ConnectionState.CONNECTED
        assert (client.user, client.role) == ("owner", "owner")
        events = [event async for event in client.ask(text)]

    chunks = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(chunks) > 1 and "".join(chunks) == text  # streamed, word by word
    assert isinstance(events[-1], RunCompleted) and events[-1].ok
    assert events[-1].text == text
    assert states == [
        ConnectionState.CONNECTING,
        ConnectionState.CONNECTED,
        ConnectionState.DISCONNECTING,
        ConnectionState.DISCONNECTED,
    ]


async def test_requests_get_their_own_reply_or_their_error(embedded):
    thread_id = embedded.new_thread()
    async with client_for(embedded, thread_id) as client:
        pong = await client.request({"type": "ping", "request_id": "mine-1"})
        with pytest.raises(RequestError) as refused:
            await client.cancel()  # nothing runs
        with pytest.raises(RequestError) as unknown:
            await client.request({"type": "shout", "content": "hi"})

    assert (pong.type, pong.request_id) == ("pong", "mine-1")
    assert refused.value.code == "run_not_found"
    assert unknown.value.code == "unknown_type"


async def test_an_observer_asking_gets_read_only(embedded):
    thread_id = embedded.new_thread()
    async with client_for(embedded, thread_id, "observer") as observer:
        assert observer.role == "observer"
        with pytest.raises(RequestError) as refused:
            async for _ in observer.ask("may I?"):
                pass
        assert observer.state is ConnectionState.CONNECTED  # the socket stays

    assert refused.value.code == "read_only"


async def test_a_removed_member_gets_connection_closed_4403(embedded):
    thread_id = embedded.new_thread()
    reconnects = []
    client = client_for(
        embedded, thread_id, "participant", on_state_change=reconnects.append
    )
    await client.connect()
    seen = []

    async def watch():
        async for event in client.events():
            seen.append(event)

    watcher = asyncio.ensure_future(watch())
    await client.ping()  # the watcher is subscribed and the socket is live
    async with ParleyAPI(embedded.url, embedded.tokens["owner"]) as owner:
        await owner.remove_member(thread_id, "participant")

    with pytest.raises(ConnectionClosedError) as closed:
        await asyncio.wait_for(watcher, 10)

    assert closed.value.close_code == 4403
    assert closed.value.error_code == "forbidden"
    assert not closed.value.by_client
    assert client.state is ConnectionState.DISCONNECTED
    assert ConnectionState.RECONNECTING not in reconnects  # not retried
    with pytest.raises(ConnectionClosedError):
        await client.ping()
    await client.close()


async def test_connecting_to_an_unknown_thread_or_with_a_bad_token_is_closed(
    embedded,
):
    thread_id = embedded.new_thread()
    stranger = client_for(embedded, "00000000-0000-0000-0000-000000000000")
    with pytest.raises(ConnectionClosedError) as no_thread:
        await stranger.connect()
    bad_token = ParleyClient(embedded.url, thread_id, token="not-a-token")
    with pytest.raises(ConnectionClosedError) as no_login:
        await bad_token.connect()
    not_member = client_for(embedded, thread_id, "stranger")
    with pytest.raises(ConnectionClosedError) as not_allowed:
        await not_member.connect()

    assert no_thread.value.close_code == 4404
    assert no_login.value.close_code == 4401
    assert not_allowed.value.close_code in (4403, 4404)
    assert stranger.state is ConnectionState.DISCONNECTED


async def test_a_question_is_answered_by_the_callback(embedded):
    thread_id = embedded.new_thread()
    asked = []

    async def on_input(question: InputRequested) -> str:
        asked.append(question.question)
        return "blue"

    async with client_for(embedded, thread_id) as client:
        events = [e async for e in client.ask("/ask Which colour?", on_input=on_input)]

    assert asked == ["Which colour?"]
    answered = [
        e for e in events if isinstance(e, StateChanged) and e.kind == "input_received"
    ]
    assert answered and answered[0].data["answer"] == "blue"
    assert answered[0].data["by"] == "owner"
    assert events[-1].text == "You answered: blue" and events[-1].ok


async def test_a_question_can_be_answered_by_another_member_awaiting_it(embedded):
    thread_id = embedded.new_thread()
    async with (
        client_for(embedded, thread_id) as owner,
        client_for(embedded, thread_id, "participant") as participant,
    ):

        async def answer_when_asked():
            async for event in participant.events():
                if isinstance(event, InputRequested):
                    return await participant.answer(event, "green")

        answering = asyncio.ensure_future(answer_when_asked())
        await participant.ping()
        events = [e async for e in owner.ask("/ask Which colour?")]
        accepted = await asyncio.wait_for(answering, 5)

    assert accepted.content["request"] == "input"
    assert events[-1].text == "You answered: green"


async def test_a_failed_run_completes_with_its_error(embedded):
    thread_id = embedded.new_thread()
    async with client_for(embedded, thread_id) as client:
        events = [e async for e in client.ask("/fail half a reply")]

    done = events[-1]
    assert isinstance(done, RunCompleted) and not done.ok
    assert done.status == "failed" and done.error["code"] == "provider_error"
    assert done.text == "half a reply"


async def test_follow_picks_up_a_run_started_over_rest(embedded):
    thread_id = embedded.new_thread()
    async with client_for(embedded, thread_id, "observer") as observer:
        async with ParleyAPI(embedded.url, embedded.tokens["participant"]) as api:
            run = await api.start_run(thread_id, "started elsewhere")
        events = [e async for e in observer.follow(run["id"])]
        async with ParleyAPI(embedded.url, embedded.tokens["owner"]) as api:
            history = [m async for m in api.history(thread_id, page_size=1)]
            finished = await api.run(run["id"])

    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == (
        "started elsewhere"
    )
    assert [m["text"] for m in history] == ["started elsewhere"] * 2
    assert finished["status"] == "completed"


def test_the_sync_facade_and_sync_rest(embedded):
    with ParleyAPISync(embedded.url) as api:
        token = api.token_for("participant", "client-tests-password")
        thread = api.create_thread("echo", "sync")
        assert api.thread(thread["id"])["role"] == "owner"
        assert [m["username"] for m in api.members(thread["id"])] == []

    with SyncParleyClient(embedded.url, thread["id"], token=token) as client:
        events = list(client.ask("sync works"))
        assert client.state is ConnectionState.CONNECTED

    assert events[-1].text == "sync works"
    assert client.state is ConnectionState.DISCONNECTED


async def test_a_dead_server_raises_connection_lost_when_retries_run_out():
    from parley_client import ConnectionLostError

    from tests.integration.conftest import free_port

    client = ParleyClient(
        f"http://127.0.0.1:{free_port()}",
        "00000000-0000-0000-0000-000000000000",
        token="t",
        retry=RetryPolicy(initial_delay=0.01, max_delay=0.05, max_attempts=4),
    )
    with pytest.raises(ConnectionLostError) as lost:
        await client.connect()

    assert lost.value.attempts == 4
    assert client.state is ConnectionState.DISCONNECTED


async def test_bad_input_is_refused_before_anything_is_sent(embedded):
    from parley_client import FrameTooLargeError

    with pytest.raises(ValueError):
        ParleyClient("ftp://example.com", "x", token="t")
    with pytest.raises(ValueError):
        ParleyClient(embedded.url, "x", token="")
    thread_id = embedded.new_thread()
    async with client_for(embedded, thread_id) as client:
        with pytest.raises(FrameTooLargeError):
            await client.post("x" * 70_000)
        with pytest.raises(ValueError):
            await client.post("")
        # Still connected and usable: nothing was sent.
        assert (await client.ping()).type == "pong"
        await eventually(lambda: client.state is ConnectionState.CONNECTED)
