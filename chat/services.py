"""Writes to threads, members and messages; the socket and the API both call these."""

from __future__ import annotations

import copy
import itertools
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.choices import BusyPolicy
from agents.errors import AgentErrorCode
from agents.models import ACTIVE_RUN_STATUSES, AgentConfig, Run, RunStatus
from agents.services import (
    run_active_for_thread,
    run_cancel,
    run_dispatch,
    run_input_submit,
    team_announce_first_turn,
)
from agents.teams import first_speaker, team_names_problem, team_of
from agents.validation import thread_config_errors
from audit.services import audit_run_cancel
from chat.mentions import message_mentions, prompt_text
from chat.models import (
    Message,
    MessageRole,
    Role,
    Thread,
    ThreadAgent,
    ThreadMember,
    ThreadReadMark,
)
from chat.permissions import (
    can_manage,
    can_read,
    can_write,
    require_role,
    thread_role,
    thread_role_now,
    thread_roles_now,
)
from chat.selectors import (
    message_content,
    thread_agents,
    thread_agents_by_thread,
    user_get_for_token,
)
from ops import metrics
from realtime.caching import counter_increment
from realtime.errors import ErrorCode, ServiceError
from realtime.events import publish_on_commit, run_status_frame
from realtime.protocol import MessageContent, MessageFrame, StatusFrame
from usage.services import budget_admission


def agent_get_enabled(*, name: str) -> AgentConfig:
    agent = AgentConfig.objects.filter(name=name).first()
    if agent is None:
        raise ServiceError(
            AgentErrorCode.AGENT_NOT_FOUND, f"No agent named {name!r}.", status=400
        )
    if not agent.enabled:
        raise ServiceError(
            AgentErrorCode.AGENT_DISABLED,
            f"The agent {name!r} is disabled.",
            status=400,
        )
    return agent


# The most agents one thread may have.
MAX_THREAD_AGENTS = 16


def _checked_agent_names(names) -> list[str]:
    """`names` (a thread's `agents`) once it is a list of 1 to
    MAX_THREAD_AGENTS distinct names; else a validation error."""
    if (
        not isinstance(names, list | tuple)
        or not names
        or not all(isinstance(name, str) and name for name in names)
    ):
        raise ServiceError(
            ErrorCode.VALIDATION_ERROR,
            "agents: a list of agent names, at least one (the first is the default).",
        )
    if len(set(names)) != len(names):
        raise ServiceError(
            ErrorCode.VALIDATION_ERROR, "agents: each agent may be named once."
        )
    if len(names) > MAX_THREAD_AGENTS:
        raise ServiceError(
            ErrorCode.VALIDATION_ERROR,
            f"agents: a thread has at most {MAX_THREAD_AGENTS} agents.",
        )
    return list(names)


def _seat_agents(thread: Thread, others: list[AgentConfig]) -> None:
    """Make `others` the thread's agents after its default, in this order."""
    ThreadAgent.objects.filter(thread=thread).delete()
    ThreadAgent.objects.bulk_create(
        ThreadAgent(thread=thread, agent=agent, position=position)
        for position, agent in enumerate(others, start=1)
    )


def thread_create(
    *,
    owner,
    agent_name: str | None = None,
    title: str = "",
    config: dict | None = None,
    agent_names: list[str] | None = None,
) -> Thread:
    """A new thread owned by `owner`. Its agents: `agent_names` (the first is
    the default, which answers messages that name no agent), or `agent_name`
    alone; given both, `agent_name` must be the first of `agent_names`."""
    if agent_names is None:
        names = _checked_agent_names([agent_name] if agent_name else [])
    else:
        names = _checked_agent_names(agent_names)
        if agent_name and agent_name != names[0]:
            raise ServiceError(
                ErrorCode.VALIDATION_ERROR,
                "agent and agents disagree: agent must be the first of agents "
                "(the default), or left out.",
            )
    agents = [agent_get_enabled(name=name) for name in names]
    overrides = config or {}
    errors = thread_config_errors(agents[0], overrides)
    if errors:
        raise ServiceError(ErrorCode.INVALID_CONFIG, _describe(errors))
    if overrides.get("team") is not None:
        _check_team_names(overrides["team"], agents)
    with transaction.atomic():
        thread = Thread.objects.create(
            owner=owner, agent=agents[0], title=title[:200], config=overrides
        )
        if len(agents) > 1:
            _seat_agents(thread, agents[1:])
    return thread


