"""Access changes made while people have a thread open, across web processes.

Two daphne processes on PostgreSQL and Redis; the change is made through the
REST API on one of them (or by a separate process, for a deactivation), and
every socket and SSE stream it touches, on either process, learns it within
2 s: closed with the contract's code after an `error` frame, or told its new
role. Nothing posted after a removal reaches the removed person.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets

from tests.integration.conftest import Socket

pytestmark = pytest.mark.integration

WITHIN = 2.0  # seconds, the contract's bound


async def until_closed(socket: Socket, timeout: float = 10) -> tuple[list, int, float]:
    """Frames until the server closes the socket, its close code, and when."""
    frames = []
    try:
        while True:
            frames.append(
                json.loads(await asyncio.wait_for(socket.connection.recv(), timeout))
            )
    except websockets.ConnectionClosed as closed:
        return frames, closed.rcvd.code if closed.rcvd else None, time.monotonic()


async def synced(socket: Socket) -> None:
    assert (await socket.receive())["content"]["state"] == "connected"
    assert (await socket.receive())["content"]["state"] == "snapshot"


def api(web, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{web.port}",
        headers={"Authorization": f"Token {token}"},
        timeout=10,
    )


async def sse_lines(web, token: str, thread: str, sink: list, opened: asyncio.Event):
    """Read the thread's SSE stream into `sink` until the server ends it."""
    async with api(web, token) as client:
        async with client.stream("GET", f"/api/threads/{thread}/stream/") as response:
            assert response.status_code == 200
            opened.set()
            async for line in response.aiter_lines():
                sink.append(line)
    sink.append("<ended>")


def stored_count(stack, thread: str, text: str) -> int:
    return stack.python(
        "from chat.models import Message\n"
        f"result = Message.objects.filter(thread_id='{thread}', text={text!r}).count()\n"
    )


async def test_a_demoted_participant_is_told_on_both_processes_and_refused(stack):
    setup = stack.setup_thread()
    thread, tokens = setup["thread"], setup["tokens"]
    web_a, web_b = stack.daphne(), stack.daphne()
    async with (
        Socket(web_a.ws_url(thread), tokens["participant"]) as on_a,
        Socket(web_b.ws_url(thread), tokens["participant"]) as on_b,
    ):
        await synced(on_a)
        await synced(on_b)
        async with api(web_a, tokens["owner"]) as owner:
            response = await owner.post(
                f"/api/threads/{thread}/members/",
                json={"username": "participant", "role": "observer"},
            )
            assert response.status_code == 200
        changed_at = time.monotonic()
        for socket in (on_a, on_b):
            frame = await socket.receive(timeout=WITHIN)
            assert frame["content"] == {"state": "role_changed", "role": "observer"}
        assert time.monotonic() - changed_at < WITHIN
        for index, socket in enumerate((on_a, on_b)):
            await socket.send(
                {"type": "message", "content": f"demoted {index}", "request_id": "r"}
            )
            refused = await socket.receive()
            assert refused["type"] == "error" and refused["request_id"] == "r"
            assert refused["content"]["code"] == "read_only"
    assert stored_count(stack, thread, "demoted 0") == 0
    assert stored_count(stack, thread, "demoted 1") == 0


async def test_a_removed_member_is_closed_everywhere_and_sees_nothing_after(stack):
    setup = stack.setup_thread()
    thread, tokens = setup["thread"], setup["tokens"]
    web_a, web_b = stack.daphne(), stack.daphne()
    stream: list[str] = []
    opened = asyncio.Event()
    async with (
        Socket(web_a.ws_url(thread), tokens["participant"]) as on_a,
        Socket(web_b.ws_url(thread), tokens["participant"]) as on_b,
        Socket(web_a.ws_url(thread), tokens["observer"]) as observer,
    ):
        for socket in (on_a, on_b, observer):
            await synced(socket)
        reader = asyncio.create_task(
            sse_lines(web_b, tokens["participant"], thread, stream, opened)
        )
        await asyncio.wait_for(opened.wait(), 10)
        closings = [asyncio.create_task(until_closed(s)) for s in (on_a, on_b)]
        async with api(web_a, tokens["owner"]) as owner:
            removed = await owner.delete(f"/api/threads/{thread}/members/participant/")
            assert removed.status_code == 204
            removed_at = time.monotonic()
            posted = await owner.post(
                f"/api/threads/{thread}/runs/", json={"content": "after the removal"}
            )
            assert posted.status_code == 202
        for frames, code, closed_at in await asyncio.gather(*closings):
            assert code == 4403
            assert closed_at - removed_at < WITHIN
            assert frames and frames[-1]["type"] == "error"
            assert frames[-1]["content"]["code"] == "forbidden"
            assert "after the removal" not in json.dumps(frames)
        await asyncio.wait_for(reader, WITHIN + 5)
        text = "\n".join(stream)
        assert "event: error" in text and '"code":"forbidden"' in text
        assert "after the removal" not in text
        # Everyone else still hears the thread.
        seen = await observer.receive_until(lambda f: f["type"] == "message")
        assert seen[-1]["content"]["text"] == "after the removal"


