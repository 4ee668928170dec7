"""Agent teams: several agents of a thread taking turns, as AutoGen's teams do.

A thread runs a team when its `config` holds `team` (docs/protocol.md, "Agent
teams"): a policy that picks who speaks next (`round_robin`, `selector`,
`handoff`), a turn limit and a termination phrase. Each turn is a run of its
own: when a turn's run finishes, `agents.services.run_finish` asks
`team_next_turn` (in the same transaction) whether the chain goes on and with
whom, creates the next turn's run and dispatches it. A `human` seat hands the
floor to the people of the thread: the chain waits for the next message, which
starts the next round, and ends after `human_timeout` seconds without one.

The selector's model call and the handoff tool's choice happen in the worker
(agents/runtime.py) before the run finishes; this module holds the rules.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

from django.db.models import Q
from django.db.models.functions import Coalesce

logger = logging.getLogger(__name__)

POLICIES = ("round_robin", "selector", "handoff")
# The seat of the people in the thread (AutoGen's user proxy).
HUMAN_SEAT = "human"
TEAM_KEYS = {"policy", "max_turns", "termination", "seats", "selector", "human_timeout"}
DEFAULT_MAX_TURNS = 6
MAX_TURNS_LIMIT = 50
DEFAULT_HUMAN_TIMEOUT = 300.0
MAX_HUMAN_TIMEOUT = 86_400.0
MAX_TERMINATION_CHARS = 100
# The built-in tool a `handoff` team's agents pass the floor with.
HANDOFF_TOOL = "handoff"
# How much of the conversation the selector's model reads, in characters.
SELECTOR_TRANSCRIPT_CHARS = 8_000
SELECTOR_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Team:
    """A thread's team settings (its `config["team"]`), defaults filled in."""

    policy: str
    max_turns: int = DEFAULT_MAX_TURNS
    termination: str = ""
    seats: tuple[str, ...] | None = None  # None: the thread's agents in order
    selector: str | None = None  # None: the thread's default agent
    human_timeout: float = DEFAULT_HUMAN_TIMEOUT


def team_config_problem(value: Any) -> str | None:
    """Why `value` is no valid `team` setting (None when it is, or is null:
    no team). Names are checked against the thread's agents elsewhere
    (`team_names_problem`): a thread's config is checked without them."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return "An object with policy, max_turns, termination, seats, ..."
    unknown = sorted(set(value) - TEAM_KEYS)
    if unknown:
        return f"Unknown keys {', '.join(unknown)}; allowed: {', '.join(sorted(TEAM_KEYS))}."
    if value.get("policy") not in POLICIES:
        return f"policy: one of {', '.join(POLICIES)}."
    turns = value.get("max_turns", DEFAULT_MAX_TURNS)
    if not isinstance(turns, int) or isinstance(turns, bool):
        return f"max_turns: an integer from 1 to {MAX_TURNS_LIMIT}."
    if not 1 <= turns <= MAX_TURNS_LIMIT:
        return f"max_turns: an integer from 1 to {MAX_TURNS_LIMIT}."
    termination = value.get("termination", "")
    if not isinstance(termination, str) or len(termination) > MAX_TERMINATION_CHARS:
        return f"termination: a phrase of at most {MAX_TERMINATION_CHARS} characters."
    if "\x00" in termination:
        return "termination: no NUL characters."
    seats = value.get("seats")
    if seats is not None and (
        not isinstance(seats, list)
        or not seats
        or not all(isinstance(seat, str) and seat for seat in seats)
        or len(set(seats)) != len(seats)
        or all(seat == HUMAN_SEAT for seat in seats)
    ):
        return (
            'seats: a list of distinct agent names (and "human" for the people), '
            "at least one agent."
        )
    selector = value.get("selector")
    if selector is not None and (not isinstance(selector, str) or not selector):
        return "selector: an agent's name."
    timeout = value.get("human_timeout", DEFAULT_HUMAN_TIMEOUT)
    if (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or not 1 <= timeout <= MAX_HUMAN_TIMEOUT
    ):
        return f"human_timeout: seconds, from 1 to {MAX_HUMAN_TIMEOUT:g}."
    return None


def team_names_problem(value: Any, agent_names: list[str]) -> str | None:
    """Why the names in a valid `team` setting do not fit a thread whose
    agents are `agent_names` (None when they do)."""
    if not isinstance(value, dict):
        return None
    for seat in value.get("seats") or []:
        if seat != HUMAN_SEAT and seat not in agent_names:
            return f"seats: {seat!r} is none of the thread's agents ({', '.join(agent_names)})."
    selector = value.get("selector")
    if selector is not None and selector not in agent_names:
        return f"selector: {selector!r} is none of the thread's agents."
    return None


def team_of(config: dict | None) -> Team | None:
    """The team a thread's config runs, or None (no team, or a broken one)."""
    value = (config or {}).get("team")
    if not value or team_config_problem(value) is not None:
        return None
    seats = value.get("seats")
    return Team(
        policy=value["policy"],
        max_turns=value.get("max_turns", DEFAULT_MAX_TURNS),
        termination=value.get("termination", ""),
        seats=tuple(seats) if seats else None,
        selector=value.get("selector"),
        human_timeout=float(value.get("human_timeout", DEFAULT_HUMAN_TIMEOUT)),
    )


