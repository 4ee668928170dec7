"""Checkpoints: the text the worker's runs have published so far, written to
the database (`Run.partial_text`) every PARLEY_CHECKPOINT_SECONDS, one batch
for all of them, and once more at shutdown and at exit.

For the embedded mode, whose event log dies with the process: the sweeper and
snapshots fall back to a run's checkpoint where the log has nothing. The
streaming path itself never writes to the database.
"""

from __future__ import annotations

import asyncio
import logging

from agents import services
from agents.streaming import ChunkStream
from realtime.events import call_service

logger = logging.getLogger(__name__)


class Checkpoints:
    """The reply streams of the runs in flight, and what each last wrote."""

    def __init__(self) -> None:
        self._streams: dict[str, ChunkStream] = {}
        self._written: dict[str, int] = {}  # run id -> chunks at its last checkpoint

    def track(self, run_id: str, stream: ChunkStream) -> None:
        self._streams[run_id] = stream

    def forget(self, run_id: str) -> None:
        self._streams.pop(run_id, None)
        self._written.pop(run_id, None)

    def changed(self) -> list[tuple[str, str, int]]:
        """(run_id, text, chunks) of the runs that published chunks since their
        last checkpoint."""
        return [
            (run_id, *stream.published)
            for run_id, stream in self._streams.items()
            if stream.chunks > self._written.get(run_id, 0)
        ]

    async def write(self) -> int:
        """Write the text so far of the runs whose text changed since their last
        checkpoint, in one batch; returns how many were written."""
        changed = self.changed()
        if not changed:
            return 0
        written = await call_service(services.run_checkpoint, checkpoints=changed)
        for run_id, _text, chunks in changed:
            if run_id in self._streams:  # not finished meanwhile
                self._written[run_id] = chunks
        return written

    async def write_forever(self, interval: float) -> None:
        """One batch per interval, whatever the number of runs and chunks."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.write()
            except Exception:
                logger.exception("writing checkpoints failed")

    def write_at_exit(self) -> None:
        """Write what changed, from synchronous code (an exit hook)."""
        changed = self.changed()
        if not changed:
            return
        try:
            services.run_checkpoint(checkpoints=changed)
            logger.info("wrote the text of %d runs at exit", len(changed))
        except Exception:
            logger.exception("writing checkpoints at exit failed")
