"""The thread socket, end to end in one process: WebsocketCommunicator, the
embedded event log and the agent worker running in the test's event loop."""

import asyncio
import json
import time

import pytest
from channels.db import database_sync_to_async

from agents.models import Run
from chat.models import Message, Role

pytestmark = pytest.mark.django_db(transaction=True)


async def joined(client):
    status, snapshot = await client.join()
    if client.presence:  # then everyone, this socket included, hears who is here
        username = status["content"]["user"]
        await client.receive_until(
            lambda f: (
                f["content"].get("state") == "presence"
                and username in [u["username"] for u in f["content"]["users"]]
            )
        )
    return status, snapshot


async def expect_close(client, code):
    output = await client.communicator.receive_output(timeout=5)
    while output["type"] == "websocket.send":
        output = await client.communicator.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": code}


def until_complete(frame):
    return frame["type"] == "state_complete"


def events(frames):
    return [f for f in frames if f["event_id"] is not None]


async def count(model, **filters):
    return await database_sync_to_async(model.objects.filter(**filters).count)()


async def test_two_sockets_receive_identical_frames_in_identical_order(
    thread, users, worker, client_for
):
    owner = client_for(thread.id, users[Role.OWNER])
    participant = client_for(thread.id, users[Role.PARTICIPANT])
    await joined(owner)
    await joined(participant)

    await owner.send(
        {"type": "message", "content": "one two three four five", "request_id": "q1"}
    )
    owner_frames = await owner.receive_until(until_complete)
    participant_frames = await participant.receive_until(until_complete)

    assert events(owner_frames) == events(participant_frames)
    ids = [f["event_id"] for f in events(owner_frames)]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    chunks = [f for f in owner_frames if f["type"] == "response"]
    assert [c["stream_index"] for c in chunks] == list(range(len(chunks)))
    assert "".join(c["content"] for c in chunks) == "one two three four five"
    assert events(owner_frames)[0]["type"] == "message"
    assert events(owner_frames)[0]["request_id"] == "q1"
    assert owner_frames[-1]["content"]["status"] == "completed"
    assert (
        await count(
            Message, thread=thread, role="assistant", text="one two three four five"
        )
        == 1
    )


async def test_observer_receives_everything_and_cannot_write(
    thread, users, worker, client_for
):
    owner = client_for(thread.id, users[Role.OWNER])
    observer = client_for(thread.id, users[Role.OBSERVER])
    await joined(owner)
    status, _ = await joined(observer)
    assert status["content"]["role"] == "observer"

    for frame_type, content in [
        ("message", "let me in"),
        ("config", {"temperature": 1}),
        ("cancel", None),
        ("input", {"run_id": "00000000-0000-0000-0000-000000000000", "text": "x"}),
    ]:
        await observer.send(
            {"type": frame_type, "content": content, "request_id": frame_type}
        )
        error = await observer.receive()
        assert error["type"] == "error"
        assert error["content"]["code"] == "read_only"
        assert error["request_id"] == frame_type
    assert await count(Message, thread=thread) == 0

    await owner.send({"type": "message", "content": "hello observers"})
    owner_frames = await owner.receive_until(until_complete)
    observer_frames = await observer.receive_until(until_complete)
    assert events(owner_frames) == events(observer_frames)

    await observer.send({"type": "ping", "content": None, "request_id": "p"})
    pong = await observer.receive()
    assert pong["type"] == "pong" and pong["request_id"] == "p"


async def test_stranger_gets_4403_and_unknown_thread_4404_and_anonymous_4401(
    thread, users, client_for
):
    from django.contrib.auth.models import AnonymousUser

    stranger = client_for(thread.id, users["stranger"])
    assert (await stranger.connect())[0]
    await expect_close(stranger, 4403)

    missing = client_for("6f1c1c55-0000-4000-8000-000000000000", users[Role.OWNER])
    assert (await missing.connect())[0]
    await expect_close(missing, 4404)

    garbage = client_for("not-a-uuid", users[Role.OWNER])
    assert (await garbage.connect())[0]
    await expect_close(garbage, 4404)

    anonymous = client_for(thread.id, AnonymousUser())
    assert (await anonymous.connect())[0]
    await expect_close(anonymous, 4401)


