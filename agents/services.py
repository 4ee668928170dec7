"""Run lifecycle: dispatch, claim with a lease, finish, cancel, input, sweep.

All database writes about runs happen here; events about them are published
after the commit. The worker (agents/execution.py and its helpers) calls these from async code
through `database_sync_to_async`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from functools import partial

from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from agents.errors import AgentErrorCode
from agents.models import (
    ACTIVE_RUN_STATUSES,
    AgentConfig,
    Run,
    RunInput,
    RunInputStatus,
    RunStatus,
    RunToolStep,
    ToolStepStatus,
)
from agents.selectors import team_for_thread
from agents.signals import run_ended
from agents.teams import (
    HUMAN_SEAT,
    next_in_rotation,
    seat_named,
    team_seats,
    terminated,
)
from chat.models import Message, MessageRole, Thread
from ops import metrics
from realtime.errors import ErrorCode, ServiceError
from realtime.events import (
    after_commit,
    after_commit_batched,
    call_service,
    publish_on_commit,
    run_status_frame,
)
from realtime.protocol import (
    ErrorContent,
    RunCompleteContent,
    StateCompleteFrame,
    StatusFrame,
    TeamStatus,
    error_frame,
)

logger = logging.getLogger(__name__)

AGENT_RUNS_CHANNEL = "agent-runs"


async def send_to_channel(channel: str, message: dict) -> bool:
    """Send on the channel layer; False (logged) when the layer is down."""
    try:
        await get_channel_layer().send(channel, message)
        return True
    except Exception as error:  # the sweeper re-dispatches what was not delivered
        logger.warning(
            "could not send %s to %s: %s", message.get("type"), channel, error
        )
        return False


def run_start_message(run_ids: list[str]) -> dict:
    """The `agent-runs` channel message that asks a worker to start these runs
    (workers also take the one-run form `{"type": "run.start", "run_id": ...}`)."""
    return {"type": "run.start", "run_ids": list(run_ids)}


async def send_run_starts(run_ids: list[str]) -> bool:
    return await send_to_channel(AGENT_RUNS_CHANNEL, run_start_message(run_ids))


def run_dispatch(*, run: Run) -> None:
    """Hand the run to a worker once the transaction commits; the runs one
    transaction dispatches together go in one message (a burst's batch)."""
    after_commit_batched(send_run_starts, str(run.id))


def _thread_head_run(thread_id) -> tuple | None:
    """(pk, status) of the run the thread is on: its running run, else its
    oldest queued one. Call with the thread row locked."""
    return (
        Run.objects.filter(
            thread_id=thread_id, status__in=(RunStatus.RUNNING, RunStatus.QUEUED)
        )
        .order_by("-status", "created_at", "pk")  # "running" sorts before "queued"
        .values_list("pk", "status")
        .first()
    )


def run_dispatch_next(*, thread_id) -> Run | None:
    """Start the thread's oldest queued run, unless one is already running."""
    with transaction.atomic():
        Thread.objects.select_for_update().filter(pk=thread_id).first()
        return _dispatch_head(thread_id)


def _dispatch_head(thread_id) -> Run | None:
    head = _thread_head_run(thread_id)
    if head is None or head[1] == RunStatus.RUNNING:
        return None
    run = Run(pk=head[0], thread_id=thread_id)
    run_dispatch(run=run)
    return run


def run_claim(*, run_id: str, worker_channel: str) -> Run | None:
    """Mark a queued run running under this worker's lease; None if not claimable.

    Returns the run with its agent, thread and prompt. Every run pays for this
    before its first token, so the usual case is two statements: read the run,
    then one UPDATE that claims it only while it is queued and first in its
    thread (atomic on its own, so no transaction or thread lock). Otherwise the
    thread's lock decides, as for dispatches and new messages.
    """
    run = (
        Run.objects.select_related("agent", "thread", "prompt")
        .filter(pk=run_id, status=RunStatus.QUEUED)
        .first()
    )
    if run is None:
        return None
    now = timezone.now()
    run.status = RunStatus.RUNNING
    run.started_at = now
    run.worker_channel = worker_channel
    run.lease_expires_at = now + timedelta(seconds=settings.PARLEY_LEASE_SECONDS)
    if not _claim_if_first(run):
        with transaction.atomic():
            Thread.objects.select_for_update().filter(pk=run.thread_id).first()
            head = _thread_head_run(run.thread_id)
            if head is None or head[0] != run.pk:
                if head is not None and head[1] == RunStatus.QUEUED:
                    run_dispatch(run=Run(pk=head[0]))
                return None  # a running run dispatches the next when it ends
            if not _claim_if_first(run):  # cancelled meanwhile
                return None
    metrics.run_started(run)
    publish_on_commit(run.thread_id, run_status_frame(run, state="running"))
    return run


def runs_claim(*, run_ids: list[str], worker_channel: str) -> dict[str, Run]:
    """`run_claim` for many runs at once (a worker handed a burst): one read
    and one claiming UPDATE for all of them; a run that UPDATE does not take
    (another of its thread is ahead, or it was cancelled) goes the way
    `run_claim` goes for one. The claimed runs by id (with agent, thread and
    prompt); the others are not in it."""
    runs = {
        str(run.pk): run
        for run in Run.objects.select_related("agent", "thread", "prompt").filter(
            pk__in=run_ids, status=RunStatus.QUEUED
        )
    }
    if not runs:
        return {}
    now = timezone.now()
    lease = now + timedelta(seconds=settings.PARLEY_LEASE_SECONDS)
    for run in runs.values():
        run.status = RunStatus.RUNNING
        run.started_at = now
        run.worker_channel = worker_channel
        run.lease_expires_at = lease
    taken = _claim_many_if_first(list(runs.values()))
    claimed = {}
    for run_id, run in runs.items():
        if run_id in taken:
            metrics.run_started(run)
            publish_on_commit(run.thread_id, run_status_frame(run, state="running"))
            claimed[run_id] = run
        else:  # the thread's lock decides, as for one
            one = run_claim(run_id=run_id, worker_channel=worker_channel)
            if one is not None:
                claimed[run_id] = one
    return claimed


# The claiming UPDATE: a queued run, with no run of its thread ahead of it (one
# running, or one queued before it in `_thread_head_run`'s order). Written out
# because it runs once per reply on the way to its first token, and the ORM
# took longer to compile its correlated subquery than the database takes to
# run it (about 2 ms against 0.3 ms on the bench machine).
CLAIM_SQL = """
UPDATE {run} SET status = %s, started_at = %s, worker_channel = %s,
    lease_expires_at = %s
WHERE id = %s AND status = 'queued' AND NOT EXISTS (
    SELECT 1 FROM {run} ahead
    WHERE ahead.thread_id = {run}.thread_id AND (
        ahead.status = 'running'
        OR (ahead.status = 'queued' AND (
            ahead.created_at < {run}.created_at
            OR (ahead.created_at = {run}.created_at AND ahead.id < {run}.id)))))
"""


def _claim_if_first(run: Run) -> bool:
    """Run CLAIM_SQL for `run` (its new status, start, worker and lease set)."""
    names = ("status", "started_at", "worker_channel", "lease_expires_at", "id")
    with connection.cursor() as cursor:
        _execute_on_runs(cursor, CLAIM_SQL, run, names)
        return cursor.rowcount == 1


def _claim_many_if_first(runs: list[Run]) -> set[str]:
    """CLAIM_SQL for several runs in one statement (they share the new status,
    start, worker and lease); the ids of the runs it took."""
    first = runs[0]
    fields = Run._meta
    table = connection.ops.quote_name(fields.db_table)
    where_one = "WHERE id = %s AND status = 'queued'"
    placeholders = ", ".join(["%s"] * len(runs))
    sql = CLAIM_SQL.format(run=table).replace(
        where_one, f"WHERE id IN ({placeholders}) AND status = 'queued'"
    )
    values = [
        fields.get_field(name).get_db_prep_value(getattr(first, name), connection)
        for name in ("status", "started_at", "worker_channel", "lease_expires_at")
    ]
    ids = [fields.pk.get_db_prep_value(run.pk, connection) for run in runs]
    with connection.cursor() as cursor:
        cursor.execute(sql + f" RETURNING {table}.id", values + ids)
        return {str(fields.pk.to_python(row[0])) for row in cursor.fetchall()}


def _execute_on_runs(cursor, sql: str, run: Run, names, *more_params) -> None:
    """Execute `sql` ({run} is the run table) with `run`'s values of the fields
    `names` as parameters, prepared for the database as the ORM would."""
    fields = Run._meta
    cursor.execute(
        sql.format(run=connection.ops.quote_name(fields.db_table)),
        [
            fields.get_field(name).get_db_prep_value(getattr(run, name), connection)
            for name in names
        ]
        + list(more_params),
    )


def run_renew_leases(*, worker_channel: str, run_ids: list[str]) -> list[str]:
    """Extend this worker's leases; return the runs whose cancel was requested."""
    if not run_ids:
        return []
    expires = timezone.now() + timedelta(seconds=settings.PARLEY_LEASE_SECONDS)
    runs = Run.objects.filter(
        pk__in=run_ids, worker_channel=worker_channel, status=RunStatus.RUNNING
    )
    runs.update(lease_expires_at=expires)
    return [
        str(pk)
        for pk in runs.filter(cancel_requested=True).values_list("pk", flat=True)
    ]


def _complete_frame(
    run: Run,
    *,
    text: str,
    message: Message | None,
    chunks: int,
    agent_name: str | None = None,
) -> StateCompleteFrame:
    """The run's `state_complete`; `agent_name` (else read from `run.agent`)
    names its agent."""
    return StateCompleteFrame(
        content=RunCompleteContent(
            text=text,
            status=run.status,
            usage=run.usage or {},
            error=ErrorContent(code=run.error_code, message=run.error)
            if run.error_code
            else None,
            message_id=message.id if message else None,
            chunks=chunks,
            reason=(run.cancel_reason or None)
            if run.status == RunStatus.CANCELLED
            else None,
        ),
        thread_id=run.thread_id,
        run_id=run.id,
        agent=agent_name or (run.agent.name if run.agent_id else None),
    )


def run_finish(
    *,
    run_id: str,
    status: RunStatus,
    text: str,
    chunks: int,
    usage: dict | None = None,
    error_code: str = "",
    error: str = "",
    close_inputs: bool = True,
    close_tool_steps: bool = True,
    agent_name: str | None = None,
    team_choice: str | None = None,
    in_team: bool = True,
) -> Run | None:
    """Store the reply (partial text too) and the outcome, then tell the thread.

    `agent_name`: the run's agent, named in its frames (the worker knows it;
    without it, one query reads it).

    In a thread that runs an agent team, the next turn's run is created and
    dispatched here, in the same transaction (`_team_continue`);
    `team_choice` is whom the turn chose to speak next (the selector's pick,
    the handoff tool's target); `in_team` False (the worker: the thread ran
    no team when the run started) skips reading the thread's team.

    A failed run always gets its message, empty or not, so the history keeps
    the failure and its reason. Questions the run left open are closed
    (`close_inputs`: the worker passes False for a run that asked none, which
    saves the statement on the usual reply).

    Returns None when the run had already ended (e.g. the sweeper failed it).
    """
    run = Run(
        pk=Run._meta.pk.to_python(run_id),
        status=status,
        finished_at=timezone.now(),
        usage=usage or {},
        error_code=error_code,
        error=error,
        lease_expires_at=None,
    )
    with transaction.atomic():
        if not _finish_if_active(run):
            return None
        metrics.run_finished(run)
        message = None
        # A reply cut short by a reset answers a message that is gone: the
        # emptied history does not get it back.
        reset = status == RunStatus.CANCELLED and run.prompt_id is None
        if not reset and (text or status in (RunStatus.COMPLETED, RunStatus.FAILED)):
            message = Message.objects.create(
                thread_id=run.thread_id,
                agent_id=run.agent_id,
                role=MessageRole.ASSISTANT,
                text=text,
                run=run,
            )
        if close_inputs:
            _run_inputs_close_open(run_id=run.pk)
        if close_tool_steps:
            RunToolStep.objects.filter(
                run_id=run.pk, status=ToolStepStatus.PENDING
            ).update(status=ToolStepStatus.CANCELLED, finished_at=run.finished_at)
        # Updating the thread also locks it for dispatching its next run.
        Thread.objects.filter(pk=run.thread_id).update(updated_at=run.finished_at)
        thread_id = run.thread_id
        if agent_name is None:
            agent_name = run.agent.name
        if error_code:
            publish_on_commit(
                thread_id,
                error_frame(error_code, error, thread_id=thread_id).model_copy(
                    update={"run_id": run.id, "agent": agent_name}
                ),
            )
        publish_on_commit(
            thread_id,
            _complete_frame(
                run, text=text, message=message, chunks=chunks, agent_name=agent_name
            ),
            run_ended=str(run.id),
        )
        run_ended.send(sender=Run, run=run, text=text)
        if in_team:
            _team_continue(
                run, agent_name=agent_name, status=status, text=text, choice=team_choice
            )
        _dispatch_head(thread_id)
    return run


# --- agent teams (agents/teams.py): each turn its own run -----------------------


def _team_frame(
    run, team, *, turn: int, speaker=None, ended=None, text: str, **extra
) -> StatusFrame:
    """A `status` `team` event: who has the floor now, or why the chain ended;
    about `run` (the new turn's run, or the one the chain ended with)."""
    return StatusFrame(
        content=TeamStatus(
            state="team",
            policy=team.policy,
            turn=turn,
            max_turns=team.max_turns,
            speaker=speaker,
            ended=ended,
            text=text,
            **extra,
        ),
        thread_id=run.thread_id,
        run_id=run.pk,
        agent=speaker if speaker and speaker != HUMAN_SEAT else None,
    )


TEAM_END_TEXT = {
    "max_turns": "The team stopped: it reached its limit of {max} turns.",
    "termination": "The team finished: {agent} said {phrase!r}.",
    "cancelled": "The team stopped: turn {turn} was cancelled.",
    "failed": "The team stopped: turn {turn} ({agent}) failed.",
    "no_speaker": "The team stopped: {agent} handed the floor to nobody{detail}.",
    "human_timeout": "The team stopped: nobody took the human seat "
    "within {timeout:g} s.",
}


def _team_end(run, team, *, turn: int, reason: str, agent: str = "", detail=""):
    """Announce (after the commit) that the team's chain ended, and why."""
    text = TEAM_END_TEXT[reason].format(
        max=team.max_turns,
        agent=agent,
        phrase=team.termination,
        turn=turn,
        detail=detail,
        timeout=team.human_timeout,
    )
    publish_on_commit(
        run.thread_id, _team_frame(run, team, turn=turn, ended=reason, text=text)
    )


def team_turn_text(speaker: str, turn: int, team) -> str:
    """The floor line of a turn, e.g. "beta has the floor (turn 2 of 6)"."""
    if speaker == HUMAN_SEAT:
        return f"The people's turn: write a message (turn {turn} of {team.max_turns})"
    return f"{speaker} has the floor (turn {turn} of {team.max_turns})"


def _team_continue(run: Run, *, agent_name: str, status, text: str, choice) -> None:
    """After a team turn's run ended (inside run_finish's transaction, the
    thread locked): queue the next turn's run for the next speaker and
    announce it, or announce why the chain ends (turn limit, termination
    phrase, cancel, failure, nobody chosen) or that the human seat has it."""
    if run.prompt_id is None:  # the thread was reset
        return
    team, names = team_for_thread(thread_id=run.thread_id)
    if team is None:
        return
    turn = Run.objects.filter(prompt_id=run.prompt_id).count()
    this = Run.objects.filter(pk=run.pk).values(
        "requested_by_id", "budget_allowance", "cancel_requested", "created_at"
    )[0]
    reason, detail, speaker = None, "", None
    if status == RunStatus.CANCELLED or this["cancel_requested"]:
        reason = "cancelled"
    elif status == RunStatus.FAILED:
        reason = "failed"
    elif terminated(team, text):
        reason = "termination"
    elif turn >= team.max_turns:
        reason = "max_turns"
    elif team.policy == "round_robin":
        speaker = next_in_rotation(team, names, agent_name)
    else:
        speaker = seat_named(choice, team_seats(team, names))
        if speaker is None:
            reason = "no_speaker"
            detail = f" (it named {choice!r})" if choice else ""
    if reason is not None:
        _team_end(run, team, turn=turn, reason=reason, agent=agent_name, detail=detail)
        return
    if speaker == HUMAN_SEAT:
        until = timezone.now() + timedelta(seconds=team.human_timeout)
        publish_on_commit(
            run.thread_id,
            _team_frame(
                run,
                team,
                turn=turn + 1,
                speaker=HUMAN_SEAT,
                text=team_turn_text(HUMAN_SEAT, turn + 1, team),
                waiting_until=until.isoformat().replace("+00:00", "Z"),
            ),
        )
        after_commit(
            partial(_human_seat_timer, run.thread_id, run.pk, team.human_timeout)
        )
        return
    agent = AgentConfig.objects.filter(name=speaker).first()
    if agent is None or not agent.enabled:
        _team_end(
            run,
            team,
            turn=turn,
            reason="no_speaker",
            agent=agent_name,
            detail=f" ({speaker} is disabled)",
        )
        return
    following = Run.objects.create(
        thread_id=run.thread_id,
        agent=agent,
        requested_by_id=this["requested_by_id"],
        prompt_id=run.prompt_id,
        status=RunStatus.QUEUED,
        agent_version=agent.version,
        budget_allowance=this["budget_allowance"],
    )
    # The chain goes on before messages queued meanwhile: its turn sorts right
    # after the one that ended (the thread's queue reads `created_at`).
    following.created_at = this["created_at"] + timedelta(microseconds=1)
    Run.objects.filter(pk=following.pk).update(created_at=following.created_at)
    publish_on_commit(
        run.thread_id, run_status_frame(following, state="queued", position=0)
    )
    publish_on_commit(
        run.thread_id,
        _team_frame(
            following,
            team,
            turn=turn + 1,
            speaker=agent.name,
            text=team_turn_text(agent.name, turn + 1, team),
        ),
    )


def team_announce_first_turn(run: Run, team) -> None:
    """Announce the first turn of a team's chain (a message started it)."""
    publish_on_commit(
        run.thread_id,
        _team_frame(
            run,
            team,
            turn=1,
            speaker=run.agent.name,
            text=team_turn_text(run.agent.name, 1, team),
        ),
    )


def _team_end_for_cancelled_turn(run: Run) -> None:
    """A queued team turn was cancelled before it ran: the chain ends there."""
    team, _names = team_for_thread(thread_id=run.thread_id)
    if team is None or run.prompt_id is None:
        return
    turn = Run.objects.filter(
        prompt_id=run.prompt_id, created_at__lte=run.created_at
    ).count()
    _team_end(run, team, turn=turn, reason="cancelled")


# Timers of human seats waiting in this process (kept: tasks are weakly held).
_human_seat_timers: set = set()


async def _human_seat_timer(thread_id, run_id, seconds: float) -> None:
    """Start the wait of a human seat; past it, `team_human_seat_expire`. A
    process that dies meanwhile loses the timer: the chain then ends silently
    (the next message starts a new one either way)."""

    async def expire_later() -> None:
        await asyncio.sleep(seconds)
        await call_service(team_human_seat_expire, thread_id=thread_id, run_id=run_id)

    task = asyncio.get_running_loop().create_task(expire_later())
    _human_seat_timers.add(task)
    task.add_done_callback(_human_seat_timers.discard)


def team_human_seat_expire(*, thread_id, run_id) -> bool:
    """End a chain whose human seat nobody took in time: no user message since
    the turn `run_id` ended and no run going. True when it ended it."""
    with transaction.atomic():
        Thread.objects.select_for_update().filter(pk=thread_id).first()
        ended = Run.objects.filter(pk=run_id).first()
        if ended is None or ended.finished_at is None or ended.prompt_id is None:
            return False
        answered = Message.objects.filter(
            thread_id=thread_id,
            role=MessageRole.USER,
            created_at__gte=ended.finished_at,
        ).exists()
        going = Run.objects.filter(
            thread_id=thread_id, status__in=ACTIVE_RUN_STATUSES
        ).exists()
        team, _names = team_for_thread(thread_id=thread_id)
        if answered or going or team is None:
            return False
        turn = Run.objects.filter(prompt_id=ended.prompt_id).count()
        _team_end(ended, team, turn=turn + 1, reason="human_timeout")
        return True


# The finishing UPDATE: it ends a run only while it is active (the sweeper or a
# cancel may have ended it meanwhile), holds the run's row until the commit and
# returns what the rest of the finish needs, in one statement where the ORM took
# two (a locking read, then the save) and about 1.5 ms to compile them, once per
# reply, on the worker's hot path when many replies end together.
FINISH_SQL = """
UPDATE {run} SET status = %s, finished_at = %s, usage = %s, error_code = %s,
    error = %s, lease_expires_at = %s
WHERE id = %s AND status IN (%s, %s)
RETURNING thread_id, agent_id, prompt_id, cancel_reason
"""


def _finish_if_active(run: Run) -> bool:
    """Run FINISH_SQL for `run` (its outcome set); fill in its thread, agent
    and prompt (None once the prompt is gone: the thread was reset)."""
    names = ("status", "finished_at", "usage", "error_code", "error")
    names += ("lease_expires_at", "id")  # None: the lease ends with the run
    active = [str(status) for status in ACTIVE_RUN_STATUSES]
    with connection.cursor() as cursor:
        _execute_on_runs(cursor, FINISH_SQL, run, names, *active)
        row = cursor.fetchone()
    if row is None:
        return False
    fields = Run._meta
    run.thread_id = fields.get_field("thread").target_field.to_python(row[0])
    run.agent_id = fields.get_field("agent").target_field.to_python(row[1])
    run.prompt_id = fields.get_field("prompt").target_field.to_python(row[2])
    run.cancel_reason = row[3]
    return True


def run_cancel(*, run: Run, reason: str = "") -> Run:
    """Cancel a queued run at once, or ask the worker running it to stop;
    `reason` (why) is kept with the run and shown in its `state_complete`."""
    reason = (reason or "")[:200]
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        if run.status == RunStatus.QUEUED:
            run.status = RunStatus.CANCELLED
            run.finished_at = timezone.now()
            run.cancel_reason = reason
            run.save(update_fields=["status", "finished_at", "cancel_reason"])
            run_ended.send(sender=Run, run=run, text="")
            publish_on_commit(
                run.thread_id,
                _complete_frame(run, text="", message=None, chunks=0),
                run_ended=str(run.id),
            )
            _team_end_for_cancelled_turn(run)
            # It may have been its thread's next run: the one behind it goes
            # now (in a transaction of its own, under the thread's lock).
            transaction.on_commit(partial(run_dispatch_next, thread_id=run.thread_id))
        elif run.status == RunStatus.RUNNING:
            if not run.cancel_requested:
                run.cancel_requested = True
                run.cancel_reason = reason
                run.save(update_fields=["cancel_requested", "cancel_reason"])
            publish_on_commit(run.thread_id, run_status_frame(run, state="cancelling"))
            message = {"type": "run.cancel", "run_id": str(run.id)}
            after_commit(partial(send_to_channel, run.worker_channel, message))
        else:
            raise ServiceError(
                AgentErrorCode.RUN_NOT_ACTIVE,
                f"The run has already ended ({run.status}).",
                status=409,
            )
    return run


def run_active_for_thread(*, thread_id) -> Run | None:
    """The run the thread is on: its running run, else its oldest queued one.
    One statement: two (running? then queued?) could both miss a run that a
    worker claims between them."""
    return (
        Run.objects.filter(thread_id=thread_id, status__in=ACTIVE_RUN_STATUSES)
        .order_by("-status", "created_at", "pk")  # "running" sorts before "queued"
        .first()
    )


def run_input_submit(
    *,
    run: Run,
    input_id: str | None,
    text: str | None,
    username: str,
    approve: bool | None = None,
) -> None:
    """Hand an answer to the worker waiting for it. `input_id` None answers the
    run's oldest open question (or approval). A question takes `text`, an
    approval `approve`. The worker records the answer (first one wins)."""
    if run.status != RunStatus.RUNNING:
        raise ServiceError(
            AgentErrorCode.INPUT_NOT_PENDING,
            "The run is not waiting for input.",
            status=409,
        )
    if text is not None and len(text) > settings.PARLEY_MAX_MESSAGE_CHARS:
        raise ServiceError(ErrorCode.MESSAGE_TOO_LONG, "The answer is too long.")
    open_inputs = RunInput.objects.filter(run_id=run.pk, status=RunInputStatus.OPEN)
    if input_id is not None:
        open_inputs = open_inputs.filter(input_id=input_id)
    pending = open_inputs.order_by("asked_at", "id").values_list("input_id", "kind")
    found = pending.first()
    if found is None:
        raise ServiceError(
            AgentErrorCode.INPUT_NOT_PENDING,
            "No open question to answer (answered already, timed out or unknown).",
            status=409,
        )
    input_id, kind = found
    if kind == "approval" and approve is None:
        raise ServiceError(
            AgentErrorCode.INPUT_MISMATCH,
            "This is a tool call waiting for approval: answer with "
            '{"approve": true} or {"approve": false}.',
            status=400,
        )
    if kind != "approval" and text is None:
        raise ServiceError(
            AgentErrorCode.INPUT_MISMATCH,
            'This is a question: answer with {"text": "..."}.',
            status=400,
        )
    message = {
        "type": "run.input",
        "run_id": str(run.id),
        "input_id": input_id,
        "text": text if kind != "approval" else None,
        "approve": approve if kind == "approval" else None,
        "username": username,
    }
    after_commit(partial(send_to_channel, run.worker_channel, message))


def run_sweep(*, read_partial_text=None) -> list[Run]:
    """Fail runs whose worker stopped renewing its lease; re-dispatch stuck queued runs.

    `read_partial_text(run) -> (text, chunks) | None` recovers what the dead
    worker had streamed (from the event log) so it is kept; the run's checkpoint
    (`partial_text`) stands in where the log has less.
    """
    now = timezone.now()
    failed = []
    for run in Run.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now):
        logged = read_partial_text(run) if read_partial_text else None
        text, chunks = logged or ("", 0)
        # The log's text, else the worker's last checkpoint (embedded mode:
        # the log died with the worker). Both are the start of the same reply,
        # so the longer one is the more complete.
        if run.partial_chunks > chunks:
            text, chunks = run.partial_text, run.partial_chunks
        ended = run_finish(
            run_id=str(run.id),
            status=RunStatus.FAILED,
            text=text,
            chunks=chunks,
            usage=run.usage,
            error_code=AgentErrorCode.WORKER_LOST.value,
            error="The worker running this reply stopped; the reply was cut short.",
        )
        if ended is not None:
            logger.warning("run %s failed: its worker's lease lapsed", run.id)
            failed.append(ended)
    stuck_before = now - timedelta(seconds=settings.PARLEY_LEASE_SECONDS)
    stuck_threads = set(
        Run.objects.filter(
            status=RunStatus.QUEUED, created_at__lt=stuck_before
        ).values_list("thread_id", flat=True)
    )
    for thread_id in stuck_threads:
        run_dispatch_next(thread_id=thread_id)
    return failed