def thread_open_for_agent(
    *, user, token_key: str | None, agent_name: str
) -> Thread | None:
    """A new thread with the enabled agent `agent_name` for the socket's user
    (from its API token when it brought one); None when nobody is logged in."""
    if token_key is not None:
        user = user_get_for_token(key=token_key)
    if user is None or not user.is_authenticated:
        return None
    return thread_create(owner=user, agent_name=agent_name)


def _thread_locked(thread_id) -> Thread:
    """The thread's row, locked until the transaction ends (with its agent)."""
    stored = (
        Thread.objects.select_for_update(of=("self",))
        .select_related("agent")
        .filter(pk=thread_id)
        .first()
    )
    if stored is None:
        raise ServiceError(ErrorCode.THREAD_NOT_FOUND, "No such thread.", status=404)
    return stored


def _thread_locked_for_manager(thread_id, actor, action: str) -> Thread:
    """The thread's row, locked, once `actor` may manage it now (owner, staff)."""
    stored = _thread_locked(thread_id)
    require_role(thread_role_now(thread=stored, user=actor), can_manage, action=action)
    return stored


def thread_update(
    *,
    actor,
    thread: Thread,
    title: str | None = None,
    config: dict | None = None,
    agent_names: list[str] | None = None,
) -> Thread:
    """Rename (owner, staff), change the thread's agents (`agent_names`, the
    first the default; owner, staff) or the per-thread config (owner,
    participants). An agent already in the thread may stay in it while
    disabled; one added must be enabled."""
    with transaction.atomic():
        # Merge into the stored overrides and check the stored agent, not the
        # caller's copies: a socket holds its thread for its whole life, and
        # other sockets (or staff editing the agent) may have changed them since.
        stored = _thread_locked(thread.pk)
        role = thread_role_now(thread=stored, user=actor)
        if title is not None:
            require_role(role, can_manage, action="rename this thread")
        if config is not None:
            require_role(role, can_write, action="change this thread's config")
            if "team" in config:  # the owner's choice (agents/teams.py)
                require_role(role, can_manage, action="change this thread's team")
        if agent_names is not None:
            require_role(role, can_manage, action="change this thread's agents")
        thread.title, thread.config, thread.agent = (
            stored.title,
            stored.config,
            stored.agent,
        )
        # The caller's copy may hold the agents it was read with.
        getattr(thread, "_prefetched_objects_cache", {}).pop("extra_agents", None)
        fields = ["updated_at"]
        if title is not None:
            thread.title = title[:200]
            fields.append("title")
        if agent_names is not None:
            names = _checked_agent_names(agent_names)
            present = {agent.name: agent for agent in thread_agents(thread=stored)}
            agents = [
                present.get(name) or agent_get_enabled(name=name) for name in names
            ]
            if agents[0].pk != thread.agent_id:
                thread.agent = agents[0]
                thread.config = _overrides_allowed(thread.agent, thread.config)
                fields += ["agent", "config"]
            _seat_agents(stored, agents[1:])
        if config is not None:
            config = dict(config)
            agent_name = config.pop("agent_name", None)
            if agent_name is not None:
                # Switch the thread's agent; the overrides the new one does
                # not allow are dropped (delivery settings are every thread's).
                if not isinstance(agent_name, str):
                    raise ServiceError(
                        ErrorCode.INVALID_CONFIG, "agent_name: an agent's name."
                    )
                thread.agent = agent_get_enabled(name=agent_name)
                thread.config = _overrides_allowed(thread.agent, thread.config)
                fields += ["agent", "config"]
                # The new default is no longer one of the others.
                ThreadAgent.objects.filter(thread=stored, agent=thread.agent).delete()
            errors = thread_config_errors(thread.agent, config)
            if errors:
                raise ServiceError(ErrorCode.INVALID_CONFIG, _describe(errors))
            if config.get("team") is not None:
                _check_team_names(config["team"], thread_agents(thread=stored))
            thread.config = {**thread.config, **config}
            if "config" not in fields:
                fields.append("config")
        thread.save(update_fields=fields)
        content = {
            "state": "thread_updated",
            "title": thread.title,
            "config": thread.config,
            "agent": thread.agent.name,
        }
        if agent_names is not None or "agent" in fields:  # the agents changed
            others = thread_agents_by_thread(thread_ids=[str(thread.pk)])
            content["agents"] = [
                agent.name for agent in (thread.agent, *others.get(str(thread.pk), []))
            ]
        publish_on_commit(thread.id, StatusFrame(content=content, thread_id=thread.id))
    return thread


