"""Reads of threads and messages, including the snapshot a socket starts from."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import (
    BooleanField,
    Case,
    Exists,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.utils import timezone
from rest_framework.authtoken.models import Token

from agents.models import (
    ACTIVE_RUN_STATUSES,
    AgentConfig,
    Run,
    RunInput,
    RunInputStatus,
)
from agents.selectors import tool_steps_by_run
from chat.models import (
    Message,
    Role,
    Thread,
    ThreadAgent,
    ThreadMember,
    ThreadReadMark,
)
from chat.permissions import can_read, thread_role, thread_role_for
from realtime.errors import ErrorCode, ServiceError
from realtime.eventlog import ThreadLogState

SNAPSHOT_MESSAGES = 200


def thread_agents(*, thread: Thread) -> list[AgentConfig]:
    """The thread's agents in order, the default (`thread.agent`) first; one
    query for the others unless they were prefetched (`with_thread_agents`)."""
    cached = getattr(thread, "_prefetched_objects_cache", {})
    if "extra_agents" in cached:
        seats = cached["extra_agents"]
    else:
        seats = thread.extra_agents.select_related("agent").order_by("position")
    return [thread.agent, *(seat.agent for seat in seats)]


def thread_agents_by_thread(*, thread_ids) -> dict[str, list[AgentConfig]]:
    """The extra agents (all but the default) of each of these threads, in
    order, keyed by thread id: one query for all of them."""
    found: dict[str, list[AgentConfig]] = {}
    for seat in (
        ThreadAgent.objects.filter(thread_id__in=list(thread_ids))
        .select_related("agent")
        .order_by("thread_id", "position")
    ):
        found.setdefault(str(seat.thread_id), []).append(seat.agent)
    return found


def with_thread_agents(threads: QuerySet[Thread]) -> QuerySet[Thread]:
    """`threads` with their extra agents prefetched, for `thread_agents`."""
    return threads.prefetch_related(
        Prefetch(
            "extra_agents",
            queryset=ThreadAgent.objects.select_related("agent").order_by("position"),
        )
    )


def thread_list_for_user(*, user) -> QuerySet[Thread]:
    threads = with_thread_agents(Thread.objects.select_related("agent", "owner"))
    if user.is_staff:
        return threads.all()
    return threads.filter(Q(owner=user) | Q(members__user=user)).distinct()


def run_list_for_user(*, user) -> QuerySet[Run]:
    """The runs in threads `user` may read (staff: every run), with their
    agent, requester and thread (chat/run_api.py serves them)."""
    runs = Run.objects.select_related("agent", "requested_by", "thread")
    if user.is_staff:
        return runs
    return runs.filter(thread__in=thread_list_for_user(user=user).values("pk"))


def with_read_state(threads: QuerySet[Thread], *, user) -> QuerySet[Thread]:
    """`threads` with what the user's thread list shows of each: `last_read_at`
    (the user's read mark, None before they first open it), `unread` (activity
    they have not seen) and `running` (an agent reply in progress).

    Unread means a message by someone else (another person or an agent) after
    the user's read mark; without a mark, a thread the user owns is unread once
    someone else wrote in it, a thread shared with them is unread (new to
    them), and staff browsing a thread they are no member of see it as read."""
    mark = ThreadReadMark.objects.filter(thread=OuterRef("pk"), user=user)
    by_others = Message.objects.filter(thread=OuterRef("pk")).exclude(author=user)
    return threads.annotate(
        last_read_at=Subquery(mark.values("last_read_at")[:1]),
        unread=Case(
            When(
                last_read_at__isnull=False,
                then=Exists(by_others.filter(created_at__gt=OuterRef("last_read_at"))),
            ),
            When(owner=user, then=Exists(by_others)),
            When(
                Exists(ThreadMember.objects.filter(thread=OuterRef("pk"), user=user)),
                then=Value(True),
            ),
            default=Value(False),
            output_field=BooleanField(),
        ),
        running=Exists(
            Run.objects.filter(thread=OuterRef("pk"), status__in=ACTIVE_RUN_STATUSES)
        ),
    )


def thread_read_state(*, thread: Thread, user) -> dict:
    """`with_read_state` of one thread: {"last_read_at", "unread", "running"}."""
    found = (
        with_read_state(Thread.objects.filter(pk=thread.pk), user=user)
        .values("last_read_at", "unread", "running")
        .first()
    )
    return found or {"last_read_at": None, "unread": False, "running": False}


# Full-text search on PostgreSQL; chat/migrations/0004 indexes this very
# expression (the index serves only queries that use the same config).
SEARCH_CONFIG = "english"
SEARCH_MAX_TERMS = 8
SNIPPET_CHARS = 140


def search_terms(query: str) -> list[str]:
    """The words of a search, at most SEARCH_MAX_TERMS."""
    return re.findall(r"\w+", query)[:SEARCH_MAX_TERMS]


def _messages_matching(terms: list[str]) -> QuerySet[Message]:
    """Messages with every term, the last one as a prefix (search as you
    type): PostgreSQL full-text search (stemmed, so "deploying" finds
    "deployed"), elsewhere a case-insensitive substring test per term."""
    if not terms:
        return Message.objects.none()
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import SearchQuery, SearchVector

        # Quoted lexemes: \w+ holds no quote or backslash, so nothing in the
        # query is tsquery syntax but the `&` and `:*` written here.
        raw = " & ".join(f"'{term}'" for term in terms[:-1])
        raw = (raw + " & " if raw else "") + f"'{terms[-1]}':*"
        return Message.objects.annotate(
            search=SearchVector("text", config=SEARCH_CONFIG)
        ).filter(search=SearchQuery(raw, search_type="raw", config=SEARCH_CONFIG))
    condition = Q()
    for term in terms:
        condition &= Q(text__icontains=term)
    return Message.objects.filter(condition)


def thread_search_for_user(*, user, query: str) -> QuerySet[Thread]:
    """The threads the user may read whose title or messages match `query`,
    most recently active first, with `with_read_state` and `match_text`: the
    text of the thread's latest matching message (None when only the title
    matched)."""
    terms = search_terms(query)
    phrase = " ".join(query.split())
    threads = with_read_state(thread_list_for_user(user=user), user=user)
    if not phrase:
        return threads.none()
    in_title = Q()
    for term in terms or [phrase]:
        in_title &= Q(title__icontains=term)
    matching = _messages_matching(terms)
    latest = matching.filter(thread=OuterRef("pk")).order_by("-created_at")
    return threads.annotate(match_text=Subquery(latest.values("text")[:1])).filter(
        in_title | Q(pk__in=matching.values("thread_id"))
    )


def search_snippet(text: str, query: str, *, width: int = SNIPPET_CHARS) -> str:
    """About `width` characters of `text` around the first word of `query`
    found in it (the start when none is, e.g. a stemmed match), on one line."""
    flat = " ".join(text.split())
    lower = flat.lower()
    found = [lower.find(term.lower()) for term in search_terms(query)]
    found = [position for position in found if position >= 0]
    start = max(0, min(found) - width // 3) if found else 0
    if start:
        space = flat.rfind(" ", 0, start)
        start = space + 1 if space >= 0 else start
    end = min(len(flat), start + width)
    if end < len(flat):
        space = flat.rfind(" ", start, end)
        end = space if space > start else end
    return ("…" if start else "") + flat[start:end] + ("…" if end < len(flat) else "")


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


def _timestamp(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def message_content(
    message: Message,
    *,
    inputs: list[dict] | None = None,
    tool_steps: list[dict] | None = None,
) -> dict:
    """A message as clients see it. `inputs` (the questions its run asked, see
    `message_inputs_by_run`) is added when given: history and snapshots give it,
    the live `message` frame has no such field."""
    content = {
        "id": str(message.id),
        "role": message.role,
        "text": message.text,
        "author": {"username": message.author.username} if message.author_id else None,
        "agent": message.agent.name if message.agent_id else None,
        "run_id": str(message.run_id) if message.run_id else None,
        "status": message.run.status
        if message.run_id and message.role == "assistant"
        else None,
        "error": message_error(message),
        "created_at": _timestamp(message.created_at),
        "client_id": str(message.client_id) if message.client_id else None,
    }
    if inputs is not None:
        content["inputs"] = inputs
    if tool_steps is not None:
        content["tool_steps"] = tool_steps
    return content


def message_error(message: Message) -> dict | None:
    """Why an assistant reply's run failed (or was cut short), else None."""
    if message.run_id and message.role == "assistant" and message.run.error_code:
        return {"code": message.run.error_code, "message": message.run.error}
    return None