# --- checkpoints and questions (agents/checkpoints.py, agents/questions.py) -----


def run_checkpoint(*, checkpoints: list[tuple[str, str, int]]) -> int:
    """Store the text so far of running runs, `(run_id, text, chunks)` each, in
    one transaction (one batch per checkpoint interval of a worker). A run that
    ended meanwhile is left alone. Returns how many runs were written."""
    written = 0
    with transaction.atomic():
        # In key order: two batches never wait on each other's rows crosswise.
        for run_id, text, chunks in sorted(checkpoints):
            written += Run.objects.filter(
                pk=run_id, status=RunStatus.RUNNING, partial_chunks__lt=chunks
            ).update(partial_text=text, partial_chunks=chunks)
    return written


def run_input_open(
    *,
    run_id: str,
    input_id: str,
    question: str,
    timeout: float,
    kind: str = "question",
    tool_call: dict | None = None,
) -> RunInput:
    """Store a question the run asks the thread (or, `kind` approval, the tool
    call waiting for a yes), before it is published."""
    now = timezone.now()
    return RunInput.objects.create(
        run_id=run_id,
        input_id=input_id,
        kind=kind,
        tool_call=tool_call,
        question=question,
        asked_at=now,
        timeout_seconds=timeout,
        expires_at=now + timedelta(seconds=timeout),
    )


