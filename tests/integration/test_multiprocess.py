"""The production shape: several daphne and worker processes on PostgreSQL and Redis."""

import asyncio
import signal

import pytest
import websockets

from tests.eventually import eventually
from tests.integration.conftest import ReplyTracker, Socket

pytestmark = pytest.mark.integration


def complete(frame):
    return frame["type"] == "state_complete"


def web_noticed(stack, line: str) -> bool:
    """`line` is in a daphne's log (each process logs to a file of its own)."""
    return any(line in log.read_text() for log in stack.logs.glob("daphne*.log"))


async def open_and_sync(socket: Socket) -> ReplyTracker:
    tracker = ReplyTracker()
    connected = await socket.receive()
    assert connected["content"]["state"] == "connected"
    tracker.apply(await socket.receive())
    return tracker


@pytest.fixture(params=["tcp", "tls", "unix", "sharded"])
def any_redis_stack(tmp_path, request):
    """A stack on Redis over plain TCP, over TLS (rediss://), over a unix socket,
    and with the event log's threads spread over two redis-servers."""
    from tests.integration.conftest import Stack

    if request.param == "sharded":
        stack = Stack(tmp_path, event_log_shards=2).start()
    else:
        stack = Stack(tmp_path, redis_transport=request.param).start()
    try:
        yield stack
    finally:
        stack.stop()


async def test_three_clients_on_two_daphnes_get_the_same_complete_stream(
    any_redis_stack,
):
    stack = any_redis_stack
    setup = stack.setup_thread(tokens_per_second=100)
    thread, tokens = setup["thread"], setup["tokens"]
    web_a, web_b = stack.daphne(), stack.daphne()
    stack.worker()
    words = " ".join(f"token{i}" for i in range(60))
    async with (
        Socket(web_a.ws_url(thread), tokens["owner"]) as owner,
        Socket(web_a.ws_url(thread), tokens["participant"]) as participant,
        Socket(web_b.ws_url(thread), tokens["observer"]) as observer,
    ):
        trackers = [await open_and_sync(s) for s in (owner, participant, observer)]
        await owner.send({"type": "message", "content": words})
        streams = [
            await s.receive_until(complete) for s in (owner, participant, observer)
        ]
    for tracker, frames in zip(trackers, streams, strict=True):
        for frame in frames:
            tracker.apply(frame)
        (run,) = tracker.runs.values()
        assert run["text"] == run["final"] == words
    event_frames = [
        [f for f in frames if f["event_id"] is not None] for frames in streams
    ]
    assert event_frames[0] == event_frames[1] == event_frames[2]
    stored = stack.python(
        "from chat.models import Message\n"
        f"result = list(Message.objects.filter(thread_id='{thread}').order_by('created_at').values_list('role', 'text'))\n"
    )
    assert stored == [["user", words], ["assistant", words]]


async def test_a_socket_idle_past_ten_seconds_on_redis_still_receives(stack):
    setup = stack.setup_thread(tokens_per_second=200)
    thread, tokens = setup["thread"], setup["tokens"]
    web = stack.daphne()
    stack.worker()
    async with Socket(web.ws_url(thread), tokens["observer"]) as idle:
        await open_and_sync(idle)
        # Nothing happens meanwhile, on purpose: the socket idles longer than
        # redis-py's 5 s default read timeout, twice.
        await asyncio.sleep(12)
        async with Socket(web.ws_url(thread), tokens["owner"]) as owner:
            await open_and_sync(owner)
            await owner.send({"type": "message", "content": "still there?"})
            frames = await idle.receive_until(complete, timeout=20)
    assert frames[-1]["content"]["text"] == "still there?"
    log = stack.dump_logs()
    assert "Timeout reading" not in log


async def test_killed_worker_fails_its_run_and_another_worker_keeps_serving(stack):
    setup = stack.setup_thread(tokens_per_second=10)
    thread, tokens = setup["thread"], setup["tokens"]
    web = stack.daphne()
    doomed = stack.worker()
    async with (
        Socket(web.ws_url(thread), tokens["owner"]) as owner,
        Socket(web.ws_url(thread), tokens["observer"]) as observer,
    ):
        await open_and_sync(owner)
        await open_and_sync(observer)
        await owner.send({"type": "message", "content": " ".join(["slow"] * 200)})
        await observer.receive_until(
            lambda f: f["type"] == "response" and f["stream_index"] >= 2
        )
        stack.worker()  # the survivor
        doomed.kill(signal.SIGKILL)
        killed_at = asyncio.get_running_loop().time()
        frames = await observer.receive_until(complete, timeout=40)
        waited = asyncio.get_running_loop().time() - killed_at
        error = next(f for f in frames if f["type"] == "error")
        assert error["content"]["code"] == "worker_lost"
        done = frames[-1]["content"]
        assert done["status"] == "failed" and done["text"].startswith("slow slow")
        assert waited < 30  # documented bound: lease + sweep interval (3 s + 1 s here)

        await owner.send({"type": "message", "content": "after the crash"})
        again = await observer.receive_until(complete, timeout=30)
        assert again[-1]["content"] == {
            **again[-1]["content"],
            "status": "completed",
            "text": "after the crash",
        }


