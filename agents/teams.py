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
(agents/next_speaker.py) before the run finishes; the thread's team and agents
are read by agents/selectors.py. This module holds the rules, and reads nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

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