def _check_team_names(team, agents) -> None:
    """Refuse a team whose seats or selector name no agent of the thread."""
    problem = team_names_problem(team, [agent.name for agent in agents])
    if problem:
        raise ServiceError(ErrorCode.INVALID_CONFIG, f"team: {problem}")


def _team_opening(thread: Thread, team, text: str, addressed: list, others) -> list:
    """The one agent a message to a team thread starts the chain with: the
    first it names, else the team's first speaker (the seat after the human
    seat, or the first seat; agents/teams.py)."""
    names, _text = message_mentions(text)
    if names:
        return addressed[:1]
    present = {agent.name: agent for agent in (thread.agent, *others)}
    agent = present[first_speaker(team, list(present))]
    if not agent.enabled:
        raise ServiceError(
            AgentErrorCode.AGENT_DISABLED, f"The agent {agent.name!r} is disabled."
        )
    return [agent]


def _overrides_allowed(agent: AgentConfig, config: dict) -> dict:
    """The overrides of `config` that `agent` allows (delivery settings are
    every thread's): what a thread keeps when its default agent changes."""
    return {
        key: value
        for key, value in config.items()
        if not thread_config_errors(agent, {key: value})
    }


def thread_reset(*, actor, thread: Thread) -> None:
    """Cancel the thread's runs and delete its messages; event ids keep counting."""
    with transaction.atomic():
        _thread_locked_for_manager(thread.pk, actor, "reset this thread")
        for run in Run.objects.filter(thread=thread, status__in=ACTIVE_RUN_STATUSES):
            run_cancel(run=run)
        Message.objects.filter(thread=thread).delete()
        Run.objects.filter(thread=thread).exclude(
            status__in=ACTIVE_RUN_STATUSES
        ).delete()
        thread.save(update_fields=["updated_at"])
        publish_on_commit(
            thread.id, StatusFrame(content={"state": "reset"}, thread_id=thread.id)
        )


def thread_delete(*, actor, thread: Thread) -> None:
    """Delete the thread; its open sockets and streams close (chat/access.py)."""
    with transaction.atomic():
        _thread_locked_for_manager(thread.pk, actor, "delete this thread")
        for run in Run.objects.filter(thread=thread, status__in=ACTIVE_RUN_STATUSES):
            run_cancel(run=run)
        publish_on_commit(
            thread.id, StatusFrame(content={"state": "deleted"}, thread_id=thread.id)
        )
        thread.delete()


def member_add(
    *, actor, thread: Thread, username: str, role: str
) -> tuple[ThreadMember, bool]:
    """Share the thread with a user, or change a member's role: (member, created).

    Open sockets and streams of that user learn the new role at once
    (chat/access.py)."""
    if role not in (Role.PARTICIPANT, Role.OBSERVER):
        raise ServiceError(
            ErrorCode.VALIDATION_ERROR, "role must be participant or observer."
        )
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise ServiceError(
            ErrorCode.USER_NOT_FOUND, f"No user named {username!r}.", status=400
        )
    if user.pk == thread.owner_id:
        raise ServiceError(
            ErrorCode.VALIDATION_ERROR, "The owner is already in the thread."
        )
    with transaction.atomic():
        stored = _thread_locked_for_manager(thread.pk, actor, "share this thread")
        return ThreadMember.objects.update_or_create(
            thread=stored, user=user, defaults={"role": role}
        )


def member_remove(*, actor, thread: Thread, username: str) -> None:
    """Remove a member (owner, staff; members may remove themselves). Their open
    sockets and streams on the thread close at once (chat/access.py)."""
    with transaction.atomic():
        if username == getattr(actor, "username", None):  # anyone may leave
            stored = _thread_locked(thread.pk)
        else:
            stored = _thread_locked_for_manager(thread.pk, actor, "remove members")
        ThreadMember.objects.filter(thread=stored, user__username=username).delete()