def run_input_close(
    *,
    input_id: str,
    status: RunInputStatus,
    answer: str = "",
    username: str = "",
) -> bool:
    """Record how an open question ended: answered (by `username`) or timed out.
    False when it had ended already (e.g. closed with its run)."""
    fields = {"status": status}
    if status == RunInputStatus.ANSWERED:
        fields.update(
            answered_at=timezone.now(),
            answer=answer,
            answered_by_username=username,
            answered_by=get_user_model().objects.filter(username=username).first()
            if username
            else None,
        )
    return bool(
        RunInput.objects.filter(input_id=input_id, status=RunInputStatus.OPEN).update(
            **fields
        )
    )


def _run_inputs_close_open(*, run_id) -> int:
    """Close the questions a run that ended left open."""
    return RunInput.objects.filter(run_id=run_id, status=RunInputStatus.OPEN).update(
        status=RunInputStatus.CANCELLED
    )


# --- tool steps (agents/tool_calls.py calls these) -----------------------------


def run_tool_steps_open(
    *, run_id: str, step: int, text_offset: int, calls: list[dict]
) -> None:
    """Store the tool calls one model call made (`{"id", "name", "arguments"}`
    each), before they run: snapshots show them, the history keeps them."""
    now = timezone.now()
    RunToolStep.objects.bulk_create(
        RunToolStep(
            run_id=run_id,
            step=step,
            position=position,
            call_id=call["id"],
            name=call["name"],
            arguments=call["arguments"],
            text_offset=text_offset,
            started_at=now,
        )
        for position, call in enumerate(calls)
    )


def run_tool_step_close(
    *,
    run_id: str,
    step: int,
    position: int,
    status: ToolStepStatus,
    output: str = "",
    error: str = "",
) -> bool:
    """Record what a tool call gave back; False when it had been closed already."""
    return bool(
        RunToolStep.objects.filter(
            run_id=run_id,
            step=step,
            position=position,
            status=ToolStepStatus.PENDING,
        ).update(status=status, output=output, error=error, finished_at=timezone.now())
    )
