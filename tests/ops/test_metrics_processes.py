"""`/metrics` in the production shape: daphne and `runworker agent-runs` as
separate processes on PostgreSQL and Redis, in prometheus-client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR). The worker's counters reach the
daphne that serves /metrics; the scrape parses while runs stream; a killed
worker's per-process gauges leave the report."""

from __future__ import annotations

import asyncio
import os
import signal
import urllib.error
import urllib.request

import pytest

from tests.integration.conftest import Socket, Stack
from tests.ops.conftest import METRICS_TOKEN, parse_metrics, total

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (
            os.environ.get("DATABASE_URL", "").startswith("postgres")
            and os.environ.get("REDIS_URL")
        ),
        reason="needs DATABASE_URL (PostgreSQL) and REDIS_URL",
    ),
]

WORDS = 40
AGENT = {"agent": "echo", "provider": "echo"}


@pytest.fixture
def metrics_stack(tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    stack = Stack(
        tmp_path,
        PROMETHEUS_MULTIPROC_DIR=str(directory),
        PARLEY_METRICS_TOKEN=METRICS_TOKEN,
    ).start()
    try:
        yield stack
    finally:
        stack.stop()


def scrape(port: int, token: str | None = METRICS_TOKEN) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return parse_metrics(response.read().decode())


def complete(frame) -> bool:
    return frame["type"] == "state_complete"


async def test_metrics_of_daphne_and_a_worker_add_up_while_a_load_runs(
    metrics_stack,
):
    stack = metrics_stack
    threads = [stack.setup_thread(tokens_per_second=40) for _ in range(3)]
    token = threads[0]["tokens"]["owner"]
    web = stack.daphne()
    worker = stack.worker()
    text = " ".join(f"w{i}" for i in range(WORDS))

    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(web.port, token=None)
    assert refused.value.code == 401

    async with (
        Socket(web.ws_url(threads[0]["thread"]), token) as first,
        Socket(web.ws_url(threads[1]["thread"]), token) as second,
        Socket(web.ws_url(threads[2]["thread"]), token) as third,
    ):
        sockets = (first, second, third)
        for socket in sockets:
            assert (await socket.receive())["content"]["state"] == "connected"
        for socket in sockets:
            await socket.send({"type": "message", "content": text})
        replies = asyncio.gather(*(s.receive_until(complete) for s in sockets))
        scrapes = []
        while not replies.done():
            scrapes.append(await asyncio.to_thread(scrape, web.port))
            await asyncio.sleep(0.1)
        finished = await replies
        during = scrapes[len(scrapes) // 2]
        open_now = await asyncio.to_thread(scrape, web.port)
    assert [frames[-1]["content"]["status"] for frames in finished] == ["completed"] * 3
    # Every scrape during the load parsed; the busiest saw the worker's runs.
    assert len(scrapes) >= 3
    busiest = max(
        total(s, "parley_worker_runs_in_flight", pid=str(worker.popen.pid))
        for s in scrapes
    )
    assert busiest >= 1
    assert total(during, "parley_metrics_database_up") == 1
    assert total(open_now, "parley_open_websockets", pid=str(web.popen.pid)) == 3

    def counted():
        samples = scrape(web.port)
        finished = total(
            samples, "parley_runs_finished_total", status="completed", **AGENT
        )
        return samples if finished == 3 else None

    from tests.eventually import eventually_sync

    after = eventually_sync(counted, timeout=20, what="the worker's runs counted")
    assert total(after, "parley_runs_started_total", **AGENT) == 3
    assert total(after, "parley_messages_posted_total") == 3
    assert total(after, "parley_tokens_total", direction="output", **AGENT) == 3 * WORDS
    assert total(after, "parley_first_response_seconds_count", **AGENT) == 3
    assert total(after, "parley_events_published_total") >= 3 * 4
    assert total(after, "parley_run_queue_depth") == 0
    assert total(after, "parley_open_websockets", pid=str(web.popen.pid)) == 0

    worker.kill(signal.SIGKILL)
    worker.popen.wait()
    gone = scrape(web.port)
    pids = {
        dict(labels).get("pid")
        for name, labels in gone
        if name == "parley_worker_runs_in_flight"
    }
    assert str(worker.popen.pid) not in pids
    # What the dead worker counted stays counted.
    assert total(gone, "parley_runs_finished_total", status="completed", **AGENT) == 3
