"""`make run`'s configuration, end to end: plain daphne, SQLite, in-memory layer,
in-process worker; a client written from the contract alone."""

import asyncio
import json
import os
import subprocess
import sys

import httpx
import pytest
import websockets

from tests.integration.conftest import DAPHNE, ROOT, free_port, wait_for_http


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("embedded")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "DATABASE_URL") and not k.startswith("PYTEST")
    }
    env.update(
        PARLEY_DATA_DIR=str(tmp_path),
        DEBUG="1",
        PYTHONUNBUFFERED="1",
        PARLEY_SSE_HEARTBEAT_SECONDS="0.5",
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    seeded = subprocess.run(
        [sys.executable, "manage.py", "seed_demo"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert "demo" in seeded.stdout
    port = free_port()
    log = open(tmp_path / "daphne.log", "w")
    process = subprocess.Popen(
        [DAPHNE, "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz")
        yield f"127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait()


def api(host: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Token {token}"} if token else {}
    return httpx.Client(base_url=f"http://{host}/api", headers=headers, timeout=10)


def test_embedded_app_streams_a_reply_to_two_sockets(embedded_server):
    host = embedded_server
    token = (
        api(host)
        .post("/auth/token/", json={"username": "demo", "password": "demo-password"})
        .json()["token"]
    )
    client = api(host, token)
    thread = client.post("/threads/", json={"agent": "echo", "title": "hello"})
    assert thread.status_code == 201, thread.text
    thread_id = thread.json()["id"]

    async def converse():
        url = f"ws://{host}/ws/threads/{thread_id}/"
        async with (
            websockets.connect(url, subprotocols=["parley", f"token.{token}"]) as first,
            websockets.connect(
                url, additional_headers={"Authorization": f"Token {token}"}
            ) as second,
        ):
            assert first.subprotocol == "parley"
            for socket in (first, second):
                assert (
                    json.loads(await socket.recv())["content"]["state"] == "connected"
                )
                assert json.loads(await socket.recv())["content"]["state"] == "snapshot"
            await first.send(
                json.dumps({"type": "message", "content": "streams for everyone"})
            )
            results = []
            for socket in (first, second):
                frames = []
                while not frames or frames[-1]["type"] != "state_complete":
                    frame = json.loads(await asyncio.wait_for(socket.recv(), 15))
                    if (
                        frame["event_id"] is not None
                    ):  # thread events, not presence news
                        frames.append(frame)
                results.append(frames)
            return results

    first_frames, second_frames = asyncio.run(converse())
    assert first_frames == second_frames
    chunks = [f for f in first_frames if f["type"] == "response"]
    assert "".join(c["content"] for c in chunks) == "streams for everyone"
    assert [c["stream_index"] for c in chunks] == list(range(len(chunks)))
    history = client.get(f"/threads/{thread_id}/messages/").json()
    texts = [m["text"] for m in history["results"]]
    assert texts == ["streams for everyone", "streams for everyone"]


def test_sse_streams_a_run_resumes_with_last_event_id_and_ends(embedded_server):
    host = embedded_server
    token = (
        api(host)
        .post("/auth/token/", json={"username": "demo", "password": "demo-password"})
        .json()["token"]
    )
    client = api(host, token)
    thread_id = client.post("/threads/", json={"agent": "echo"}).json()["id"]
    words = " ".join(f"s{i}" for i in range(40))
    run = client.post(f"/threads/{thread_id}/runs/", json={"content": words})
    assert run.status_code == 202, run.text
    run_id = run.json()["id"]

    def read_events(headers, stop_after=None):
        events, current, comments = [], {}, 0
        with httpx.stream(
            "GET",
            f"http://{host}/api/runs/{run_id}/stream/",
            headers={"Authorization": f"Token {token}", **headers},
            timeout=30,
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith(":"):
                    comments += 1
                elif line == "":
                    if current:
                        events.append(current)
                        current = {}
                        if (
                            events[-1].get("event") == "end"
                            or len(events) == stop_after
                        ):
                            break
                else:
                    field, _, value = line.partition(": ")
                    current[field] = value
        return events, comments

    first, _ = read_events({}, stop_after=8)
    with_ids = [e for e in first if "id" in e]
    last_id = with_ids[-1]["id"]
    rest, _ = read_events({"Last-Event-ID": last_id})
    assert rest[-1]["event"] == "end"
    ids = [int(e["id"]) for e in with_ids + [e for e in rest if "id" in e]]
    assert ids == sorted(set(ids)), "an event arrived twice or out of order"
    chunks = [
        json.loads(e["data"]) for e in with_ids + rest if e.get("event") == "response"
    ]
    assert [c["stream_index"] for c in chunks] == list(range(len(chunks)))
    assert "".join(c["content"] for c in chunks) == words
    complete = next(
        json.loads(e["data"]) for e in rest if e.get("event") == "state_complete"
    )
    assert complete["content"]["text"] == words

    # Resumed at or after the run's end: what is left (nothing), then `end` at
    # once, not heartbeats forever.
    final_id = max(int(e["id"]) for e in rest if "id" in e)
    after_end, _ = read_events({"Last-Event-ID": str(final_id)})
    assert [e["event"] for e in after_end if "event" in e] == ["end"]
    assert json.loads(after_end[-1]["data"])["status"] == "completed"
    # Past the log's end (a stale id): a snapshot of the ended run, then `end`.
    beyond, _ = read_events({"Last-Event-ID": str(final_id + 5)})
    assert [e["event"] for e in beyond if "event" in e] == ["snapshot", "end"]

    # A late subscriber, after the run ended, still drains it, then the end event.
    late, _ = read_events({})
    assert late[-1]["event"] == "end"
    assert (
        "".join(
            json.loads(e["data"])["content"]
            for e in late
            if e.get("event") == "response"
        )
        == words
    )


def test_sse_thread_stream_sends_heartbeats(embedded_server):
    host = embedded_server
    token = (
        api(host)
        .post("/auth/token/", json={"username": "demo", "password": "demo-password"})
        .json()["token"]
    )
    thread_id = api(host, token).post("/threads/", json={"agent": "echo"}).json()["id"]
    heartbeats = 0
    with httpx.stream(
        "GET",
        f"http://{host}/api/threads/{thread_id}/stream/",
        headers={"Authorization": f"Token {token}"},
        timeout=10,
    ) as response:
        for line in response.iter_lines():
            if line.startswith(": heartbeat"):
                heartbeats += 1
                if heartbeats == 2:
                    break
    assert heartbeats == 2


def test_sse_refuses_strangers_with_json_errors(embedded_server):
    host = embedded_server
    response = httpx.get(
        f"http://{host}/api/runs/00000000-0000-4000-8000-000000000000/stream/"
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
