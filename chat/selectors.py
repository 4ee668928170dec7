"""Reads of threads and messages, including the snapshot a socket starts from."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet

from agents.models import ACTIVE_RUN_STATUSES, Run
from chat.errors import ErrorCode, ServiceError
from chat.eventlog import ThreadLogState
from chat.models import Message, Role, Thread
from chat.permissions import can_read, thread_role

SNAPSHOT_MESSAGES = 200


def thread_list_for_user(*, user) -> QuerySet[Thread]:
    threads = Thread.objects.select_related("agent", "owner")
    if user.is_staff:
        return threads.all()
    return threads.filter(Q(owner=user) | Q(members__user=user)).distinct()


def thread_get_for_user(*, thread_id, user) -> tuple[Thread, Role]:
    """The thread and the caller's role; a stranger gets 404, never 403."""
    try:
        thread = Thread.objects.select_related("agent", "owner").get(pk=thread_id)
    except (Thread.DoesNotExist, ValidationError, ValueError, TypeError):
        raise ServiceError(
            ErrorCode.THREAD_NOT_FOUND, "No such thread.", status=404
        ) from None
    role = thread_role(thread=thread, user=user)
    if not can_read(role):
        raise ServiceError(ErrorCode.THREAD_NOT_FOUND, "No such thread.", status=404)
    return thread, role


def message_content(message: Message) -> dict:
    return {
        "id": str(message.id),
        "role": message.role,
        "text": message.text,
        "author": {"username": message.author.username} if message.author_id else None,
        "agent": message.agent.name if message.agent_id else None,
        "run_id": str(message.run_id) if message.run_id else None,
        "status": message.run.status
        if message.run_id and message.role == "assistant"
        else None,
        "error": (
            {"code": message.run.error_code, "message": message.run.error}
            if message.run_id and message.role == "assistant" and message.run.error_code
            else None
        ),
        "created_at": message.created_at.isoformat().replace("+00:00", "Z"),
    }


def message_history(
    *, thread: Thread, limit: int = SNAPSHOT_MESSAGES, max_chars: int | None = None
) -> list[Message]:
    """The latest messages, oldest first, at most `limit` and about `max_chars`."""
    recent = (
        Message.objects.filter(thread=thread)
        .select_related("author", "agent", "run")
        .order_by("-created_at")[:limit]
    )
    kept, total = [], 0
    for message in recent:
        total += len(message.text)
        if max_chars is not None and kept and total > max_chars:
            break
        kept.append(message)
    return list(reversed(kept))


def thread_snapshot(*, thread: Thread, log_state: ThreadLogState) -> dict:
    """History plus runs in flight with their text so far, consistent with
    `log_state` (read before this, so events after it may already show here;
    clients ignore what they already have, see docs/protocol.md)."""
    messages = message_history(
        thread=thread, max_chars=settings.PARLEY_SNAPSHOT_MAX_CHARS
    )
    finished_runs = {
        str(m.run_id) for m in messages if m.role == "assistant" and m.run_id
    }
    runs = []
    for run in Run.objects.filter(
        thread=thread, status__in=ACTIVE_RUN_STATUSES
    ).order_by("created_at"):
        run_id = str(run.id)
        if run_id in finished_runs:
            continue
        progress = log_state.runs.get(run_id)
        runs.append(
            {
                "run_id": run_id,
                "status": run.status,
                "text": progress.text if progress else "",
                "next_stream_index": progress.next_stream_index if progress else 0,
            }
        )
    return {
        "last_event_id": log_state.last_event_id,
        "messages": [message_content(message) for message in messages],
        "runs": runs,
    }
