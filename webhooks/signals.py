"""Signals of the webhooks app.

`deliveries_due` is sent (asynchronously, after the commit) when deliveries
were created or redelivered: webhooks/receivers.py wakes the process's
dispatcher with it, so the services that write rows need not know the
dispatcher.
"""

from django.dispatch import Signal

deliveries_due = Signal()


async def announce_deliveries_due() -> None:
    """After a commit that made deliveries due: tell whoever sends them."""
    await deliveries_due.asend(sender=None)
