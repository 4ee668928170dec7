"""Signals of the agents app.

`run_ended(sender=Run, run=..., text=...)` is sent inside the transaction that
ends a run (completed, failed or cancelled: agents/services.py `run_finish`
and `run_cancel`), so what a receiver writes commits or rolls back with the
end. `run` carries the outcome (status, finished_at, usage, error_code, error,
cancel_reason) and its thread, agent and prompt ids; `text` is the reply.
Receivers run on the path of every reply: one query at most.

`worker_started(sender=WorkerRuntime)` is sent (asynchronously, on the worker's
event loop) once a worker process, or the embedded worker, has started: apps
with background work of their own start it there (webhooks/receivers.py).
"""

from django.dispatch import Signal

run_ended = Signal()
worker_started = Signal()
