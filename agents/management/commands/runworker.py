"""`runworker agent-runs`: the agent worker, with leases, sweeping and graceful stop.

Other channels fall through to channels' stock runworker.
"""

import asyncio
import logging
import signal

from channels.layers import get_channel_layer
from channels.management.commands.runworker import Command as ChannelsRunworker
from django.conf import settings

from agents.runtime import get_runtime
from agents.services import AGENT_RUNS_CHANNEL
from agents.worker import AgentWorkerServer, worker_application
from config.process import prepare_server_process

logger = logging.getLogger("agents.worker")


class Command(ChannelsRunworker):
    help = "Run agent workers (agent-runs) or other channel workers."

    def handle(self, *args, **options):
        if options["channels"] != [AGENT_RUNS_CHANNEL]:
            return super().handle(*args, **options)
        prepare_server_process(runs_agents=True)
        asyncio.run(self.serve(get_channel_layer(options.get("layer", "default"))))

    async def serve(self, channel_layer) -> None:
        server = AgentWorkerServer(worker_application(), channel_layer)
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop_requested.set)
        serving = loop.create_task(server.arun())
        self.stdout.write(f"Agent worker listening on {AGENT_RUNS_CHANNEL}")
        stopped = loop.create_task(stop_requested.wait())
        await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            serving.result()  # re-raise a crash
            return
        grace = settings.PARLEY_SHUTDOWN_GRACE_SECONDS
        logger.info("stopping: no new runs; %.0f s for running ones", grace)
        server.stopping.set()
        await get_runtime().shutdown(grace)
        serving.cancel()
