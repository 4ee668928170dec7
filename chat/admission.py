"""User messages from this process's sockets enter the database in batches.

A burst (a class pressing Enter in the same second) used to be one service
call per message, each waiting for one of the few database threads: the queue
was those threads, and the first response of the last message waited for all
the others. Now a message goes into the database at once when a thread is
free; while every thread is busy, the messages that arrive wait together and
the next free thread posts them all in one transaction
(`chat.services.messages_post`: a handful of statements for the whole batch).
At light load nothing changes: each message is a batch of one.
"""

from __future__ import annotations

import asyncio
import weakref

from django.conf import settings

from chat.events import call_service

# Messages posted together at most (one transaction; bounded so that one
# batch's statements stay short).
MAX_BATCH = 100


class MessageAdmission:
    """The message batches of one process (event loop)."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = max(concurrency, 1)
        self.waiting: list[tuple[object, asyncio.Future]] = []
        self.in_flight = 0

    async def post(self, request):
        """Post one message (a `chat.services.MessageRequest`); its run, or the
        ServiceError that refused it, raised."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((request, future))
        self._start_batches()
        return await future

    def _start_batches(self) -> None:
        while self.waiting and self.in_flight < self.concurrency:
            batch, self.waiting = self.waiting[:MAX_BATCH], self.waiting[MAX_BATCH:]
            self.in_flight += 1
            asyncio.get_running_loop().create_task(self._post(batch))

    async def _post(self, batch: list[tuple[object, asyncio.Future]]) -> None:
        from chat.services import messages_post

        try:
            outcomes = await call_service(
                messages_post, requests=[request for request, _ in batch]
            )
        except BaseException as error:  # the whole batch failed: each caller hears
            outcomes = [error] * len(batch)
            if not isinstance(error, Exception):
                raise
        finally:
            self.in_flight -= 1
            self._start_batches()
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue  # its socket went away meanwhile
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


_admissions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def message_admission() -> MessageAdmission:
    """This event loop's MessageAdmission."""
    loop = asyncio.get_running_loop()
    admission = _admissions.get(loop)
    if admission is None:
        admission = _admissions[loop] = MessageAdmission(
            settings.PARLEY_SERVICE_THREADS
        )
    return admission
