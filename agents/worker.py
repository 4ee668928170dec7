"""The worker consumer on channel `agent-runs`, and the server loop that feeds it.

`python manage.py runworker agent-runs` (agents/management/commands/runworker.py)
runs `AgentWorkerServer`; in embedded mode the web process runs the same server
as a background task (`start_embedded_worker`).
"""

from __future__ import annotations

import asyncio
import logging

from channels.consumer import AsyncConsumer
from channels.layers import InMemoryChannelLayer
from channels.worker import Worker

from agents.runtime import get_runtime
from agents.services import AGENT_RUNS_CHANNEL, send_run_starts
from realtime.retry import Backoff

logger = logging.getLogger(__name__)

RECEIVERS_PER_CHANNEL = 8


class AgentRunConsumer(AsyncConsumer):
    """Handles `run.start`; each run executes in its own task, so many run at once."""

    # The server feeds this consumer; it needs no channel of its own (which
    # would tie its life to the channel layer's connection).
    channel_layer_alias = "agent-worker-needs-no-layer"

    async def dispatch(self, message: dict) -> None:
        # channels' dispatch first closes stale database connections in the
        # database thread (a hop per message); `run.start` uses no connection
        # here (the run's own task does, through call_service).
        if message.get("type") == "run.start":
            await self.run_start(message)
        else:
            await super().dispatch(message)

    async def run_start(self, message: dict) -> None:
        await get_runtime().submit(
            message["run_id"], slot_reserved=message.get("slot_reserved", False)
        )


class AgentWorkerServer(Worker):
    """channels' Worker, made to survive a lost channel layer (Redis restarting)
    and to take a run off the channel only when it has a free slot, so that
    busy workers leave runs to idle ones."""

    def __init__(self, application, channel_layer) -> None:
        super().__init__(application, [AGENT_RUNS_CHANNEL], channel_layer)
        self.stopping = asyncio.Event()

    async def handle(self) -> None:
        await get_runtime().start()
        await super().handle()

    async def listener(self, channel: str) -> None:
        # Several receives in flight: under load every Redis round trip waits
        # for a busy event loop, and one at a time would start runs one by one.
        # (The in-memory layer drops a channel's queue once it is empty,
        # stranding the other receivers: one there.)
        receivers = (
            1
            if isinstance(self.channel_layer, InMemoryChannelLayer)
            else RECEIVERS_PER_CHANNEL
        )
        await asyncio.gather(*(self._receive_runs(channel) for _ in range(receivers)))

    async def _receive_runs(self, channel: str) -> None:
        runtime = get_runtime()
        backoff = Backoff(0.1)
        while not self.stopping.is_set():
            # Hold a free slot before taking a run off the channel: a full
            # worker leaves runs to the others.
            await runtime.reserve_slot()
            handed_over = False
            try:
                receive = asyncio.ensure_future(self.channel_layer.receive(channel))
                stop = asyncio.ensure_future(self.stopping.wait())
                try:
                    done, _ = await asyncio.wait(
                        {receive, stop}, return_when=asyncio.FIRST_COMPLETED
                    )
                except asyncio.CancelledError:
                    # asyncio.wait leaves its futures running: a receive left
                    # behind would hold channels-redis's lock on the channel.
                    receive.cancel()
                    stop.cancel()
                    await asyncio.gather(receive, stop, return_exceptions=True)
                    raise
                stop.cancel()
                if receive not in done:
                    receive.cancel()
                    break
                try:
                    message = receive.result()
                    backoff.reset()
                except Exception as error:
                    logger.warning(
                        "agent-runs: channel layer unavailable (%s); retrying", error
                    )
                    await backoff.wait()
                    continue
                run_ids = run_ids_of(message)
                if not run_ids:
                    logger.warning("agent-runs: ignoring %r", message)
                    continue
                # One slot is held; the batch's other runs take what is free
                # now and the rest go back on the channel for other workers.
                taken = 1 + await runtime.reserve_free_slots(len(run_ids) - 1)
                if taken < len(run_ids):
                    await send_run_starts(run_ids[taken:])
                queue = self.get_or_create_application_instance(
                    channel, {"type": "channel", "channel": channel}
                )
                for run_id in run_ids[:taken]:
                    await queue.put(
                        {"type": "run.start", "run_id": run_id, "slot_reserved": True}
                    )
                handed_over = True
            finally:
                if not handed_over:
                    runtime.release_slot()


def run_ids_of(message: dict) -> list[str]:
    """The runs a `run.start` message asks for: `run_ids` (a batch) or `run_id`."""
    if message.get("type") != "run.start":
        return []
    run_ids = message.get("run_ids")
    if run_ids is None:
        run_ids = [message["run_id"]] if message.get("run_id") else []
    return [str(run_id) for run_id in run_ids if run_id]


def worker_application():
    from channels.routing import ChannelNameRouter

    return ChannelNameRouter({AGENT_RUNS_CHANNEL: AgentRunConsumer.as_asgi()})


_embedded: asyncio.Task | None = None


def start_embedded_worker() -> None:
    """Run the agent worker inside this (web) process, once per event loop."""
    global _embedded
    if _embedded is not None and not _embedded.done():
        return
    from channels.layers import get_channel_layer

    server = AgentWorkerServer(worker_application(), get_channel_layer())
    _embedded = asyncio.get_running_loop().create_task(server.arun())
    logger.info("embedded agent worker started")
