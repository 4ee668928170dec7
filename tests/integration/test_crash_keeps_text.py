"""A reply whose process is killed mid-stream keeps the text that had streamed.

Production (PostgreSQL + Redis): the worker is SIGKILLed; the Redis event log
holds every chunk, and the sweeper stores them all with the failure.
Embedded (`make run`: SQLite, in-memory log, worker inside daphne): daphne is
SIGKILLed, so the log dies with it; after a restart the reply ends failed with
the text of the worker's last checkpoint (PARLEY_CHECKPOINT_SECONDS).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import websockets

from tests.eventually import eventually_sync
from tests.integration.conftest import (
    DAPHNE,
    ROOT,
    Socket,
    free_port,
    wait_for_http,
)

CHECKPOINT_SECONDS = 1.0


def complete(frame: dict) -> bool:
    return frame["type"] == "state_complete"


async def greeting(socket: Socket) -> dict:
    """Read `connected` and the snapshot; return the snapshot's content."""
    connected = await socket.receive()
    assert connected["content"]["state"] == "connected"
    snapshot = await socket.receive()
    assert snapshot["content"]["state"] == "snapshot"
    return snapshot["content"]


def assert_failed_reply(snapshot: dict, run_id: str, text: str) -> None:
    reply = next(
        m
        for m in snapshot["messages"]
        if m["role"] == "assistant" and m["run_id"] == run_id
    )
    assert reply["text"] == text
    assert reply["status"] == "failed" and reply["error"]["code"] == "worker_lost"
    assert all(run["run_id"] != run_id for run in snapshot["runs"])


# --- production ---------------------------------------------------------------------


@pytest.mark.integration
async def test_a_killed_worker_reply_keeps_every_streamed_chunk(stack):
    setup = stack.setup_thread(tokens_per_second=10)
    thread, tokens = setup["thread"], setup["tokens"]
    web = stack.daphne()
    doomed = stack.worker()
    words = " ".join(["slow"] * 200)
    async with Socket(web.ws_url(thread), tokens["observer"]) as observer:
        await greeting(observer)
        async with Socket(web.ws_url(thread), tokens["owner"]) as owner:
            await greeting(owner)
            await owner.send({"type": "message", "content": words})
        frames = await observer.receive_until(
            lambda f: f["type"] == "response" and f["stream_index"] >= 3
        )
        doomed.kill(signal.SIGKILL)
        stack.worker()  # sweeps once the dead worker's lease lapses
        frames += await observer.receive_until(complete, timeout=40)
    streamed = "".join(f["content"] for f in frames if f["type"] == "response")
    run_id = frames[-1]["run_id"]
    done = frames[-1]["content"]
    assert done["status"] == "failed" and done["error"]["code"] == "worker_lost"
    assert done["text"] == streamed and words.startswith(streamed)
    assert len(streamed) < len(words)

    stored = stack.python(
        "from chat.models import Message\n"
        f"m = Message.objects.select_related('run').get(run_id='{run_id}', "
        "role='assistant')\n"
        "result = [m.text, m.run.status, m.run.error_code]\n"
    )
    assert stored == [streamed, "failed", "worker_lost"]
    async with Socket(web.ws_url(thread), tokens["participant"]) as fresh:
        assert_failed_reply(await greeting(fresh), run_id, streamed)


# --- embedded -------------------------------------------------------------------------