def thread_mark_read(*, user, thread: Thread, at=None) -> ThreadReadMark:
    """The user has seen the thread up to `at` (default: now, the server's
    clock, which every message's `created_at` comes from). The mark only moves
    forward, so a late call from another device never unreads anything."""
    require_role(thread_role(thread=thread, user=user), can_read, action="read it")
    moment = at or timezone.now()
    mark, created = ThreadReadMark.objects.get_or_create(
        thread=thread, user=user, defaults={"last_read_at": moment}
    )
    if not created and mark.last_read_at < moment:
        ThreadReadMark.objects.filter(pk=mark.pk, last_read_at__lt=moment).update(
            last_read_at=moment
        )
        mark.last_read_at = moment
    return mark


def _check_message_rate(user) -> None:
    """Messages per minute per user, counted in the shared cache (all web processes)."""
    limit = settings.PARLEY_MESSAGES_PER_MINUTE
    if limit <= 0:
        return
    key = f"rate:messages:{user.pk}:{int(time.time() // 60)}"
    count = counter_increment(key, timeout=70)
    if count > limit:
        raise ServiceError(
            ErrorCode.RATE_LIMITED,
            f"Too many messages: at most {limit} a minute. Try again shortly.",
            status=429,
        )


@dataclass
class MessageRequest:
    """One user message to post (a socket's `message` frame, an API call).

    `client_id`: the sender's own id for the message; posting it again (a
    resend after a cut connection) within RESEND_WINDOW gives back the first
    message's run, marked `run.resent = True`, and posts nothing new."""

    thread_id: object
    user: object
    text: str
    request_id: str | None = None
    client_id: uuid.UUID | None = None


# How long a client_id makes a resend the same message.
RESEND_WINDOW = timedelta(hours=24)
# The hint a `server_busy` refusal gives (PARLEY_MAX_ACTIVE_RUNS).
SERVER_BUSY_RETRY_SECONDS = 5


def message_post(
    *,
    thread: Thread,
    user,
    text: str,
    request_id: str | None = None,
    client_id: uuid.UUID | None = None,
) -> Run:
    """A user message enters the thread and an agent run is queued for it
    (or, for a `client_id` already posted, the first one's run; see
    MessageRequest).

    What happens when the thread is busy follows the agent's busy policy.
    """
    (outcome,) = messages_post(
        requests=[MessageRequest(thread.pk, user, text, request_id, client_id)]
    )
    if isinstance(outcome, ServiceError):
        raise outcome
    return outcome


def messages_post(*, requests: list[MessageRequest]) -> list[Run | ServiceError]:
    """Post many user messages (a burst from many sockets) at once: each is
    checked and stored exactly as alone, in one transaction and a handful of
    statements for all of them. Returns, per request in order, its run or the
    ServiceError that refused it (one refusal never affects the others)."""
    outcomes: list[Run | ServiceError | None] = [None] * len(requests)
    admitted = []
    for index, request in enumerate(requests):
        try:
            _check_message_text(request.text)
            _check_message_rate(request.user)
            admitted.append(index)
        except ServiceError as refusal:
            outcomes[index] = refusal
    if admitted:
        with transaction.atomic():
            _admit(requests, admitted, outcomes)
    return outcomes


def _runs_resent(requests, admitted: list[int]) -> dict:
    """The runs of messages these requests already posted (same thread,
    author and client_id within RESEND_WINDOW), keyed by (thread id, user id,
    client_id); one query, read with the threads locked."""
    keyed = [requests[i] for i in admitted if requests[i].client_id is not None]
    if not keyed:
        return {}
    rows = Message.objects.filter(
        role=MessageRole.USER,
        thread_id__in={str(request.thread_id) for request in keyed},
        client_id__in={request.client_id for request in keyed},
        author_id__in={request.user.pk for request in keyed},
        created_at__gte=timezone.now() - RESEND_WINDOW,
        run__isnull=False,
    ).select_related("author", "run", "run__agent")
    found = {}
    for message in rows:
        run = message.run
        run.prompt = message
        found[(str(message.thread_id), message.author_id, message.client_id)] = _resent(
            run
        )
    return found


def _resent(run: Run) -> Run:
    run.resent = True
    return run


def _check_message_text(text: str) -> None:
    if not text.strip():
        raise ServiceError(ErrorCode.VALIDATION_ERROR, "The message is empty.")
    if "\x00" in text:
        raise ServiceError(
            ErrorCode.VALIDATION_ERROR, "The message contains a NUL character."
        )
    if len(text) > settings.PARLEY_MAX_MESSAGE_CHARS:
        raise ServiceError(
            ErrorCode.MESSAGE_TOO_LONG,
            f"The message is {len(text)} characters; the limit is "
            f"{settings.PARLEY_MAX_MESSAGE_CHARS}.",
            status=413,
        )