def team_seats(team: Team, agent_names: list[str]) -> list[str]:
    """Who takes turns, in order: the team's seats that are still agents of
    the thread (or the human seat), else the thread's agents."""
    if team.seats is None:
        return list(agent_names)
    seats = [seat for seat in team.seats if seat == HUMAN_SEAT or seat in agent_names]
    return seats if any(seat != HUMAN_SEAT for seat in seats) else list(agent_names)


def first_speaker(team: Team, agent_names: list[str]) -> str:
    """Who answers a message that names no agent: the seat after the human
    seat (a message is the people's turn), else the first seat."""
    seats = team_seats(team, agent_names)
    if HUMAN_SEAT in seats:
        return seats[(seats.index(HUMAN_SEAT) + 1) % len(seats)]
    return seats[0]


def next_in_rotation(team: Team, agent_names: list[str], current: str) -> str:
    """The seat after `current`'s (round robin); the first seat when
    `current` has none (it was addressed by name)."""
    seats = team_seats(team, agent_names)
    if current not in seats:
        return seats[0]
    return seats[(seats.index(current) + 1) % len(seats)]


def candidates_after(team: Team, agent_names: list[str], current: str) -> list[str]:
    """Whom the selector may pick after `current` spoke: every seat but
    `current`'s (an agent does not follow itself unless it is alone)."""
    seats = team_seats(team, agent_names)
    others = [seat for seat in seats if seat != current]
    return others or seats


def terminated(team: Team, text: str) -> bool:
    """Whether a reply ends the chain by saying the team's termination phrase."""
    return bool(team.termination) and team.termination in text


def seat_named(name: str | None, seats: list[str]) -> str | None:
    """The seat `name` means (exactly, else ignoring case and a leading @)."""
    if not name:
        return None
    name = name.strip().lstrip("@").strip()
    if name in seats:
        return name
    folded = {seat.casefold(): seat for seat in seats}
    return folded.get(name.casefold())


def selector_choice(answer: str, candidates: list[str]) -> str | None:
    """The candidate a selector's answer names: the whole answer as a name,
    else the first candidate named in it as a word; None when it names none."""
    exact = seat_named(answer.strip().strip(".\"'`*"), candidates)
    if exact is not None:
        return exact
    best = None
    for candidate in candidates:
        found = re.search(
            rf"(?<![\w-]){re.escape(candidate)}(?![\w-])", answer, re.IGNORECASE
        )
        if found and (best is None or found.start() < best[0]):
            best = (found.start(), candidate)
    return best[1] if best else None


# --- the selector's model call (the worker, before a turn's run finishes) --------


SELECTOR_SYSTEM_PROMPT = (
    "You choose who speaks next in a group chat of people and AI agents. "
    "Answer with exactly one name from the list you are given, nothing else."
)


