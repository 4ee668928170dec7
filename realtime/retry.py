"""How long to wait before trying again: one backoff for every retry loop.

Everything that loses Redis or the database at once (a restart) retries at
once: each loop waits `first` seconds, then twice as long each time up to
`maximum`, every wait drawn between half and all of it (jitter) so that many
processes and sockets do not come back in step. A success `reset()`s it.
"""

from __future__ import annotations

import asyncio
import random


class Backoff:
    def __init__(
        self, first: float = 0.1, *, maximum: float = 2.0, factor: float = 2.0
    ) -> None:
        self.first = first
        self.maximum = maximum
        self.factor = factor
        self.delay = first

    def next_delay(self) -> float:
        """The wait before the next attempt (and grow the one after it)."""
        delay = self.delay * random.uniform(0.5, 1.0)
        self.delay = min(self.delay * self.factor, self.maximum)
        return delay

    async def wait(self) -> None:
        await asyncio.sleep(self.next_delay())

    def reset(self) -> None:
        self.delay = self.first
