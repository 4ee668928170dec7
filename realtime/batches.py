"""Calls that arrive while a process's service threads are busy go together.

A burst (a class pressing Enter in the same second; a worker handed 300 runs
at once) used to be one service call per item, each waiting for one of the few
database threads: the queue was those threads, and the last item waited for
all the others. A `ServiceBatches` sends an item to its service at once when a
thread is free; while every thread is busy, the items that arrive meanwhile
wait together and the next free thread takes them all in one call (one
transaction, a handful of statements for the whole batch). At light load
nothing changes: each item is a batch of one.

Used for user messages (chat/admission.py) and for the worker's run claims
(agents/execution.py `claims_and_prepare`).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence

from realtime.events import call_service

# Items in one call at most (one transaction; bounded so that one batch's
# statements stay short).
MAX_BATCH = 100


class ServiceBatches:
    """Batches for one service on one event loop. `service(items=[...])` runs
    in a service thread and returns one outcome per item, in order: a result,
    or an exception that is that item's alone."""

    def __init__(
        self,
        service: Callable[[list], Sequence],
        *,
        concurrency: int,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.service = service
        self.concurrency = max(concurrency, 1)
        self.max_batch = max_batch
        self.waiting: list[tuple[object, asyncio.Future]] = []
        self.in_flight = 0  # batches in a service thread now
        self.in_flight_items = 0  # and their items

    async def submit(self, item):
        """The item's outcome: its result, or the exception raised for it."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((item, future))
        self._start_batches()
        return await future

    def idle(self) -> bool:
        return not (self.in_flight or self.waiting)

    def ahead(self) -> int:
        """Items submitted before one submitted now and not done yet."""
        return len(self.waiting) + self.in_flight_items

    def _start_batches(self) -> None:
        while self.waiting and self.in_flight < self.concurrency:
            size = self.max_batch
            batch, self.waiting = self.waiting[:size], self.waiting[size:]
            self.in_flight += 1
            self.in_flight_items += len(batch)
            # A context of its own: the batch serves many callers, so it must not
            # carry (in log lines) the ids of whichever one started it.
            asyncio.get_running_loop().create_task(
                self._call(batch), context=contextvars.Context()
            )

    async def _call(self, batch: list[tuple[object, asyncio.Future]]) -> None:
        try:
            outcomes = await call_service(
                self.service, items=[item for item, _ in batch]
            )
        except BaseException as error:  # the whole batch failed: each caller hears
            outcomes = [error] * len(batch)
            if not isinstance(error, Exception):
                for _, future in batch:  # cancelled (shutdown): so are its callers
                    future.cancel()
                raise
        finally:
            self.in_flight -= 1
            self.in_flight_items -= len(batch)
            self._start_batches()
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue  # its caller went away meanwhile
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