async def test_foreign_origin_is_refused(thread, users, client_for):
    client = client_for(
        thread.id, users[Role.OWNER], headers=[(b"origin", b"https://evil.example")]
    )
    connected, _ = await client.connect()
    assert not connected
    same_site = client_for(
        thread.id,
        users[Role.OWNER],
        headers=[(b"origin", b"http://localhost:8000"), (b"host", b"localhost:8000")],
    )
    assert (await same_site.connect())[0]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{oops", "invalid_json"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "message"}', "invalid_frame"),
        ('{"type": "message", "content": "x", "extra": true}', "invalid_frame"),
        ('"just a string"', "invalid_frame"),
    ],
)
async def test_bad_frames_get_an_error_and_the_socket_survives(
    thread, users, client_for, text, code
):
    owner = client_for(thread.id, users[Role.OWNER])
    await joined(owner)
    await owner.send(text)
    error = await owner.receive()
    assert error["type"] == "error" and error["content"]["code"] == code
    await owner.send({"type": "ping", "content": None})
    assert (await owner.receive())["type"] == "pong"
    assert await count(Message, thread=thread) == 0


async def test_binary_frames_get_an_error(thread, users, client_for):
    owner = client_for(thread.id, users[Role.OWNER])
    await joined(owner)
    await owner.communicator.send_to(bytes_data=b"\x00\x01")
    assert (await owner.receive())["content"]["code"] == "invalid_frame"


async def test_oversized_frame_closes_with_1009_and_writes_nothing(
    thread, users, client_for, settings
):
    settings.PARLEY_MAX_FRAME_BYTES = 1000
    owner = client_for(thread.id, users[Role.OWNER])
    await joined(owner)
    await owner.send({"type": "message", "content": "x" * 2000})
    error = await owner.receive()
    assert error["content"]["code"] == "frame_too_large"
    await expect_close(owner, 1009)
    assert await count(Message, thread=thread) == 0


async def test_too_long_message_is_refused_without_closing(
    thread, users, client_for, settings
):
    settings.PARLEY_MAX_MESSAGE_CHARS = 10
    owner = client_for(thread.id, users[Role.OWNER])
    await joined(owner)
    await owner.send({"type": "message", "content": "x" * 11, "request_id": "long"})
    error = await owner.receive()
    assert (
        error["content"]["code"] == "message_too_long" and error["request_id"] == "long"
    )
    assert await count(Message, thread=thread) == 0


async def test_message_rate_limit_per_user(thread, users, worker, client_for, settings):
    settings.PARLEY_MESSAGES_PER_MINUTE = 2
    # Counts are per calendar minute: do not straddle one.
    if (left := 60 - time.time() % 60) < 10:
        await asyncio.sleep(left)
    owner = client_for(thread.id, users[Role.OWNER])
    await joined(owner)
    for _ in range(2):
        await owner.send({"type": "message", "content": "hi"})
        await owner.receive_until(until_complete)
    await owner.send({"type": "message", "content": "hi", "request_id": "third"})
    frame = await owner.receive_type("error")
    assert frame["content"]["code"] == "rate_limited"


async def test_reconnecting_with_last_event_id_resumes_exactly(
    thread, users, worker, client_for
):
    thread.agent.extra_params = {"tokens_per_second": 40}
    await database_sync_to_async(thread.agent.save)()
    words = " ".join(f"w{i}" for i in range(30))
    first = client_for(thread.id, users[Role.OWNER])
    await joined(first)
    await first.send({"type": "message", "content": words})
    seen = await first.receive_until(
        lambda f: f["type"] == "response" and f["stream_index"] >= 5
    )
    last_event_id = seen[-1]["event_id"]
    await first.close()

    second = client_for(
        thread.id, users[Role.OWNER], query=f"last_event_id={last_event_id}"
    )
    assert (await second.connect())[0]
    assert (await second.receive())["content"]["state"] == "connected"
    rest = events(await second.receive_until(until_complete))
    ids = [f["event_id"] for f in rest]
    assert ids == list(range(last_event_id + 1, last_event_id + 1 + len(ids)))
    chunks = [f for f in seen + rest if f["type"] == "response"]
    assert [c["stream_index"] for c in chunks] == list(range(len(chunks)))
    assert "".join(c["content"] for c in chunks) == words == rest[-1]["content"]["text"]


async def test_resume_from_outside_the_window_gets_resynced_snapshot(
    thread, users, worker, client_for
):
    client = client_for(thread.id, users[Role.OWNER], query="last_event_id=999")
    assert (await client.connect())[0]
    await client.receive()
    snapshot = await client.receive()
    assert snapshot["content"]["state"] == "resynced"
    assert snapshot["content"]["last_event_id"] == 0