def _addressed_agents(thread: Thread, text: str, others: list) -> list:
    """The agents a message goes to: those it names at its start (`@coder
    @reviewer ...`, chat/mentions.py), in mention order, else the thread's
    default agent. `others`: the thread's agents besides the default.

    A name that is none of the thread's agents is refused with the thread's
    agents listed; a disabled agent is refused by name."""
    names, _text = message_mentions(text)
    if not names:
        chosen = [thread.agent]
    else:
        present = [thread.agent, *others]
        exact = {agent.name: agent for agent in present}
        folded = {agent.name.casefold(): agent for agent in present}
        chosen = []
        for name in names:
            agent = exact.get(name) or folded.get(name.casefold())
            if agent is None:
                listed = ", ".join(f"@{agent.name}" for agent in present)
                raise ServiceError(
                    AgentErrorCode.AGENT_NOT_IN_THREAD,
                    f"No agent named {name!r} in this thread; its agents: {listed}.",
                )
            if all(agent.pk != other.pk for other in chosen):
                chosen.append(agent)
    for agent in chosen:
        if not agent.enabled:
            raise ServiceError(
                AgentErrorCode.AGENT_DISABLED,
                f"The agent {agent.name!r} is disabled.",
            )
    return chosen


def _runs_team(thread: Thread | None) -> bool:
    return thread is not None and team_of(thread.config) is not None


def _keep_mention_order(placed) -> None:
    """Runs of one message run in mention order, which the thread's queue
    reads from `created_at`: two runs stamped the same microsecond (a fast
    clock) would be ordered by their random ids instead, so a later one gets
    a microsecond more (rare: usually the stamps differ already)."""
    for _index, run, _message, _ahead in placed:
        for earlier, later in itertools.pairwise(run.runs):
            if later.created_at <= earlier.created_at:
                later.created_at = earlier.created_at + timedelta(microseconds=1)
                Run.objects.filter(pk=later.pk).update(created_at=later.created_at)


