"""Model signals that move metrics without a call in the code that saves.

* A queued run cancelled (`agents.services.run_cancel` saves its status) ends
  there, not in the worker: counted here. Runs that end in the worker or the
  sweeper are ended by an UPDATE statement, which sends no signal:
  `agents.services.run_finish` calls `ops.metrics.run_finished` itself.
* A saved or deleted agent drops its cached metric labels in this process.
"""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from agents.models import FINAL_RUN_STATUSES, AgentConfig, Run
from ops import metrics


@receiver(post_save, sender=Run)
def run_saved(sender, instance: Run, created: bool, update_fields=None, **kwargs):
    if created or not update_fields or "status" not in update_fields:
        return
    if instance.status in FINAL_RUN_STATUSES:
        metrics.run_finished(instance)


@receiver(post_save, sender=AgentConfig)
@receiver(post_delete, sender=AgentConfig)
def agent_saved(sender, instance: AgentConfig, **kwargs):
    metrics.forget_agent(instance.pk)