async def test_a_socket_opened_mid_stream_sees_the_text_so_far_then_the_rest(
    thread, users, worker, client_for
):
    thread.agent.extra_params = {"tokens_per_second": 40}
    await database_sync_to_async(thread.agent.save)()
    words = " ".join(f"w{i}" for i in range(25))
    owner = client_for(thread.id, users[Role.OWNER])
    await joined(owner)
    await owner.send({"type": "message", "content": words})
    await owner.receive_until(
        lambda f: f["type"] == "response" and f["stream_index"] >= 4
    )

    late = client_for(thread.id, users[Role.PARTICIPANT])
    assert (await late.connect())[0]
    await late.receive()
    snapshot = (await late.receive())["content"]
    assert snapshot["state"] == "snapshot"
    (run,) = snapshot["runs"]
    text, next_index = run["text"], run["next_stream_index"]
    assert next_index >= 5 and text
    rest = await late.receive_until(until_complete)
    for frame in rest:
        if frame["type"] == "response" and frame["stream_index"] >= next_index:
            assert frame["stream_index"] == next_index
            text += frame["content"]
            next_index += 1
    assert text == words == rest[-1]["content"]["text"]


async def test_cancel_keeps_the_partial_reply_and_tells_everyone(
    thread, users, worker, client_for
):
    thread.agent.extra_params = {"tokens_per_second": 20}
    await database_sync_to_async(thread.agent.save)()
    owner = client_for(thread.id, users[Role.OWNER])
    participant = client_for(thread.id, users[Role.PARTICIPANT])
    await joined(owner)
    await joined(participant)
    await owner.send({"type": "message", "content": " ".join(["word"] * 200)})
    await owner.receive_until(
        lambda f: f["type"] == "response" and f["stream_index"] >= 2
    )
    started = asyncio.get_running_loop().time()
    await participant.send({"type": "cancel", "content": None})
    done = (await owner.receive_until(until_complete))[-1]
    assert asyncio.get_running_loop().time() - started < 3
    assert done["content"]["status"] == "cancelled"
    partial = done["content"]["text"]
    assert partial.startswith("word") and len(partial) < len(" ".join(["word"] * 200))
    other = (await participant.receive_until(until_complete))[-1]
    assert other["content"] == done["content"]
    run = await database_sync_to_async(Run.objects.get)(pk=done["run_id"])
    assert run.status == "cancelled"
    assert await count(Message, run=run, role="assistant", text=partial) == 1


async def test_enqueue_policy_runs_messages_one_after_another(
    thread, users, worker, client_for
):
    owner = client_for(thread.id, users[Role.OWNER])
    await joined(owner)
    await owner.send({"type": "message", "content": "first reply"})
    await owner.send({"type": "message", "content": "second reply"})
    frames = await owner.receive_until(
        lambda f: until_complete(f) and f["content"]["text"] == "second reply",
        timeout=15,
    )
    completes = [f["content"]["text"] for f in frames if f["type"] == "state_complete"]
    assert completes == ["first reply", "second reply"]
    queued = [
        f for f in frames if f["type"] == "status" and f["content"]["state"] == "queued"
    ]
    assert [q["content"]["position"] for q in queued] == [0, 1]


async def test_reject_policy_answers_thread_busy(thread, users, worker, client_for):
    thread.agent.busy_policy = "reject"
    thread.agent.extra_params = {"tokens_per_second": 20}
    await database_sync_to_async(thread.agent.save)()
    owner = client_for(thread.id, users[Role.OWNER])
    await joined(owner)
    await owner.send({"type": "message", "content": "a b c d e f g h"})
    await owner.receive_type("response")
    await owner.send({"type": "message", "content": "me too", "request_id": "busy"})
    error = await owner.receive_type("error")
    assert error["content"]["code"] == "thread_busy" and error["request_id"] == "busy"


