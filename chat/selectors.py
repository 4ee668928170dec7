"""Reads of threads and messages, including the snapshot a socket starts from."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from rest_framework.authtoken.models import Token

from agents.models import ACTIVE_RUN_STATUSES, Run
from chat.errors import ErrorCode, ServiceError
from chat.eventlog import ThreadLogState
from chat.models import Message, Role, Thread, ThreadMember
from chat.permissions import can_read, thread_role, thread_role_for

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


def user_get_for_token(*, key: str):
    """The active user an API token belongs to, else AnonymousUser."""
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return AnonymousUser()
    return token.user


# A thread with more members than this is not cached whole (chat/connectcache.py).
MAX_CACHED_MEMBERS = 1_000


@dataclass(frozen=True)
class SocketAccess:
    """Who opens a thread socket and as what. `thread` is None when there is no
    such thread, `role` None when the user is a stranger to it. `member_roles`
    (user id -> role of every member) only when asked for, for the cache."""

    user: object
    thread: Thread | None = None
    role: Role | None = None
    member_roles: dict | None = None


def thread_access_for_socket(
    *, thread_id, user, token_key: str | None, with_member_roles: bool = False
) -> SocketAccess:
    """The socket's user (from its API token, when it brought one), the thread
    and the user's role: one trip to the database thread per connect."""
    if token_key is not None:
        user = user_get_for_token(key=token_key)
    if user is None or not user.is_authenticated:
        return SocketAccess(user=AnonymousUser())
    try:
        thread = Thread.objects.select_related("agent", "owner").get(pk=thread_id)
    except (Thread.DoesNotExist, ValidationError, ValueError, TypeError):
        return SocketAccess(user=user)
    if not with_member_roles:
        return SocketAccess(
            user=user, thread=thread, role=thread_role(thread=thread, user=user)
        )
    member_roles = dict(
        ThreadMember.objects.filter(thread=thread).values_list("user_id", "role")[
            : MAX_CACHED_MEMBERS + 1
        ]
    )
    role = thread_role_for(
        thread=thread, user=user, member_role=member_roles.get(user.pk)
    )
    if len(member_roles) > MAX_CACHED_MEMBERS:
        role = thread_role(thread=thread, user=user)
        member_roles = None
    return SocketAccess(user=user, thread=thread, role=role, member_roles=member_roles)


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
    return snapshot_with_progress(thread_snapshot_rows(thread=thread), log_state)


def thread_snapshot_rows(*, thread: Thread) -> dict:
    """The database part of a snapshot: the latest messages and the runs not
    finished yet (`{"messages": [...], "runs": [(run_id, status), ...]}`)."""
    messages = message_history(
        thread=thread, max_chars=settings.PARLEY_SNAPSHOT_MAX_CHARS
    )
    finished_runs = {
        str(m.run_id) for m in messages if m.role == "assistant" and m.run_id
    }
    runs = [
        (str(run_id), status)
        for run_id, status in Run.objects.filter(
            thread=thread, status__in=ACTIVE_RUN_STATUSES
        )
        .order_by("created_at")
        .values_list("id", "status")
        if str(run_id) not in finished_runs
    ]
    return {
        "messages": [message_content(message) for message in messages],
        "runs": runs,
    }


def snapshot_with_progress(rows: dict, log_state: ThreadLogState) -> dict:
    """The snapshot from its database part and the log's state (the run text so
    far); `rows` is not changed (it may be shared by several sockets)."""
    runs = []
    for run_id, status in rows["runs"]:
        progress = log_state.runs.get(run_id)
        runs.append(
            {
                "run_id": run_id,
                "status": status,
                "text": progress.text if progress else "",
                "next_stream_index": progress.next_stream_index if progress else 0,
            }
        )
    return {
        "last_event_id": log_state.last_event_id,
        "messages": rows["messages"],
        "runs": runs,
    }
