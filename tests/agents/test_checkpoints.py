"""A run whose worker died keeps the text that had streamed: from the event log,
else from the checkpoints the worker writes (the embedded mode's log dies with
the process), and a failed run always keeps its message with the reason."""

from __future__ import annotations

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from agents import runtime as runtime_module
from agents import services
from agents.checkpoints import Checkpoints
from agents.models import Run, RunStatus
from agents.runtime import WorkerRuntime
from agents.streaming import ChunkStream
from agents.sweep import sweep_stale_runs
from chat.models import Message, MessageRole, Role
from realtime.eventlog import Chunk
from realtime.events import publish
from realtime.protocol import ResponseFrame
from tests.agents.test_sweep import DEAD_WORKER, joined, make_run, until_complete
from tests.eventually import eventually

pytestmark = pytest.mark.django_db(transaction=True)


async def publish_chunks(thread, run, texts: list[str]) -> None:
    """Publish response chunks of `run` as its worker would have."""
    before = ""
    for index, text in enumerate(texts):
        await publish(
            thread.id,
            ResponseFrame(
                content=text, thread_id=thread.id, run_id=run.id, stream_index=index
            ),
            chunk=Chunk(
                run_id=str(run.id), stream_index=index, text=text, text_before=before
            ),
        )
        before += text


async def running_run(thread, user, *, lease_seconds: float, **fields) -> Run:
    now = timezone.now()
    return await make_run(
        thread,
        user,
        text="tell me",
        status=RunStatus.RUNNING,
        age=timedelta(minutes=2),
        started_at=now - timedelta(minutes=2),
        worker_channel=DEAD_WORKER,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
        **fields,
    )


@database_sync_to_async
def stored(run: Run) -> tuple[Run, list[Message]]:
    return Run.objects.get(pk=run.pk), list(
        Message.objects.filter(run=run, role=MessageRole.ASSISTANT)
    )


@database_sync_to_async
def set_fields(run: Run, **fields) -> None:
    Run.objects.filter(pk=run.pk).update(**fields)


def quiet_stream() -> ChunkStream:
    """A stream whose chunks go nowhere (the checkpoint reads what it published)."""

    async def nowhere(index: int, text: str, text_before: str) -> None:
        return None

    return ChunkStream(nowhere, chunk_size=1000, window=lambda: 0.01, buffered=False)


async def streamed(stream: ChunkStream, text: str) -> None:
    stream.add(text)
    await stream.drain()


# --- the sweeper ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logged", "checkpoint", "expected"),
    [
        pytest.param(["Half ", "an answer"], ("Half ", 1), "Half an answer", id="log"),
        pytest.param(
            [], ("Checkpointed text", 3), "Checkpointed text", id="checkpoint"
        ),
        pytest.param(
            ["Half "], ("Half an answer", 2), "Half an answer", id="log-lost-some"
        ),
        pytest.param([], ("", 0), "", id="neither"),
    ],
)
async def test_a_swept_run_keeps_its_text_failed_with_worker_lost(
    thread, users, client_for, settings, logged, checkpoint, expected
):
    # No in-process worker: its own first sweep would race this test's.
    settings.PARLEY_EMBEDDED_WORKER = False
    run = await running_run(
        thread,
        users[Role.OWNER],
        lease_seconds=-30,
        partial_text=checkpoint[0],
        partial_chunks=checkpoint[1],
    )
    await publish_chunks(thread, run, logged)
    watcher = await joined(client_for(thread.id, users[Role.PARTICIPANT]))

    failed = await sweep_stale_runs()

    assert [str(swept.id) for swept in failed] == [str(run.id)]
    done = (await watcher.receive_until(until_complete))[-1]["content"]
    assert (done["status"], done["text"]) == ("failed", expected)
    assert done["error"]["code"] == "worker_lost" and done["message_id"]
    run_row, (message,) = await stored(run)
    assert (run_row.status, run_row.error_code) == (RunStatus.FAILED, "worker_lost")
    assert message.text == expected and str(message.id) == done["message_id"]

    _, snapshot = await client_for(thread.id, users[Role.OBSERVER]).join()
    reply = snapshot["content"]["messages"][-1]
    assert (reply["role"], reply["run_id"], reply["text"]) == (
        "assistant",
        str(run.id),
        expected,
    )
    assert reply["status"] == "failed" and reply["error"]["code"] == "worker_lost"
    assert reply["error"]["message"]
    assert snapshot["content"]["runs"] == []


async def test_a_run_that_failed_before_any_text_keeps_its_message(thread, users):
    run = await running_run(thread, users[Role.OWNER], lease_seconds=30)

    await database_sync_to_async(services.run_finish)(
        run_id=str(run.id),
        status=RunStatus.FAILED,
        text="",
        chunks=0,
        error_code="provider_error",
        error="upstream said no",
    )

    _, (message,) = await stored(run)
    assert message.text == ""


# --- snapshots ----------------------------------------------------------------------