def _admit(requests, admitted: list[int], outcomes: list) -> None:
    """The database part of `messages_post`, inside its transaction."""
    # Thread rows locked in one statement, in key order (no deadlock between
    # batches); members and counts read once for the whole batch.
    thread_ids = sorted({str(requests[index].thread_id) for index in admitted})
    threads = {
        str(thread.pk): thread
        for thread in Thread.objects.select_for_update(of=("self",))
        .select_related("agent")
        .filter(pk__in=thread_ids)
        .order_by("pk")
    }
    users = {requests[index].user.pk: requests[index].user for index in admitted}
    roles = thread_roles_now(
        pairs={(str(requests[i].thread_id), requests[i].user.pk) for i in admitted},
        threads=threads,
    )
    resent = _runs_resent(requests, admitted)
    budgets = budget_admission(user_ids=list(users), thread_ids=list(threads))
    # The other agents of threads that messages address by name (`@coder`):
    # read only when a message starts with a mention.
    seats = thread_agents_by_thread(
        thread_ids={
            str(requests[i].thread_id)
            for i in admitted
            if requests[i].text.lstrip().startswith("@")
            or _runs_team(threads.get(str(requests[i].thread_id)))
        }
    )
    deployment_limit = settings.PARLEY_MAX_ACTIVE_RUNS
    # Counted once per batch: a cap, not a queue (concurrent batches of other
    # processes may pass it by a few).
    active_runs = (
        Run.objects.filter(status__in=ACTIVE_RUN_STATUSES).count()
        if deployment_limit > 0
        else 0
    )
    user_limit = settings.PARLEY_MAX_ACTIVE_RUNS_PER_USER
    in_thread: Counter = Counter()
    by_user: Counter = Counter()
    scope = Q(thread_id__in=list(threads))
    if user_limit > 0:
        scope |= Q(requested_by_id__in=list(users))
    for thread_id, user_id in Run.objects.filter(
        scope, status__in=ACTIVE_RUN_STATUSES
    ).values_list("thread_id", "requested_by_id"):
        in_thread[str(thread_id)] += 1
        by_user[user_id] += 1
    messages, runs, placed = [], [], []
    for index in admitted:
        request = requests[index]
        thread_id = str(request.thread_id)
        thread = threads.get(thread_id)
        try:
            if thread is None:
                raise ServiceError(
                    ErrorCode.THREAD_NOT_FOUND, "No such thread.", status=404
                )
            require_role(
                roles.get((thread_id, request.user.pk)),
                can_write,
                action="write to it",
            )
            key = (thread_id, request.user.pk, request.client_id)
            if request.client_id is not None and key in resent:
                outcomes[index] = resent[key]  # sent before: the same message
                continue
            addressed = _addressed_agents(
                thread, request.text, seats.get(thread_id, [])
            )
            team = team_of(thread.config)
            if team is not None:  # one agent opens the team's chain
                addressed = _team_opening(
                    thread, team, request.text, addressed, seats.get(thread_id, [])
                )
            ahead = in_thread[thread_id]
            if ahead and any(
                agent.busy_policy == BusyPolicy.REJECT for agent in addressed
            ):
                raise ServiceError(
                    ErrorCode.THREAD_BUSY,
                    "The agent is still answering; wait for it or stop it first.",
                    status=409,
                )
            starting = len(addressed)
            if deployment_limit > 0 and active_runs + starting > deployment_limit:
                raise ServiceError(
                    ErrorCode.SERVER_BUSY,
                    "Parley is answering as many messages as it can right now; "
                    f"try again in about {SERVER_BUSY_RETRY_SECONDS} seconds.",
                    status=503,
                    retry_after=SERVER_BUSY_RETRY_SECONDS,
                )
            if user_limit > 0 and by_user[request.user.pk] + starting > user_limit:
                raise ServiceError(
                    ErrorCode.TOO_MANY_RUNS,
                    f"You already have {user_limit} replies running or queued.",
                    status=429,
                )
            # budget_exceeded when the requester or the thread used its month up.
            allowance = budgets.require(user_id=request.user.pk, thread_id=thread_id)
        except ServiceError as refusal:
            outcomes[index] = refusal
            continue
        # Message and run point at each other; the foreign keys are checked at
        # commit, so both ids are chosen first and both rows go in one INSERT each.
        # A message addressing several agents starts one run each, in mention
        # order; the message points at the first.
        run_ids = [uuid.uuid4() for _agent in addressed]
        message = Message(
            id=uuid.uuid4(),
            thread=thread,
            author=request.user,
            role=MessageRole.USER,
            text=request.text,
            run_id=run_ids[0],
            client_id=request.client_id,
        )
        message_runs = [
            Run(
                id=run_id,
                thread=thread,
                agent=agent,
                requested_by=request.user,
                prompt=message,
                status=RunStatus.QUEUED,
                agent_version=agent.version,
                budget_allowance=allowance,
            )
            for run_id, agent in zip(run_ids, addressed, strict=True)
        ]
        run = message_runs[0]
        run.resent = False
        run.runs = message_runs
        if request.client_id is not None:  # twice in one batch: once
            resent[key] = _resent(copy.copy(run))
        messages.append(message)
        runs.extend(message_runs)
        placed.append((index, run, message, ahead))
        in_thread[thread_id] += starting
        by_user[request.user.pk] += starting
        active_runs += starting
    if not placed:
        return
    Message.objects.bulk_create(messages)
    metrics.messages_posted(len(messages))
    Run.objects.bulk_create(runs)
    _keep_mention_order(placed)
    Thread.objects.filter(pk__in={str(run.thread_id) for run in runs}).update(
        updated_at=timezone.now()
    )
    _title_untitled_threads(threads=threads, placed=placed)
    # Every event first (they go out together), then the dispatches (together
    # too, after the events that announce their runs).
    for index, run, message, ahead in placed:
        publish_on_commit(
            run.thread_id,
            MessageFrame(
                content=MessageContent(**message_content(message)),
                thread_id=run.thread_id,
                run_id=run.id,
                request_id=requests[index].request_id,
            ),
        )
        for place, started in enumerate(run.runs):
            publish_on_commit(
                run.thread_id,
                run_status_frame(started, state="queued", position=ahead + place),
            )
        team = team_of(run.thread.config)
        if team is not None and not ahead:
            team_announce_first_turn(run, team)
    for index, run, _message, ahead in placed:
        if not ahead:
            run_dispatch(run=run)  # the others follow it (run_finish)
        elif any(
            started.agent.busy_policy == BusyPolicy.INTERRUPT for started in run.runs
        ):
            for other in Run.objects.filter(
                thread_id=run.thread_id, status__in=ACTIVE_RUN_STATUSES
            ).exclude(pk__in=[started.pk for started in run.runs]):
                run_cancel(run=other)
        outcomes[index] = run