def run_input_content(run_input: RunInput) -> dict:
    """A question a run asked, as the history shows it: what was asked, how it
    ended (`answered`, `timed_out`, `cancelled` with the run, or `open`), the
    answer and who gave it."""
    answered = run_input.status == RunInputStatus.ANSWERED
    return {
        "input_id": run_input.input_id,
        "kind": run_input.kind,
        "question": run_input.question,
        "status": run_input.status,
        "answer": run_input.answer if answered else None,
        "answered_by": {"username": run_input.answered_by_username}
        if answered and run_input.answered_by_username
        else None,
        "asked_at": _timestamp(run_input.asked_at),
        "answered_at": _timestamp(run_input.answered_at) if answered else None,
    }


def _run_inputs_by_run(run_ids) -> dict[str, list[RunInput]]:
    """The questions each of these runs asked, oldest first (one query)."""
    run_ids = {str(run_id) for run_id in run_ids if run_id}
    if not run_ids:
        return {}
    inputs: dict[str, list[RunInput]] = {}
    for run_input in RunInput.objects.filter(run_id__in=run_ids).order_by(
        "asked_at", "id"
    ):
        inputs.setdefault(str(run_input.run_id), []).append(run_input)
    return inputs


def message_inputs_by_run(*, run_ids) -> dict[str, list[dict]]:
    """`run_input_content` of the questions each of these runs asked."""
    return {
        run_id: [run_input_content(run_input) for run_input in run_inputs]
        for run_id, run_inputs in _run_inputs_by_run(run_ids).items()
    }