async def test_interrupt_policy_cancels_then_answers(thread, users, worker, client_for):
    thread.agent.busy_policy = "interrupt"
    thread.agent.extra_params = {"tokens_per_second": 20}
    await database_sync_to_async(thread.agent.save)()
    owner = client_for(thread.id, users[Role.OWNER])
    await joined(owner)
    await owner.send({"type": "message", "content": " ".join(["long"] * 100)})
    await owner.receive_type("response")
    await owner.send({"type": "message", "content": "short"})
    frames = await owner.receive_until(
        lambda f: until_complete(f) and f["content"]["text"] == "short", timeout=15
    )
    statuses = [f["content"]["status"] for f in frames if f["type"] == "state_complete"]
    assert statuses == ["cancelled", "completed"]


async def test_provider_failure_reports_error_and_keeps_partial_text(
    thread, users, worker, client_for
):
    owner = client_for(thread.id, users[Role.OWNER])
    await joined(owner)
    await owner.send({"type": "message", "content": "/fail partial words here"})
    frames = await owner.receive_until(until_complete)
    error = next(f for f in frames if f["type"] == "error")
    assert error["content"]["code"] == "provider_error"
    done = frames[-1]["content"]
    assert done["status"] == "failed" and done["text"] == "partial words here"
    assert done["error"]["code"] == "provider_error"


async def test_input_request_is_answered_by_a_participant_not_an_observer(
    thread, users, worker, client_for
):
    owner = client_for(thread.id, users[Role.OWNER])
    participant = client_for(thread.id, users[Role.PARTICIPANT])
    observer = client_for(thread.id, users[Role.OBSERVER])
    for client in (owner, participant, observer):
        await joined(client)
    await owner.send({"type": "message", "content": "/ask Which colour?"})
    request = await participant.receive_type("input_request")
    assert request["content"]["question"] == "Which colour?"
    answer = {
        "run_id": request["run_id"],
        "input_id": request["content"]["input_id"],
        "text": "blue",
    }
    await observer.receive_type("input_request")
    await observer.send({"type": "input", "content": answer})
    assert (await observer.receive_type("error"))["content"]["code"] == "read_only"
    await participant.send({"type": "input", "content": answer})
    done = (await owner.receive_until(until_complete))[-1]
    assert done["content"]["text"] == "You answered: blue"


async def test_input_request_times_out_with_a_documented_outcome(
    thread, users, worker, client_for
):
    thread.agent.extra_params = {"tokens_per_second": 200, "input_timeout": 0.3}
    await database_sync_to_async(thread.agent.save)()
    owner = client_for(thread.id, users[Role.OWNER])
    await joined(owner)
    await owner.send({"type": "message", "content": "/ask Anyone?"})
    frames = await owner.receive_until(until_complete)
    assert any(
        f["type"] == "state" and f["content"]["kind"] == "input_timeout" for f in frames
    )
    assert frames[-1]["content"]["text"] == "No answer within 0.3 s."


async def test_token_in_subprotocol_authenticates(thread, users, client_for):
    from rest_framework.authtoken.models import Token

    token = await database_sync_to_async(Token.objects.create)(user=users[Role.OWNER])
    client = client_for(thread.id, subprotocols=["parley", f"token.{token.key}"])
    connected, subprotocol = await client.connect()
    assert connected and subprotocol == "parley"
    status = await client.receive()
    assert status["content"]["user"] == "owner"


async def test_snapshot_carries_history(thread, users, worker, client_for):
    owner = client_for(thread.id, users[Role.OWNER])
    await joined(owner)
    await owner.send({"type": "message", "content": "remember me"})
    await owner.receive_until(until_complete)
    again = client_for(thread.id, users[Role.PARTICIPANT])
    _, snapshot = await joined(again)
    texts = [(m["role"], m["text"]) for m in snapshot["content"]["messages"]]
    assert texts == [("user", "remember me"), ("assistant", "remember me")]
    assert json.dumps(snapshot)  # plain JSON


async def test_presence_lists_who_is_connected_and_is_not_an_event(
    thread, users, client_for
):
    owner = client_for(thread.id, users[Role.OWNER], presence=True)
    await joined(owner)
    observer = client_for(thread.id, users[Role.OBSERVER], presence=True)
    _, snapshot = await joined(observer)
    assert [u["username"] for u in snapshot["content"]["presence"]] == [
        "observer",
        "owner",
    ]
    news = await owner.receive_until(lambda f: f["content"].get("state") == "presence")
    assert news[-1]["event_id"] is None
    assert {u["username"]: u["role"] for u in news[-1]["content"]["users"]} == {
        "owner": "owner",
        "observer": "observer",
    }
    await observer.close()
    left = await owner.receive_until(lambda f: f["content"].get("state") == "presence")
    assert [u["username"] for u in left[-1]["content"]["users"]] == ["owner"]


