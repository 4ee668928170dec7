"""Receivers: a run that ends gets its webhook deliveries; deliveries made due
wake this process's dispatcher, which every agent worker starts.

`agents.signals.run_ended` is sent inside the transaction that ends a run, so
its delivery rows commit or roll back with the end. Whatever goes wrong here
is logged and left to the dispatcher's sweep (`deliveries_create_missing`): a
webhook never stops a run from ending (each delivery row is written in a
savepoint of its own; a run without webhooks costs one indexed read).
"""

import logging

from django.dispatch import receiver

from agents.models import Run
from agents.signals import run_ended, worker_started
from webhooks import dispatch
from webhooks.services import deliveries_create_for_run
from webhooks.signals import deliveries_due

logger = logging.getLogger(__name__)


def _create_deliveries(**arguments) -> None:
    try:
        deliveries_create_for_run(**arguments)
    except Exception:
        logger.exception(
            "webhook deliveries of run %s not created; the sweep will retry",
            arguments["run_id"],
        )


@receiver(run_ended)
def run_ended_deliveries(sender, run: Run, text: str, **kwargs):
    _create_deliveries(run_id=run.pk, thread_id=run.thread_id, text=text)


@receiver(deliveries_due)
async def wake_the_dispatcher(sender, **kwargs):
    """Deliveries were made due: this process's dispatcher attempts them now."""
    await dispatch.wake()


@receiver(worker_started)
async def start_the_dispatcher(sender, **kwargs):
    """The worker sends what is due from its start on: retries waiting, and
    deliveries a stopped worker left."""
    dispatch.start()