# Who may answer a question: the thread's writers (owner and participants).
ANSWERABLE_BY = "writers"


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
    """The database part of a snapshot: the latest messages (with the questions
    their runs asked) and the runs not finished yet, with their checkpoint and
    open questions (`{"messages": [...], "runs": [{"run_id", "status",
    "checkpoint_text", "checkpoint_chunks", "input_requests"}, ...]}`).

    Shared by the sockets of a thread while its last event id stays the same
    (chat/connectcache.py): nothing here depends on the time of the read."""
    messages = message_history(
        thread=thread, max_chars=settings.PARLEY_SNAPSHOT_MAX_CHARS
    )
    finished_runs = {
        str(m.run_id) for m in messages if m.role == "assistant" and m.run_id
    }
    runs = [
        {
            "run_id": str(run_id),
            "status": status,
            "agent": agent,
            "checkpoint_text": checkpoint_text,
            "checkpoint_chunks": checkpoint_chunks,
            "input_requests": [],
            "tool_steps": [],
        }
        for run_id, status, agent, checkpoint_text, checkpoint_chunks in (
            Run.objects.filter(thread=thread, status__in=ACTIVE_RUN_STATUSES)
            .order_by("created_at")
            .values_list(
                "id", "status", "agent__name", "partial_text", "partial_chunks"
            )
        )
        if str(run_id) not in finished_runs
    ]
    inputs = _run_inputs_by_run(finished_runs | {run["run_id"] for run in runs})
    steps = tool_steps_by_run(run_ids=finished_runs | {run["run_id"] for run in runs})
    for run in runs:
        run["tool_steps"] = steps.get(run["run_id"], [])
        run["input_requests"] = [
            {
                "input_id": run_input.input_id,
                "kind": run_input.kind,
                "question": run_input.question,
                "timeout": run_input.timeout_seconds,
                "asked_at": _timestamp(run_input.asked_at),
                "expires_at": run_input.expires_at,
                "answerable_by": ANSWERABLE_BY,
                "tool_call": run_input.tool_call,
            }
            for run_input in inputs.get(run["run_id"], [])
            if run_input.status == RunInputStatus.OPEN
        ]
    return {
        "messages": [
            message_content(
                message,
                inputs=[
                    run_input_content(run_input)
                    for run_input in inputs.get(str(message.run_id), [])
                ]
                if message.role == "assistant" and message.run_id
                else [],
                tool_steps=steps.get(str(message.run_id), [])
                if message.role == "assistant" and message.run_id
                else [],
            )
            for message in messages
        ],
        "runs": runs,
    }


def _input_request_now(request: dict, now: datetime) -> dict:
    """An open question as a snapshot shows it: with the seconds left at `now`."""
    expires_at = request["expires_at"]
    return {
        **request,
        "expires_at": _timestamp(expires_at),
        "seconds_left": max(round((expires_at - now).total_seconds(), 1), 0.0),
    }


def snapshot_with_progress(
    rows: dict, log_state: ThreadLogState, *, now: datetime | None = None
) -> dict:
    """The snapshot from its database part and the log's state (the run text so
    far; where the log has none, e.g. the embedded mode after a restart, the
    run's last checkpoint); `rows` is not changed (it may be shared by several
    sockets). Open questions carry the seconds left at `now`."""
    now = now or timezone.now()
    runs = []
    for row in rows["runs"]:
        run_id = row["run_id"]
        progress = log_state.runs.get(run_id)
        if progress is not None and progress.next_stream_index >= row.get(
            "checkpoint_chunks", 0
        ):
            text, next_stream_index = progress.text, progress.next_stream_index
        else:
            text = row.get("checkpoint_text", "")
            next_stream_index = row.get("checkpoint_chunks", 0)
        runs.append(
            {
                "run_id": run_id,
                "status": row["status"],
                "agent": row.get("agent"),
                "text": text,
                "next_stream_index": next_stream_index,
                "tool_steps": row.get("tool_steps", []),
                "input_requests": [
                    _input_request_now(request, now)
                    for request in row.get("input_requests", ())
                ],
            }
        )
    return {
        "last_event_id": log_state.last_event_id,
        "messages": rows["messages"],
        "runs": runs,
    }