async def test_sigterm_lets_a_worker_finish_then_fails_what_is_left(tmp_path):
    from tests.integration.conftest import Stack

    stack = Stack(tmp_path, PARLEY_SHUTDOWN_GRACE_SECONDS="1").start()
    try:
        setup = stack.setup_thread(tokens_per_second=10)
        thread, tokens = setup["thread"], setup["tokens"]
        web = stack.daphne()
        worker = stack.worker()
        async with Socket(web.ws_url(thread), tokens["owner"]) as owner:
            await open_and_sync(owner)
            await owner.send({"type": "message", "content": " ".join(["long"] * 100)})
            await owner.receive_until(lambda f: f["type"] == "response")
            worker.kill(signal.SIGTERM)
            frames = await owner.receive_until(complete, timeout=20)
        done = frames[-1]["content"]
        assert done["status"] == "failed" and done["error"]["code"] == "worker_shutdown"
        assert done["text"].startswith("long")
        assert worker.popen.wait(timeout=15) == 0
    finally:
        stack.stop()


async def test_restarted_daphne_clients_resume_on_another(stack):
    setup = stack.setup_thread(tokens_per_second=40)
    thread, tokens = setup["thread"], setup["tokens"]
    first, second = stack.daphne(), stack.daphne()
    stack.worker()
    words = " ".join(f"w{i}" for i in range(80))
    async with Socket(first.ws_url(thread), tokens["owner"]) as owner:
        tracker = await open_and_sync(owner)
        await owner.send({"type": "message", "content": words})
        for frame in await owner.receive_until(
            lambda f: f["type"] == "response" and f["stream_index"] >= 10
        ):
            tracker.apply(frame)
        first.kill(signal.SIGKILL)
        with pytest.raises((websockets.ConnectionClosed, TimeoutError)):
            while True:
                tracker.apply(await owner.receive(timeout=5))
    async with Socket(
        second.ws_url(thread, f"last_event_id={tracker.last_event_id}"), tokens["owner"]
    ) as again:
        assert (await again.receive())["content"]["state"] == "connected"
        for frame in await again.receive_until(complete):
            tracker.apply(frame)
    (run,) = tracker.runs.values()
    assert run["text"] == run["final"] == words
    assert tracker.resynced == 0


async def test_restarted_redis_clients_end_with_the_right_text_or_a_resync(stack):
    setup = stack.setup_thread(tokens_per_second=40)
    thread, tokens = setup["thread"], setup["tokens"]
    web = stack.daphne()
    stack.worker()
    words = " ".join(f"r{i}" for i in range(120))
    async with Socket(web.ws_url(thread), tokens["owner"]) as owner:
        tracker = await open_and_sync(owner)
        await owner.send({"type": "message", "content": words})
        for frame in await owner.receive_until(
            lambda f: f["type"] == "response" and f["stream_index"] >= 5
        ):
            tracker.apply(frame)
        stack.redis.kill()
        await eventually(
            lambda: web_noticed(stack, "event subscriber lost Redis"),
            timeout=20,
            what="the web process noticing Redis is gone",
        )
        stack.redis.start()
        tracker.allow_gaps = True
        while True:
            frame = await owner.receive(timeout=60)
            if frame["type"] == "status" and frame["content"]["state"] == "resynced":
                tracker.last_event_id = None  # ids restart with a new log
            if tracker.apply(frame) == "resync":
                await owner.send({"type": "resume", "content": {"last_event_id": None}})
            if complete(frame):
                break
    (run,) = [r for r in tracker.runs.values() if r["final"] is not None]
    assert run["final"] == words
    assert tracker.resynced >= 1  # told, never silently short
    # The stack keeps working without a restart.
    async with Socket(web.ws_url(thread), tokens["owner"]) as owner:
        await owner.receive()
        await owner.receive()
        await owner.send({"type": "message", "content": "after redis came back"})
        frames = await owner.receive_until(complete, timeout=30)
    assert frames[-1]["content"]["text"] == "after redis came back"


def stalling_stack(tmp_path, **settings):
    """A stack whose sockets pass their send limit quickly (256 KiB) and whose
    owner may send replies of 96 kB as fast as they like."""
    from tests.integration.conftest import Stack

    return Stack(
        tmp_path,
        PARLEY_SEND_BUFFER_LIMIT_BYTES=str(256 * 1024),
        PARLEY_MESSAGES_PER_MINUTE="1000",
        PARLEY_MAX_ACTIVE_RUNS_PER_USER="1000",
        PARLEY_MAX_MESSAGE_CHARS="30000",
        **settings,
    )


