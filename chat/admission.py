"""User messages from this process's sockets enter the database in batches
(realtime/batches.py): while every service thread is busy, the messages that
arrive wait together and the next free thread posts them all in one
transaction (`chat.services.messages_post`). At light load each message is a
batch of one.
"""

from __future__ import annotations

import asyncio
import weakref

from django.conf import settings

from realtime.batches import ServiceBatches


def _post_messages(*, items):
    from chat import services  # late: tests replace it

    return services.messages_post(requests=items)


class MessageAdmission(ServiceBatches):
    """The message batches of one process (event loop)."""

    def __init__(self, concurrency: int) -> None:
        super().__init__(_post_messages, concurrency=concurrency)

    async def post(self, request):
        """Post one message (a `chat.services.MessageRequest`); its run, or the
        ServiceError that refused it, raised."""
        return await self.submit(request)


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