async def test_a_snapshot_shows_the_checkpoint_while_the_log_has_nothing(
    thread, users, client_for, settings
):
    """After a restart in the embedded mode the log is empty: a reload shows the
    text up to the last checkpoint before the sweeper ends the run."""
    settings.PARLEY_EMBEDDED_WORKER = False
    run = await running_run(
        thread,
        users[Role.OWNER],
        lease_seconds=30,
        partial_text="Written down ",
        partial_chunks=2,
    )

    _, snapshot = await client_for(thread.id, users[Role.OWNER]).join()
    (in_flight,) = snapshot["content"]["runs"]
    assert in_flight["run_id"] == str(run.id) and in_flight["status"] == "running"
    assert (in_flight["text"], in_flight["next_stream_index"]) == ("Written down ", 2)

    # Once the log has more (a live worker), the log's text is the one shown.
    await publish_chunks(thread, run, ["Written ", "down ", "and more"])
    _, snapshot = await client_for(thread.id, users[Role.PARTICIPANT]).join()
    (in_flight,) = snapshot["content"]["runs"]
    assert (in_flight["text"], in_flight["next_stream_index"]) == (
        "Written down and more",
        3,
    )


# --- the checkpoint loop ------------------------------------------------------------


async def test_a_checkpoint_writes_only_the_runs_whose_text_changed(
    thread, users, monkeypatch
):
    first = await running_run(thread, users[Role.OWNER], lease_seconds=30)
    second = await running_run(thread, users[Role.PARTICIPANT], lease_seconds=30)
    batches = []
    write = services.run_checkpoint

    def recorded(*, checkpoints):
        batches.append(sorted(checkpoints))
        return write(checkpoints=checkpoints)

    monkeypatch.setattr(services, "run_checkpoint", recorded)
    checkpoints = Checkpoints()
    streams = {str(first.id): quiet_stream(), str(second.id): quiet_stream()}
    for run_id, stream in streams.items():
        checkpoints.track(run_id, stream)
    await streamed(streams[str(first.id)], "one ")
    await streamed(streams[str(second.id)], "uno ")

    assert await checkpoints.write() == 2
    row = (await stored(first))[0]
    assert (row.partial_text, row.partial_chunks) == ("one ", 1)
    assert (await stored(second))[0].partial_text == "uno "

    await streamed(streams[str(first.id)], "two ")
    assert await checkpoints.write() == 1
    assert batches[-1] == [(str(first.id), "one two ", 2)]  # the unchanged one is not
    assert (await stored(first))[0].partial_text == "one two "

    calls = len(batches)
    assert await checkpoints.write() == 0
    assert len(batches) == calls  # nothing changed: no database call at all

    # A run that ended meanwhile keeps what its finish stored.
    await set_fields(second, status=RunStatus.COMPLETED)
    await streamed(streams[str(second.id)], "dos ")
    assert await checkpoints.write() == 0
    assert (await stored(second))[0].partial_text == "uno "
    for stream in streams.values():
        await stream.close()


async def test_shutdown_writes_a_last_checkpoint(thread, users, settings):
    settings.PARLEY_CHECKPOINT_SECONDS = 2
    run = await running_run(thread, users[Role.OWNER], lease_seconds=30)
    runtime = WorkerRuntime()
    stream = quiet_stream()
    runtime.checkpoints.track(str(run.id), stream)
    await streamed(stream, "almost ")
    await streamed(stream, "done")

    await runtime.shutdown(grace=0)

    row = (await stored(run))[0]
    assert (row.partial_text, row.partial_chunks) == ("almost done", 2)
    await stream.close()


async def test_the_process_exit_writes_a_last_checkpoint(thread, users):
    """daphne stops the embedded worker's loop on SIGTERM without a shutdown."""
    run = await running_run(thread, users[Role.OWNER], lease_seconds=30)
    runtime = runtime_module.get_runtime()
    stream = quiet_stream()
    runtime.checkpoints.track(str(run.id), stream)
    await streamed(stream, "said so far")

    await database_sync_to_async(runtime_module._checkpoint_at_exit)()

    assert (await stored(run))[0].partial_text == "said so far"
    await stream.close()


@pytest.fixture
def fast_checkpoints(settings):
    settings.PARLEY_CHECKPOINT_SECONDS = 0.2


async def test_the_worker_checkpoints_a_streaming_reply(
    thread, users, fast_checkpoints, worker, client_for
):
    thread.agent.extra_params = {"tokens_per_second": 10}
    await database_sync_to_async(thread.agent.save)()
    words = " ".join(f"w{i}" for i in range(60))
    owner = await joined(client_for(thread.id, users[Role.OWNER]))
    await owner.send({"type": "message", "content": words})
    first = await owner.receive_type("response")
    run_id = first["run_id"]

    @database_sync_to_async
    def checkpointed():
        row = Run.objects.get(pk=run_id)
        return row if row.status == "running" and row.partial_chunks >= 3 else None

    row = await eventually(checkpointed, what="a checkpoint of 3 chunks")
    # Exactly the chunks published first, in order.
    chunks = [first["content"]] + [
        frame["content"]
        for frame in await owner.receive_until(
            lambda f: (
                f["type"] == "response" and f["stream_index"] >= row.partial_chunks - 1
            )
        )
        if frame["type"] == "response"
    ]
    assert row.partial_text == "".join(chunks[: row.partial_chunks])
    assert words.startswith(row.partial_text)
    await owner.send({"type": "cancel", "content": None})
    await owner.receive_until(until_complete)