class EmbeddedServer:
    """`make run`'s process: plain daphne on SQLite, restartable on its data."""

    def __init__(self, tmp_path) -> None:
        self.tmp_path = tmp_path
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("REDIS_URL", "DATABASE_URL") and not k.startswith("PYTEST")
        }
        self.env.update(
            PARLEY_DATA_DIR=str(tmp_path),
            DEBUG="1",
            PYTHONUNBUFFERED="1",
            PARLEY_CHECKPOINT_SECONDS=str(CHECKPOINT_SECONDS),
            PARLEY_LEASE_SECONDS="2",
            PARLEY_SWEEP_INTERVAL_SECONDS="0.5",
        )
        self.process: subprocess.Popen | None = None
        self.host = ""
        self.port = 0
        self.starts = 0

    def prepare(self) -> None:
        for command in (["migrate", "--noinput", "-v0"], ["seed_demo"]):
            subprocess.run(
                [sys.executable, "manage.py", *command],
                cwd=ROOT,
                env=self.env,
                check=True,
                capture_output=True,
            )

    def start(self, port: int | None = None) -> None:
        port = port or free_port()
        self.starts += 1
        log = open(self.tmp_path / f"daphne-{self.starts}.log", "w")
        self.process = subprocess.Popen(
            [DAPHNE, "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.port = port
        self.host = f"127.0.0.1:{port}"
        wait_for_http(f"http://{self.host}/healthz")

    def kill(self, signum: int = signal.SIGKILL) -> None:
        self.process.send_signal(signum)
        self.process.wait(timeout=20)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def api(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Token {token}"} if token else {}
        return httpx.Client(
            base_url=f"http://{self.host}/api", headers=headers, timeout=10
        )

    def ws_url(self, thread_id: str) -> str:
        return f"ws://{self.host}/ws/threads/{thread_id}/"

    def logs(self) -> str:
        return "\n".join(
            f"== {path.name}\n{path.read_text()[-3000:]}"
            for path in sorted(self.tmp_path.glob("daphne-*.log"))
        )


@pytest.fixture
def embedded(tmp_path):
    server = EmbeddedServer(tmp_path)
    server.prepare()
    server.start()
    try:
        yield server
    except BaseException:
        print(server.logs())
        raise
    finally:
        server.stop()


def demo_token(server: EmbeddedServer) -> str:
    response = server.api().post(
        "/auth/token/", json={"username": "demo", "password": "demo-password"}
    )
    return response.json()["token"]


async def stream_then_kill(
    server, token, thread_id, words, signum
) -> tuple[str, str, str]:
    """Start a reply, read it for over two checkpoint intervals, kill daphne
    with `signum`. Returns the run id, the text seen more than an interval
    before the kill (a checkpoint was written after it had been published) and
    all the text seen."""
    async with websockets.connect(
        server.ws_url(thread_id), subprotocols=["parley", f"token.{token}"]
    ) as socket:
        for _ in range(2):  # connected, snapshot
            json.loads(await socket.recv())
        await socket.send(json.dumps({"type": "message", "content": words}))
        text, run_id, started, seen_early = "", None, None, None
        loop = asyncio.get_running_loop()
        while True:
            frame = json.loads(await asyncio.wait_for(socket.recv(), 15))
            assert frame["type"] != "state_complete", "the reply ended too soon"
            if frame["type"] != "response":
                continue
            run_id = frame["run_id"]
            text += frame["content"]
            started = started or loop.time()
            elapsed = loop.time() - started
            if seen_early is None and elapsed >= 1.5 * CHECKPOINT_SECONDS:
                seen_early = text
            if elapsed >= 3 * CHECKPOINT_SECONDS:
                break
    server.kill(signum)
    return run_id, seen_early, text


def wait_for_failed_reply(server, token, thread_id, run_id) -> dict:
    client = server.api(token)

    def failed_reply():
        messages = client.get(f"/threads/{thread_id}/messages/").json()["results"]
        return next(
            (m for m in messages if m["role"] == "assistant" and m["run_id"] == run_id),
            None,
        )

    return eventually_sync(failed_reply, timeout=30, what="the sweep of the run")


def test_a_killed_embedded_server_keeps_the_checkpointed_text(embedded):
    token = demo_token(embedded)
    thread_id = embedded.api(token).post("/threads/", json={"agent": "echo"}).json()
    thread_id = thread_id["id"]
    words = " ".join(f"word{i}" for i in range(300))  # 15 s at 20 words/s

    run_id, seen_early, seen = asyncio.run(
        stream_then_kill(embedded, token, thread_id, words, signal.SIGKILL)
    )
    embedded.start()
    killed_at = time.monotonic()

    reply = wait_for_failed_reply(embedded, token, thread_id, run_id)
    assert time.monotonic() - killed_at < 30
    assert reply["status"] == "failed" and reply["error"]["code"] == "worker_lost"
    # At least the last checkpoint: everything published an interval before the kill.
    assert reply["text"].startswith(seen_early) and len(seen_early) > 0
    assert words.startswith(reply["text"]) and reply["text"] != words

    async def fresh_snapshot() -> dict:
        async with websockets.connect(
            embedded.ws_url(thread_id), subprotocols=["parley", f"token.{token}"]
        ) as socket:
            json.loads(await socket.recv())
            return json.loads(await socket.recv())["content"]

    assert_failed_reply(asyncio.run(fresh_snapshot()), run_id, reply["text"])


def test_a_stopped_embedded_server_keeps_all_the_text_it_had_sent(embedded):
    """SIGTERM: daphne stops, the worker's last checkpoint is written at exit."""
    token = demo_token(embedded)
    thread_id = embedded.api(token).post("/threads/", json={"agent": "echo"}).json()
    thread_id = thread_id["id"]
    words = " ".join(f"word{i}" for i in range(300))

    run_id, _, seen = asyncio.run(
        stream_then_kill(embedded, token, thread_id, words, signal.SIGTERM)
    )
    embedded.start()

    reply = wait_for_failed_reply(embedded, token, thread_id, run_id)
    assert reply["status"] == "failed" and reply["error"]["code"] == "worker_lost"
    assert reply["text"].startswith(seen)  # nothing the page had shown is lost
    assert words.startswith(reply["text"]) and reply["text"] != words
