"""Server-rendered pages of the web UI, and the two small JSON views its scripts use.

Pages: the thread list, a new chat, the chat view (live through the thread
socket, static/chat/chat.js), thread settings. Every write goes through
chat/services.py; every read of a thread through chat/selectors.py, so the
pages enforce the same permissions as the API and the socket.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import OuterRef, Subquery
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agents.models import AgentConfig
from chat import services
from chat.models import Message, Role, Thread
from chat.permissions import can_manage, can_write, thread_roles
from chat.rendering import markdown_to_safe_html
from chat.selectors import (
    message_history,
    search_snippet,
    thread_agents,
    thread_get_for_user,
    thread_list_for_user,
    thread_search_for_user,
    with_read_state,
)
from realtime.errors import ErrorCode, ServiceError

THREAD_LIST_LIMIT = 200
PREVIEW_CHARS = 120
SEARCH_MAX_CHARS = 200
# There is no per-user event stream: list pages (the Chats page and the chat
# page's sidebar) poll threads.json this often while visible.
THREAD_LIST_POLL_MS = 5000
# One render request may carry a whole snapshot's replies.
RENDER_MAX_TEXTS = 200
RENDER_MAX_TOTAL_CHARS = 2_000_000


# --- helpers ---------------------------------------------------------------


def _thread_for(request, thread_id) -> tuple[Thread, Role] | None:
    """The thread and the caller's role, or None when there is no such thread
    or it is not shared with the caller (the two look alike on purpose)."""
    try:
        return thread_get_for_user(thread_id=thread_id, user=request.user)
    except ServiceError:
        return None


def _thread_not_found(request):
    # Rendered here rather than raised as Http404: with DEBUG on, Django would
    # answer Http404 with its technical page, which lists the site's URLs.
    return render(request, "chat/thread_not_found.html", status=404)


def _thread_summaries(user, *, query: str = "") -> list[dict]:
    """The caller's threads, newest activity first, with the last message, the
    caller's unread state and what they may do; with `query`, only those that
    match it, each with a snippet of the match (`match`)."""
    last = Message.objects.filter(thread=OuterRef("pk")).order_by("-created_at")
    if query:
        threads = thread_search_for_user(user=user, query=query)
    else:
        threads = with_read_state(thread_list_for_user(user=user), user=user)
    threads = list(
        threads.annotate(
            last_text=Subquery(last.values("text")[:1]),
            last_role=Subquery(last.values("role")[:1]),
            last_author=Subquery(last.values("author__username")[:1]),
            last_agent=Subquery(last.values("agent__name")[:1]),
        ).order_by("-updated_at")[:THREAD_LIST_LIMIT]
    )
    roles = thread_roles(threads=threads, user=user)
    summaries = []
    for thread in threads:
        text = " ".join((thread.last_text or "").split())
        if len(text) > PREVIEW_CHARS:
            text = text[: PREVIEW_CHARS - 1] + "…"
        if thread.last_role == "assistant":
            who = thread.last_agent or thread.agent.name
        else:
            who = thread.last_author or ""
        summary = {
            "id": str(thread.id),
            "title": thread.display_title,
            "agent": thread.agent.name,
            "owner": thread.owner.username,
            "updated_at": thread.updated_at.isoformat().replace("+00:00", "Z"),
            "preview": text,
            "preview_author": who if text else "",
            "url": reverse("thread-detail", args=[thread.id]),
            "unread": thread.unread,
            "running": thread.running,
            "can_manage": can_manage(roles.get(thread.pk)),
        }
        if query:
            match_text = getattr(thread, "match_text", None)
            summary["match"] = (
                {"in": "message", "snippet": search_snippet(match_text, query)}
                if match_text is not None
                else {"in": "title", "snippet": thread.display_title}
            )
        summaries.append(summary)
    return summaries


def _list_context(user, *, current_id: str = "") -> dict:
    """What the shared thread list (templates/chat/thread_items.html and
    static/chat/threadlist.js) needs, on the Chats page and in the sidebar."""
    return {
        "threads": _thread_summaries(user),
        "poll_ms": THREAD_LIST_POLL_MS,
        "current_thread_id": current_id,
    }


def _conversation(history: list[Message]) -> list[Message]:
    """Messages in reading order: each reply right after the message that asked
    for it (replies are stored when they end, after later questions)."""
    replies = {
        message.run_id: message
        for message in history
        if message.role == "assistant" and message.run_id
    }
    prompts = {
        message.run_id
        for message in history
        if message.role == "user" and message.run_id
    }
    ordered = []
    for message in history:
        if message.role == "assistant" and message.run_id in prompts:
            continue  # placed after its prompt below
        ordered.append(message)
        if message.role == "user" and message.run_id in replies:
            ordered.append(replies[message.run_id])
    return ordered


# --- pages -----------------------------------------------------------------


@login_required
@require_GET
def thread_list(request):
    return render(request, "chat/thread_list.html", _list_context(request.user))


@login_required
@require_GET
def thread_list_json(request):
    """The thread list the pages poll; `?q=` searches it (chat/selectors.py)."""
    query = " ".join(request.GET.get("q", "").split())[:SEARCH_MAX_CHARS]
    return JsonResponse({"threads": _thread_summaries(request.user, query=query)})


@login_required
@require_http_methods(["GET", "POST"])
def thread_new(request):
    agents = list(AgentConfig.objects.filter(enabled=True).order_by("name"))
    form = {"agent": request.GET.get("agent", ""), "title": ""}
    error = None
    if request.method == "POST":
        form = {
            "agent": request.POST.get("agent", ""),
            "title": request.POST.get("title", "").strip(),
        }
        if not form["agent"]:
            error = "Choose an agent to chat with."
        else:
            try:
                thread = services.thread_create(
                    owner=request.user, agent_name=form["agent"], title=form["title"]
                )
            except ServiceError as failure:
                error = failure.message
            else:
                return redirect("thread-detail", thread_id=thread.id)
    if not form["agent"] and len(agents) == 1:
        form["agent"] = agents[0].name
    return render(
        request,
        "chat/thread_new.html",
        {"agents": agents, "form": form, "error": error},
        status=400 if error else 200,
    )


@login_required
@require_GET
def thread_detail(request, thread_id):
    found = _thread_for(request, thread_id)
    if found is None:
        return _thread_not_found(request)
    thread, role = found
    # Opening the thread reads it, on every device (the page marks it read
    # again as messages arrive while it is visible: POST /api/threads/<id>/read/).
    services.thread_mark_read(user=request.user, thread=thread)
    history = _conversation(message_history(thread=thread))
    agents = thread_agents(thread=thread)
    for message in history:
        if message.role == "assistant":
            message.html = markdown_to_safe_html(message.text)
    return render(
        request,
        "chat/thread_detail.html",
        {
            "thread": thread,
            "role": role.value,
            "can_write": can_write(role),
            "can_manage": can_manage(role),
            "history": history,
            "agents": agents,
            "agent_names": [agent.name for agent in agents],
            "stream_format": (thread.config or {}).get("stream_format", "markdown"),
            "max_message_chars": settings.PARLEY_MAX_MESSAGE_CHARS,
            **_list_context(request.user, current_id=str(thread.id)),
        },
    )


SETTINGS_ACTIONS = (
    "rename",
    "agent_add",
    "agent_remove",
    "agent_default",
    "share",
    "unshare",
    "reset",
    "delete",
    "team",
)


def _team_from_form(form) -> dict | None:
    """The `team` thread setting the Settings page's team form describes
    (agents/teams.py; checked by the service): None for "no team"."""
    policy = form.get("policy", "")
    if not policy:
        return None
    team: dict = {"policy": policy}
    for field, kind in (("max_turns", int), ("human_timeout", float)):
        value = form.get(field, "").strip()
        if value:
            try:
                team[field] = kind(value)
            except ValueError:
                raise ServiceError(
                    ErrorCode.VALIDATION_ERROR, f"{field}: a number."
                ) from None
    termination = form.get("termination", "").strip()
    if termination:
        team["termination"] = termination
    seats = [seat.strip() for seat in form.get("seats", "").split(",") if seat.strip()]
    if seats:
        team["seats"] = seats
    if form.get("selector"):
        team["selector"] = form["selector"]
    return team


def _agents_after(action: str, names: list[str], name: str) -> list[str]:
    """The thread's agent names after a Settings action on the agent `name`:
    added at the end, removed, or made the default (moved first)."""
    if not name:
        raise ServiceError(ErrorCode.VALIDATION_ERROR, "Choose an agent.")
    if action == "agent_add":
        return names if name in names else [*names, name]
    if name not in names:
        raise ServiceError(
            ErrorCode.VALIDATION_ERROR, f"{name} is not an agent of this chat."
        )
    others = [other for other in names if other != name]
    if action == "agent_remove":
        if not others:
            raise ServiceError(
                ErrorCode.VALIDATION_ERROR, "A chat keeps at least one agent."
            )
        return others
    return [name, *others]  # agent_default


AGENT_ACTION_DONE = {
    "agent_add": "{name} joined the chat.",
    "agent_remove": "{name} left the chat.",
    "agent_default": "{name} now answers messages that name no agent.",
}


@login_required
@require_http_methods(["GET", "POST"])
def thread_settings(request, thread_id):
    found = _thread_for(request, thread_id)
    if found is None:
        return _thread_not_found(request)
    thread, role = found
    if not can_manage(role):
        return render(
            request,
            "chat/forbidden.html",
            {
                "thread": thread,
                "reason": "Only the thread's owner can change its settings.",
            },
            status=403,
        )
    if request.method == "POST":
        action = request.POST.get("action", "")
        if action not in SETTINGS_ACTIONS:
            messages.error(request, "Unknown action.")
            return redirect("thread-settings", thread_id=thread.id)
        try:
            if action == "rename":
                title = request.POST.get("title", "").strip()
                services.thread_update(actor=request.user, thread=thread, title=title)
                messages.success(request, "The chat was renamed.")
            elif action in AGENT_ACTION_DONE:
                name = request.POST.get("agent", "").strip()
                names = [agent.name for agent in thread_agents(thread=thread)]
                services.thread_update(
                    actor=request.user,
                    thread=thread,
                    agent_names=_agents_after(action, names, name),
                )
                messages.success(request, AGENT_ACTION_DONE[action].format(name=name))
            elif action == "share":
                username = request.POST.get("username", "").strip()
                share_role = request.POST.get("role", "")
                if not username:
                    raise ServiceError(
                        ErrorCode.VALIDATION_ERROR, "Enter the username to share with."
                    )
                services.member_add(
                    actor=request.user,
                    thread=thread,
                    username=username,
                    role=share_role,
                )
                messages.success(request, f"Shared with {username} as {share_role}.")
            elif action == "unshare":
                username = request.POST.get("username", "")
                services.member_remove(
                    actor=request.user, thread=thread, username=username
                )
                messages.success(request, f"{username} no longer has access.")
            elif action == "team":
                team = _team_from_form(request.POST)
                services.thread_update(
                    actor=request.user, thread=thread, config={"team": team}
                )
                messages.success(
                    request,
                    f"The agents now work as a {team['policy'].replace('_', ' ')} team."
                    if team
                    else "The agents no longer work as a team.",
                )
            elif action == "reset":
                services.thread_reset(actor=request.user, thread=thread)
                messages.success(request, "The chat was reset: its messages are gone.")
                return redirect("thread-detail", thread_id=thread.id)
            elif action == "delete":
                title = thread.display_title
                services.thread_delete(actor=request.user, thread=thread)
                messages.success(request, f"The chat “{title}” was deleted.")
                return redirect("thread-list")
        except ServiceError as failure:
            messages.error(request, failure.message)
        return redirect("thread-settings", thread_id=thread.id)
    members = thread.members.select_related("user").order_by("user__username")
    agents = thread_agents(thread=thread)
    addable = AgentConfig.objects.filter(enabled=True).exclude(
        pk__in=[agent.pk for agent in agents]
    )
    return render(
        request,
        "chat/thread_settings.html",
        {
            "thread": thread,
            "role": role.value,
            "members": members,
            "agents": agents,
            "addable_agents": addable.order_by("name"),
            "team": (thread.config or {}).get("team") or {},
        },
    )


# --- JSON for the chat page ------------------------------------------------


@login_required
@require_POST
def thread_read(request, thread_id):
    """The chat page's "I have seen this thread up to now" (chat.js): the same
    read mark as `POST /api/threads/<id>/read/`. A thread the caller can no
    longer read answers `{"read": false}` rather than 404: the page hears of
    lost access from its socket, and a removal racing a read is no error."""
    found = _thread_for(request, thread_id)
    if found is None:
        return JsonResponse({"read": False})
    mark = services.thread_mark_read(user=request.user, thread=found[0])
    return JsonResponse(
        {
            "read": True,
            "last_read_at": mark.last_read_at.isoformat().replace("+00:00", "Z"),
        }
    )


@login_required
@require_POST
def render_markdown(request):
    """`{"text": "..."}` -> `{"html": "..."}`; `{"texts": [...]}` -> `{"html": [...]}`.

    The chat page shows a reply as plain text while it streams and swaps in
    this sanitized HTML once the reply is complete.
    """
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return _json_error("validation_error", "The body is not valid JSON.")
    if not isinstance(body, dict):
        return _json_error("validation_error", "The body must be a JSON object.")
    if "texts" in body:
        texts = body["texts"]
        if not isinstance(texts, list) or not all(
            isinstance(text, str) for text in texts
        ):
            return _json_error("validation_error", "texts must be a list of strings.")
        if len(texts) > RENDER_MAX_TEXTS:
            return _json_error(
                "validation_error", f"At most {RENDER_MAX_TEXTS} texts per request."
            )
        if sum(len(text) for text in texts) > RENDER_MAX_TOTAL_CHARS:
            return _json_error(
                "validation_error", "The texts are too long.", status=413
            )
        return JsonResponse({"html": [markdown_to_safe_html(text) for text in texts]})
    text = body.get("text")
    if not isinstance(text, str):
        return _json_error("validation_error", "text must be a string.")
    if len(text) > RENDER_MAX_TOTAL_CHARS:
        return _json_error("validation_error", "The text is too long.", status=413)
    return JsonResponse({"html": markdown_to_safe_html(text)})


def _json_error(code: str, message: str, *, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)
