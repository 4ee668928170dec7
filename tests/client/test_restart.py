"""The client survives a web process going away mid-reply: it reconnects with
backoff, resumes from its last event id, and the reply comes out complete and
not doubled. On PostgreSQL + Redis with two daphnes and a worker (the event
log outlives any one web process); and in the embedded mode, where the log and
the worker die with the process, the client still reconnects and reports the
run's end (`worker_lost`) instead of hanging."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pytest
from parley_client import (
    ConnectionState,
    ParleyClient,
    RetryPolicy,
    RunCompleted,
    Synced,
    TextDelta,
    TextReset,
)

from tests.client.conftest import ROOT
from tests.eventually import eventually
from tests.integration.conftest import DAPHNE, Process, free_port, wait_for_http


def daphne_on(stack, port: int) -> Process:
    process = stack._spawn(
        [DAPHNE, "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        f"daphne-{port}",
    )
    wait_for_http(f"http://127.0.0.1:{port}/healthz")
    return Process(process, port)


async def start_ask(*args: str) -> tuple[asyncio.subprocess.Process, list[str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parley_client",
        "ask",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    received: list[str] = []

    async def read():
        while chunk := await process.stdout.read(64):
            received.append(chunk.decode())

    process.reader = asyncio.ensure_future(read())
    return process, received


@pytest.mark.integration
async def test_ask_survives_a_restart_of_its_daphne_mid_reply(stack):
    setup = stack.setup_thread(tokens_per_second=25)
    thread, tokens = setup["thread"], setup["tokens"]
    port = free_port()
    first = daphne_on(stack, port)
    stack.daphne()  # the other web process, serving on
    stack.worker()
    words = " ".join(f"w{i}" for i in range(150))

    ask, received = await start_ask(
        "--url", f"http://127.0.0.1:{port}", "--token", tokens["owner"],
        "--thread", thread, words,
    )  # fmt: skip
    try:
        await eventually(lambda: "".join(received).count(" ") >= 15, timeout=30)
        first.kill(signal.SIGKILL)
        first.popen.wait()
        streamed_before_restart = "".join(received)
        daphne_on(stack, port)
        code = await asyncio.wait_for(ask.wait(), 60)
        await ask.reader
        stderr = (await ask.stderr.read()).decode()
    finally:
        if ask.returncode is None:
            ask.kill()
    assert code == 0, stderr + stack.dump_logs()
    assert "".join(received) == words + "\n"  # complete, nothing twice
    assert len(streamed_before_restart) < len(words)  # it was cut mid-reply
    assert "reconnecting" in stderr


@pytest.mark.integration
async def test_the_client_moves_to_the_other_daphne_when_its_own_dies(stack):
    setup = stack.setup_thread(tokens_per_second=40)
    thread, tokens = setup["thread"], setup["tokens"]
    first, second = stack.daphne(), stack.daphne()
    stack.worker()
    words = " ".join(f"m{i}" for i in range(120))
    states = []
    client = ParleyClient(
        [f"http://127.0.0.1:{first.port}", f"http://127.0.0.1:{second.port}"],
        thread,
        token=tokens["owner"],
        retry=RetryPolicy(initial_delay=0.1, give_up_after=30),
        on_state_change=states.append,
    )
    async with client:
        resyncs = []

        async def watch():
            async for event in client.events():
                if isinstance(event, Synced) and not event.initial:
                    resyncs.append(event)

        watcher = asyncio.ensure_future(watch())
        text, completed, killed_at = "", [], None
        async for event in client.ask(words):
            if isinstance(event, TextDelta):
                text += event.text
                if killed_at is None and text.count(" ") >= 10:
                    first.kill(signal.SIGKILL)
                    killed_at = len(text)
            assert not isinstance(event, TextReset)
            if isinstance(event, RunCompleted):
                completed.append(event)
        watcher.cancel()

    assert text == words
    assert [c.text for c in completed] == [words] and completed[0].ok
    assert killed_at < len(words)  # mid-reply
    assert client.reconnects >= 1
    assert ConnectionState.RECONNECTING in states
    assert resyncs == []  # resumed from its last event id: a replay, no snapshot


async def test_ask_reconnects_to_a_restarted_embedded_daphne_and_reports_the_end(
    own_embedded,
):
    server = own_embedded
    thread = server.new_thread(members=False)
    words = " ".join(f"e{i}" for i in range(200))

    ask, received = await start_ask(
        "--url", server.url, "--token", server.tokens["owner"], "--thread", thread,
        words,
    )  # fmt: skip
    try:
        await eventually(lambda: "".join(received).count(" ") >= 10, timeout=30)
        server.kill()
        server.start()
        code = await asyncio.wait_for(ask.wait(), 60)
        await ask.reader
        stderr = (await ask.stderr.read()).decode()
    finally:
        if ask.returncode is None:
            ask.kill()
    # The embedded worker died with its process: the new process's sweeper
    # ends the run, keeping its last checkpoint (docs/deploy.md).
    assert code == 1, stderr + server.logs()
    assert "reconnecting" in stderr and "reconnected" in stderr
    assert "parley: worker_lost: " in stderr
    assert "".join(received).startswith("e0 e1 e2 e3 e4 e5 e6 e7 e8 e9")


@pytest.mark.integration
async def test_a_redis_restart_mid_reply_ends_in_a_resync_with_the_whole_reply(stack):
    setup = stack.setup_thread(tokens_per_second=40)
    thread, tokens = setup["thread"], setup["tokens"]
    web = stack.daphne()
    stack.worker()
    words = " ".join(f"r{i}" for i in range(120))
    client = ParleyClient(
        f"http://127.0.0.1:{web.port}",
        thread,
        token=tokens["owner"],
        retry=RetryPolicy(initial_delay=0.1, give_up_after=60),
    )
    async with client:
        resyncs = []

        async def watch():
            async for event in client.events():
                if isinstance(event, Synced) and not event.initial:
                    resyncs.append(event)

        watcher = asyncio.ensure_future(watch())
        text, completed, restarted = "", [], False
        async with asyncio.timeout(90):
            async for event in client.ask(words):
                if isinstance(event, TextDelta):
                    text += event.text
                elif isinstance(event, TextReset):
                    text = event.text
                elif isinstance(event, RunCompleted):
                    completed.append(event)
                if not restarted and text.count(" ") >= 5:
                    restarted = True
                    stack.redis.kill()
                    await asyncio.sleep(1.0)  # Redis is away this long
                    stack.redis.start()
        watcher.cancel()

    assert [c.text for c in completed] == [words]
    assert text == words
    assert resyncs  # told, never silently short
