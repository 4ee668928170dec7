"""Writes for the OpenAI-compatible endpoint: one call = one run in a thread."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from agents.models import Run
from chat.models import Role, Thread
from chat.selectors import thread_get_for_user
from chat.services import agent_get_enabled, message_post, thread_create
from compat.errors import CompatErrorCode
from realtime.errors import ServiceError


def completion_start(
    *, user, agent_name: str, thread_id, text: str, title: str
) -> tuple[Run, Role]:
    """Post `text` as `user`'s message to the thread `thread_id` (None: a new
    thread of theirs with `agent_name`, titled `title`) and queue its run,
    through the same service as a socket's message (roles, rate limits, run
    limits, busy policy). Returns the run and the caller's role there. A
    refused message leaves no new thread behind (one transaction)."""
    with transaction.atomic():
        if thread_id is None:
            thread = thread_create(owner=user, agent_name=agent_name, title=title)
            role = Role.OWNER
        else:
            thread, role = thread_get_for_user(thread_id=thread_id, user=user)
            if thread.agent.name != agent_name:
                raise ServiceError(
                    CompatErrorCode.MODEL_MISMATCH,
                    f"The thread's agent is {thread.agent.name!r}, not "
                    f"{agent_name!r}; name it as the model.",
                )
        run = message_post(thread=thread, user=user, text=text)
    return run, role


def turn_start(
    *, user, agent_name: str, thread_id: str, text: str, title: str
) -> tuple[Run, Role]:
    """Post `text` to the thread `thread_id` as the OpenAI endpoint does
    (compat.services.completion_start), first creating it as `user`'s own with
    `agent_name` when no thread has that id. One transaction: a refused
    message leaves no new thread behind."""
    with transaction.atomic():
        if not Thread.objects.filter(pk=thread_id).exists():
            agent = agent_get_enabled(name=agent_name)
            try:
                with transaction.atomic():
                    Thread.objects.create(
                        id=thread_id, owner=user, agent=agent, title=title[:200]
                    )
            except IntegrityError:
                pass  # created by a call at the same moment: it is there now
        return completion_start(
            user=user,
            agent_name=agent_name,
            thread_id=thread_id,
            text=text,
            title=title,
        )