# A title taken from a first message: its opening words, up to this long.
TITLE_FROM_MESSAGE_CHARS = 60


def thread_title_from_text(text: str) -> str:
    """A thread title made of a message's opening words: leading mentions
    left out, whitespace made single spaces, cut at a word with "…" when
    longer than TITLE_FROM_MESSAGE_CHARS."""
    words = " ".join(prompt_text(text).split())
    if len(words) <= TITLE_FROM_MESSAGE_CHARS:
        return words
    cut = words[: TITLE_FROM_MESSAGE_CHARS - 1]
    if " " in cut[TITLE_FROM_MESSAGE_CHARS // 2 :]:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,.;:-") + "…"


def _title_untitled_threads(*, threads: dict, placed) -> None:
    """An untitled thread is named after its first message (inside
    `_admit`'s transaction; open pages see it as `thread_updated`)."""
    first: dict[str, Message] = {}
    posted = []
    for _index, _run, message, _ahead in placed:
        thread_id = str(message.thread_id)
        if not threads[thread_id].title:
            first.setdefault(thread_id, message)
            posted.append(message.pk)
    if not first:
        return
    # A thread renamed to "" by its owner keeps its title empty: only a
    # thread without earlier messages takes one.
    talked = {
        str(thread_id)
        for thread_id in Message.objects.filter(thread_id__in=list(first))
        .exclude(pk__in=posted)
        .values_list("thread_id", flat=True)
        .distinct()
    }
    for thread_id, message in first.items():
        title = thread_title_from_text(message.text)
        if thread_id in talked or not title:
            continue
        thread = threads[thread_id]
        thread.title = title
        Thread.objects.filter(pk=thread_id, title="").update(title=title)
        content = {
            "state": "thread_updated",
            "title": title,
            "config": thread.config,
            "agent": thread.agent.name,
        }
        publish_on_commit(thread.pk, StatusFrame(content=content, thread_id=thread.pk))


def _run_of_thread(*, thread_id, run_id) -> Run:
    """The run `run_id` of the thread, or (None) the one it is on now."""
    if run_id is not None:
        run = Run.objects.filter(pk=run_id, thread_id=thread_id).first()
    else:
        run = run_active_for_thread(thread_id=thread_id)
    if run is None:
        raise ServiceError(
            AgentErrorCode.RUN_NOT_FOUND, "No such run in this thread.", status=404
        )
    return run


def _require_writer(*, actor, thread_id, action: str) -> None:
    """Refuse unless `actor` may write the thread now (inside the transaction)."""
    thread = Thread.objects.filter(pk=thread_id).first()
    if thread is None:
        raise ServiceError(ErrorCode.THREAD_NOT_FOUND, "No such thread.", status=404)
    require_role(thread_role_now(thread=thread, user=actor), can_write, action=action)


def thread_run_cancel(*, actor, thread_id, run_id=None, reason: str = "") -> Run:
    """A writer of the thread stops one of its runs (None: the current one),
    saying why if they like (`reason`)."""
    with transaction.atomic():
        _require_writer(actor=actor, thread_id=thread_id, action="cancel runs")
        run = run_cancel(
            run=_run_of_thread(thread_id=thread_id, run_id=run_id), reason=reason
        )
        audit_run_cancel(actor=actor, run=run)
        return run


def thread_input_submit(
    *,
    actor,
    thread_id,
    run_id,
    input_id: str | None,
    text: str | None,
    approve: bool | None = None,
) -> Run:
    """A writer of the thread answers a question a run asked (`text`), or
    approves or denies a tool call waiting for approval (`approve`)."""
    with transaction.atomic():
        _require_writer(actor=actor, thread_id=thread_id, action="answer questions")
        run = _run_of_thread(thread_id=thread_id, run_id=run_id)
        run_input_submit(
            run=run,
            input_id=input_id,
            text=text,
            approve=approve,
            username=actor.username,
        )
        return run


def _describe(errors: dict[str, str]) -> str:
    return "; ".join(f"{field}: {problem}" for field, problem in errors.items())