def stalling_thread(stack):
    """A thread whose echo agent streams each reply 5 times over, at once; a
    daphne and a worker. (thread, tokens, web)"""
    setup = stack.setup_thread(
        buffer_chunks=False, extra_params={"tokens_per_second": 5000, "repeat": 5}
    )
    web = stack.daphne()
    stack.worker()
    return setup["thread"], setup["tokens"], web


async def test_a_stalled_reader_is_resynced_and_memory_stays_bounded(tmp_path):
    stack = stalling_stack(tmp_path).start()
    try:
        thread, tokens, web = stalling_thread(stack)
        # 60 replies of 96 kB: more than the kernel's socket buffers hold.
        message = " ".join(f"stall{i:03d}" + "x" * 1000 for i in range(19))
        reply = " ".join([message] * 5)
        rss_before = web.rss
        async with (
            Socket(web.ws_url(thread), tokens["owner"]) as owner,
            Socket(
                web.ws_url(thread),
                tokens["observer"],
                max_queue=2,
                receive_buffer=65536,
            ) as stalled,
        ):
            await open_and_sync(owner)
            tracker = await open_and_sync(stalled)
            stalled.connection.transport.pause_reading()
            for _ in range(60):
                await owner.send({"type": "message", "content": message})
            finals = []
            while len(finals) < 60:
                frame = await owner.receive(timeout=60)
                if complete(frame):
                    finals.append(frame["content"]["text"])
            rss_peak = web.rss
            stalled.connection.transport.resume_reading()
            while True:
                frame = await stalled.receive(timeout=60)
                tracker.apply(frame)
                if (
                    frame["type"] == "status"
                    and frame["content"]["state"] == "resynced"
                ):
                    break
            # The resync carries every reply, none cut short or doubled.
            finished = [
                r["final"] for r in tracker.runs.values() if r["final"] is not None
            ]
        assert finals == [reply] * 60
        assert tracker.resynced >= 1
        assert len(finished) >= 1 and set(finished) == {reply}
        assert rss_peak - rss_before < 64 * 2**20
    finally:
        stack.stop()


async def test_a_stalled_reader_is_closed_with_4408_and_resumes_when_so_configured(
    tmp_path,
):
    """PARLEY_SLOW_CLIENT=close: the stalled socket is closed (4408 after what
    it was sent, or dropped when it stalls past the close handshake);
    reconnecting with its last event id brings every reply, none cut short or
    doubled."""
    stack = stalling_stack(tmp_path, PARLEY_SLOW_CLIENT="close").start()
    try:
        thread, tokens, web = stalling_thread(stack)
        message = " ".join(f"slow{i:03d}" + "x" * 1000 for i in range(19))
        reply = " ".join([message] * 5)
        async with (
            Socket(web.ws_url(thread), tokens["owner"]) as owner,
            Socket(
                web.ws_url(thread),
                tokens["observer"],
                max_queue=2,
                receive_buffer=65536,
            ) as stalled,
        ):
            await open_and_sync(owner)
            tracker = await open_and_sync(stalled)
            stalled.connection.transport.pause_reading()
            for _ in range(30):
                await owner.send({"type": "message", "content": message})
            finals = 0
            while finals < 30:
                finals += complete(await owner.receive(timeout=60))
            stalled.connection.transport.resume_reading()
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    tracker.apply(await stalled.receive(timeout=60))
        # The close frame comes after everything it was sent; a reader stalled
        # past the close handshake's timeout finds the connection dropped.
        received = closed.value.rcvd
        assert received is None or received.code == 4408
        # Reconnect where it stopped: replayed (or resynced if the log has
        # moved on) to every reply, whole.
        async with Socket(
            web.ws_url(thread, f"last_event_id={tracker.last_event_id}"),
            tokens["observer"],
        ) as again:
            assert (await again.receive())["content"]["state"] == "connected"

            def all_done() -> bool:
                ended = [r for r in tracker.runs.values() if r["final"] is not None]
                return len(ended) == 30

            while not all_done():
                tracker.apply(await again.receive(timeout=60))
        assert {r["final"] for r in tracker.runs.values()} == {reply}
    finally:
        stack.stop()


async def test_an_oversized_frame_closes_with_1009_through_real_daphne(stack):
    setup = stack.setup_thread()
    web = stack.daphne()
    async with Socket(web.ws_url(setup["thread"]), setup["tokens"]["owner"]) as owner:
        await open_and_sync(owner)
        await owner.send({"type": "message", "content": "x" * 70_000})
        error = await owner.receive()
        assert error["content"]["code"] == "frame_too_large"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await owner.receive()
    assert closed.value.rcvd.code == 1009
