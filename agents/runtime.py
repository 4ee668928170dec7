"""The agent runtime of one worker process: `WorkerRuntime`, and the process's
one instance (`get_runtime`).

It executes many runs at once, one asyncio task each in a free slot (at most
PARLEY_WORKER_CONCURRENCY), answers the cancel and input messages sent to its
own control channel, and shuts down gracefully. The jobs it composes each have
a module of their own:

- agents/execution.py: one run, from its claim to its finish (the tool loop;
  its tool calls in agents/tool_calls.py, a team's next speaker in
  agents/next_speaker.py);
- agents/streaming.py: tokens -> chunks -> `response` events; `flush_window`
  here sets how long a token may wait, from the number of runs in flight;
- agents/questions.py: the questions and approvals its runs wait on;
- agents/leases.py: renewing the leases of its runs;
- agents/sweep.py: failing runs whose worker died;
- agents/checkpoints.py: writing the text so far of its runs to the database.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
from functools import partial

from channels.layers import get_channel_layer
from django.conf import settings

from agents import services
from agents.checkpoints import Checkpoints
from agents.execution import claims_and_prepare, execute_run
from agents.leases import keep_leases
from agents.questions import Questions
from agents.signals import worker_started
from agents.streaming import reply_stream
from agents.sweep import sweep_forever
from ops import metrics
from ops.logs import log_context_start
from realtime.batches import ServiceBatches
from realtime.retry import Backoff

logger = logging.getLogger(__name__)


class WorkerRuntime:
    """The runs in flight in this worker (`tasks`, one each), its slots, its
    control channel, and the background loops that keep leases, sweep and
    write checkpoints."""

    def __init__(self) -> None:
        self.channel_name: str | None = None
        self.tasks: dict[str, asyncio.Task] = {}
        self.cancel_reasons: dict[str, str] = {}
        self.accepting = True
        self.questions = Questions()
        self.checkpoints = Checkpoints()
        self._slots: asyncio.Semaphore | None = None
        self._background: list[asyncio.Task] = []
        self._started = False
        # Claims that arrive while the service threads are busy go together.
        self._claims: ServiceBatches | None = None

    # --- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._slots = asyncio.Semaphore(settings.PARLEY_WORKER_CONCURRENCY)
        layer = get_channel_layer()
        self.channel_name = await layer.new_channel("agents.worker.")
        self._claims = ServiceBatches(
            partial(claims_and_prepare, worker_channel=self.channel_name),
            concurrency=settings.PARLEY_SERVICE_THREADS,
        )
        loop = asyncio.get_running_loop()
        self._background = [
            loop.create_task(self._listen_control(layer)),
            loop.create_task(
                keep_leases(
                    worker_channel=self.channel_name,
                    running=lambda: list(self.tasks),
                    cancel=self.cancel,
                )
            ),
            loop.create_task(sweep_forever()),
        ]
        if settings.PARLEY_CHECKPOINT_SECONDS > 0:
            self._background.append(
                loop.create_task(
                    self.checkpoints.write_forever(settings.PARLEY_CHECKPOINT_SECONDS)
                )
            )
            _checkpoint_at_exit_once()
        logger.info("agent worker %s started", self.channel_name)
        await worker_started.asend(sender=WorkerRuntime)

    def flush_window(self) -> float:
        """Seconds a token may wait to share a chunk: PARLEY_FLUSH_WINDOW_MS
        while the worker is lightly loaded, stretching with the number of runs
        in flight up to PARLEY_FLUSH_WINDOW_MAX_MS. Every chunk costs the same
        to publish and deliver whatever it holds, so under load fewer, fuller
        chunks keep latency bounded where one chunk per token would not."""
        base = settings.PARLEY_FLUSH_WINDOW_MS
        stretch = len(self.tasks) / settings.PARLEY_FLUSH_WINDOW_RUNS
        return (
            min(settings.PARLEY_FLUSH_WINDOW_MAX_MS, max(base, base * stretch)) / 1000
        )

    async def reserve_slot(self) -> None:
        """Wait for a free slot and hold it for a run about to be submitted."""
        await self._slots.acquire()

    async def reserve_free_slots(self, wanted: int) -> int:
        """Hold up to `wanted` more slots that are free now; how many were
        taken. (Acquiring a semaphore that is not locked does not wait.)"""
        taken = 0
        while taken < wanted and not self._slots.locked():
            await self._slots.acquire()
            taken += 1
        return taken

    def release_slot(self) -> None:
        self._slots.release()

    async def submit(self, run_id: str, *, slot_reserved: bool = False) -> None:
        """Start the run in a task of its own, in a free slot (waiting for one
        unless the caller reserved it)."""
        if not self.accepting or run_id in self.tasks:
            if slot_reserved:
                self.release_slot()
            if not self.accepting:
                # Hand it back for another worker; the sweeper catches it otherwise.
                await services.send_to_channel(
                    services.AGENT_RUNS_CHANNEL, {"type": "run.start", "run_id": run_id}
                )
            return
        if not slot_reserved:
            await self._slots.acquire()
        task = asyncio.get_running_loop().create_task(self.execute(run_id))
        self.tasks[run_id] = task
        metrics.worker_run_began()

        def done(_task: asyncio.Task) -> None:
            metrics.worker_run_ended()
            self.tasks.pop(run_id, None)
            self.cancel_reasons.pop(run_id, None)
            self._slots.release()

        task.add_done_callback(done)

    async def shutdown(self, grace: float) -> None:
        """Stop taking runs, let running ones finish for `grace` seconds, then fail them."""
        self.accepting = False
        if settings.PARLEY_CHECKPOINT_SECONDS > 0:
            # Should the process be killed during the grace period.
            try:
                await self.checkpoints.write()
            except Exception:
                logger.exception("writing checkpoints at shutdown failed")
        running = list(self.tasks.values())
        if running:
            logger.info("waiting up to %.0f s for %d runs", grace, len(running))
            await asyncio.wait(running, timeout=grace)
        for run_id in list(self.tasks):
            self.cancel(run_id, reason="shutdown")
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()), timeout=10)
        for task in self._background:
            task.cancel()

    # --- one run -----------------------------------------------------------
    async def execute(self, run_id: str) -> None:
        # One database hop from `run.start` to calling the provider, shared
        # with the other runs handed over meanwhile.
        claimed = await self._claims.submit(run_id)
        if claimed is None:
            return
        run, prepared = claimed
        log_context_start(
            run_id=run_id, thread_id=run.thread_id, user_id=run.requested_by_id
        )
        stream = reply_stream(run, window=self.flush_window)
        self.checkpoints.track(run_id, stream)
        try:
            await execute_run(
                run,
                prepared,
                stream,
                questions=self.questions,
                cancel_reasons=self.cancel_reasons,
            )
        finally:
            self.checkpoints.forget(run_id)

    # --- control -----------------------------------------------------------
    def cancel(self, run_id: str, reason: str = "cancel") -> None:
        """Stop a run once: cancelling its task closes the provider's stream."""
        task = self.tasks.get(run_id)
        if task is not None and not task.done() and run_id not in self.cancel_reasons:
            self.cancel_reasons[run_id] = reason
            task.cancel()

    async def _listen_control(self, layer) -> None:
        backoff = Backoff(0.1)
        while True:
            try:
                message = await layer.receive(self.channel_name)
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning("control channel: %s", error)
                await backoff.wait()
                continue
            if message.get("type") == "run.cancel":
                self.cancel(message["run_id"])
            elif message.get("type") == "run.input":
                approve = message.get("approve")
                self.questions.answer(
                    message["run_id"],
                    message.get("input_id"),
                    message.get("text") if approve is None else bool(approve),
                    message.get("username", ""),
                )


_runtime: WorkerRuntime | None = None


def get_runtime() -> WorkerRuntime:
    global _runtime
    if _runtime is None:
        _runtime = WorkerRuntime()
    return _runtime


def reset_runtime() -> None:
    global _runtime
    _runtime = None


_exit_hook_registered = False


def _checkpoint_at_exit_once() -> None:
    """A last checkpoint when the process exits normally: the embedded worker
    lives in daphne, which stops its event loop on SIGTERM without telling the
    application, so `shutdown` never runs there."""
    global _exit_hook_registered
    if not _exit_hook_registered:
        _exit_hook_registered = True
        atexit.register(_checkpoint_at_exit)


def _checkpoint_at_exit() -> None:
    if _runtime is not None:
        _runtime.checkpoints.write_at_exit()