@pytest.mark.parametrize("change", ["delete_thread", "deactivate", "revoke_token"])
async def test_deletion_deactivation_and_revocation_close_sockets_and_streams(
    stack, change
):
    setup = stack.setup_thread()
    thread, tokens = setup["thread"], setup["tokens"]
    web_a, web_b = stack.daphne(), stack.daphne()
    expected = {
        "delete_thread": (4404, "thread_not_found"),
        "deactivate": (4401, "not_authenticated"),
        "revoke_token": (4401, "not_authenticated"),
    }[change]
    stream: list[str] = []
    opened = asyncio.Event()
    async with (
        Socket(web_a.ws_url(thread), tokens["participant"]) as on_a,
        Socket(web_b.ws_url(thread), tokens["participant"]) as on_b,
    ):
        await synced(on_a)
        await synced(on_b)
        reader = asyncio.create_task(
            sse_lines(web_b, tokens["participant"], thread, stream, opened)
        )
        await asyncio.wait_for(opened.wait(), 10)
        closings = [asyncio.create_task(until_closed(s)) for s in (on_a, on_b)]
        if change == "delete_thread":
            async with api(web_a, tokens["owner"]) as owner:
                assert (
                    await owner.delete(f"/api/threads/{thread}/")
                ).status_code == 204
        elif change == "deactivate":  # by another process: an admin's shell
            await asyncio.to_thread(
                stack.python,
                "from django.contrib.auth import get_user_model\n"
                "user = get_user_model().objects.get(username='participant')\n"
                "user.is_active = False\nuser.save()\nresult = True\n",
            )
        else:
            async with api(web_a, tokens["participant"]) as participant:
                assert (await participant.delete("/api/auth/token/")).status_code in (
                    200,
                    204,
                )
        changed_at = time.monotonic()
        for frames, code, closed_at in await asyncio.gather(*closings):
            assert code == expected[0]
            assert closed_at - changed_at < WITHIN
            assert frames[-1]["content"]["code"] == expected[1]
        await asyncio.wait_for(reader, WITHIN + 5)
        assert f'"code":"{expected[1]}"' in "\n".join(stream)


async def test_client_counts_and_the_client_limit_span_every_process(tmp_path):
    from tests.integration.conftest import Stack

    stack = Stack(tmp_path, PARLEY_MAX_CLIENTS_PER_THREAD="3").start()
    try:
        setup = stack.setup_thread()
        thread, tokens = setup["thread"], setup["tokens"]
        staff = stack.python(
            "from django.contrib.auth import get_user_model\n"
            "from rest_framework.authtoken.models import Token\n"
            "user = get_user_model().objects.create(username='boss', is_staff=True)\n"
            "result = Token.objects.create(user=user).key\n"
        )
        web_a, web_b = stack.daphne(), stack.daphne()
        stream: list[str] = []
        opened = asyncio.Event()
        async with (
            Socket(web_a.ws_url(thread), tokens["participant"]) as on_a,
            Socket(web_b.ws_url(thread), tokens["observer"]) as on_b,
        ):
            await synced(on_a)
            await synced(on_b)
            reader = asyncio.create_task(
                sse_lines(web_a, tokens["owner"], thread, stream, opened)
            )
            await asyncio.wait_for(opened.wait(), 10)
            async with api(web_b, tokens["owner"]) as owner:
                # No worker runs: the run stays queued, i.e. active.
                run = await owner.post(
                    f"/api/threads/{thread}/runs/", json={"content": "hello"}
                )
                assert run.status_code == 202
                over = await owner.get(f"/api/threads/{thread}/stream/")
                assert over.status_code == 429
                assert over.json()["error"]["code"] == "too_many_clients"
            async with api(web_b, staff) as boss:
                streams = (await boss.get("/api/streams/")).json()["results"]
            (active,) = [s for s in streams if s["thread"] == thread]
            assert active["clients"] == 3  # two sockets and one SSE stream
            async with Socket(web_b.ws_url(thread), tokens["owner"]) as fourth:
                frames, code, _ = await until_closed(fourth)
                assert code == 4429
            reader.cancel()
    finally:
        stack.stop()