def selector_request(*, run, team: Team, text: str):
    """(provider request, provider, candidates) for asking the selector agent
    who speaks after `run` (whose reply is `text`); None when the chain ends
    anyway (turn limit, termination phrase) or the selector is gone. Reads the
    database: call it through `call_service`."""
    from agents.models import AgentConfig, Run
    from agents.prompts import provider_request_for
    from chat.models import Message, MessageRole

    if run.prompt_id is None or terminated(team, text):
        return None
    if Run.objects.filter(prompt_id=run.prompt_id).count() >= team.max_turns:
        return None
    names = thread_agent_names(thread_id=run.thread_id)
    selector_name = team.selector or names[0]
    selector = AgentConfig.objects.filter(name=selector_name, enabled=True).first()
    if selector is None:
        return None
    candidates = candidates_after(team, names, run.agent.name)
    described = {
        agent.name: agent.description
        for agent in AgentConfig.objects.filter(name__in=candidates)
    }
    rows = (
        Message.objects.filter(thread_id=run.thread_id)
        .filter(
            Q(created_at__lte=run.prompt.created_at)
            | Q(role=MessageRole.ASSISTANT, run__created_at__lte=run.created_at)
        )
        .annotate(turn=Coalesce("run__created_at", "created_at"))
        .order_by("-turn", "role", "-created_at")
        .values_list("role", "text", "agent__name", "author__username")
    )
    # The turn's own reply is not stored yet (run_finish stores it): it
    # comes last, and first out of the budget.
    newest = f"{run.agent.name}: {text[-SELECTOR_TRANSCRIPT_CHARS:]}"
    lines: list[str] = [newest]
    budget = SELECTOR_TRANSCRIPT_CHARS - len(newest)
    for role, body, agent_name, username in rows[:100]:
        speaker = agent_name if role == MessageRole.ASSISTANT else username
        line = f"{speaker or role}: {body}"
        if len(line) > budget:
            break
        budget -= len(line)
        lines.append(line)
    lines.reverse()
    listed = "\n".join(
        f"- {name}: "
        + (
            "the people in the chat"
            if name == HUMAN_SEAT
            else (described.get(name) or "an agent")
        )
        for name in candidates
    )
    question = (
        f"Participants who may speak next:\n{listed}\n\nConversation so far:\n"
        + "\n".join(lines)
        + f"\n\nWho speaks next? Answer with one name of: {', '.join(candidates)}."
    )
    request, provider = provider_request_for(selector, question=question)
    request.system_prompt = SELECTOR_SYSTEM_PROMPT
    return request, provider, candidates


async def selector_pick(
    request, provider, candidates: list[str]
) -> tuple[str | None, str]:
    """Ask the selector's model; (the candidate it named or None, its answer)."""
    from agents.providers.base import TextDelta

    async def answer() -> str:
        parts = []
        async for event in provider.stream(request):
            if isinstance(event, TextDelta):
                parts.append(event.text)
        return "".join(parts)

    try:
        said = await asyncio.wait_for(answer(), SELECTOR_TIMEOUT_SECONDS)
    except Exception as error:  # the chain ends and says why
        logger.warning("the team selector failed: %s", error)
        return None, f"(the selector failed: {error})"
    return selector_choice(said, candidates), said


def thread_agent_names(*, thread_id) -> list[str]:
    """The names of the thread's agents, the default first (one query)."""
    from chat.models import Thread, ThreadAgent

    default = Thread.objects.filter(pk=thread_id).values_list("agent__name", flat=True)
    others = (
        ThreadAgent.objects.filter(thread_id=thread_id)
        .order_by("position")
        .values_list("agent__name", flat=True)
    )
    return [*default, *others]


def team_for_thread(*, thread_id) -> tuple[Team | None, list[str]]:
    """The thread's team and its agents' names; (None, []) without a team."""
    from chat.models import Thread

    config = Thread.objects.filter(pk=thread_id).values_list("config", flat=True)
    team = team_of(config.first())
    if team is None:
        return None, []
    return team, thread_agent_names(thread_id=thread_id)