async def test_thread_detail_in_the_api_shows_who_is_connected(
    thread, users, client_for
):
    from asgiref.sync import sync_to_async
    from rest_framework.test import APIClient

    owner = client_for(thread.id, users[Role.OWNER])
    await joined(owner)

    def detail():
        api = APIClient()
        api.force_authenticate(users[Role.PARTICIPANT])
        return api.get(f"/api/threads/{thread.id}/").json()

    body = await sync_to_async(detail)()
    assert body["presence"] == [
        {"username": "owner", "role": "owner", "connections": 1}
    ]


async def test_after_a_burst_of_connects_every_socket_has_the_full_presence_list(
    thread, users, client_for
):
    # Given eight sockets of three users opening at once
    people = [Role.OWNER, Role.PARTICIPANT, Role.OBSERVER] * 2 + [Role.OWNER] * 2
    clients = [client_for(thread.id, users[role], presence=True) for role in people]
    await asyncio.gather(*(client.join() for client in clients))
    expected = [
        {"username": "observer", "role": "observer", "connections": 2},
        {"username": "owner", "role": "owner", "connections": 4},
        {"username": "participant", "role": "participant", "connections": 2},
    ]

    async def last_presence(client):
        last = None
        while not await client.communicator.receive_nothing(timeout=0.6):
            frame = await client.receive()
            if frame["content"].get("state") == "presence":
                last = frame["content"]["users"]
        return last

    # Then, once the news settles, each of them was told who is here
    assert await asyncio.gather(*(last_presence(c) for c in clients)) == [
        expected
    ] * len(clients)

    # And when some leave at once, the others end with the shorter list
    for client in clients[5:]:
        await client.close()
    remaining = await asyncio.gather(*(last_presence(c) for c in clients[:5]))
    assert (
        remaining
        == [
            [
                {"username": "observer", "role": "observer", "connections": 1},
                {"username": "owner", "role": "owner", "connections": 2},
                {"username": "participant", "role": "participant", "connections": 2},
            ]
        ]
        * 5
    )


async def test_a_removed_member_cannot_reconnect_with_a_cached_access(
    thread, users, client_for
):
    from chat import services

    observer = client_for(thread.id, users[Role.OBSERVER])
    await joined(observer)
    await observer.close()
    await database_sync_to_async(services.member_remove)(
        actor=users[Role.OWNER], thread=thread, username="observer"
    )
    again = client_for(thread.id, users[Role.OBSERVER])
    assert (await again.connect())[0]
    await expect_close(again, 4403)


async def test_a_revoked_token_cannot_open_a_socket_after_a_cached_connect(
    thread, users, client_for
):
    from rest_framework.authtoken.models import Token

    token = await database_sync_to_async(Token.objects.create)(user=users[Role.OWNER])
    header = [(b"authorization", b"Token " + token.key.encode())]
    first = client_for(thread.id, headers=header)
    await joined(first)
    await database_sync_to_async(token.delete)()
    await expect_close(first, 4401)  # the open socket is closed ...
    again = client_for(thread.id, headers=header)
    assert (await again.connect())[0]
    await expect_close(again, 4401)  # ... and the token opens no other


async def test_a_thread_reset_shows_in_the_next_snapshot(
    thread, users, worker, client_for
):
    from chat import services

    owner = client_for(thread.id, users[Role.OWNER])
    await joined(owner)
    await owner.send({"type": "message", "content": "hello"})
    await owner.receive_until(until_complete)
    _, before = await joined(client_for(thread.id, users[Role.OBSERVER]))
    assert len(before["content"]["messages"]) == 2
    await database_sync_to_async(services.thread_reset)(
        actor=users[Role.OWNER], thread=thread
    )
    _, after = await joined(client_for(thread.id, users[Role.PARTICIPANT]))
    assert after["content"]["messages"] == []


@pytest.mark.parametrize("path", ["/ws/nowhere/", "/ws/threads/", "/ws/"])
async def test_an_unknown_socket_path_is_not_found_not_a_server_error(
    users, client_for, path
):
    client = client_for(None, users[Role.OWNER], path=path)
    connected, _ = await client.connect()
    assert connected
    error = await client.receive()
    assert error["type"] == "error" and error["content"]["code"] == "not_found"
    await expect_close(client, 4404)
