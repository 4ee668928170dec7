"""Who speaks next in an agent team, where the turn that ends decides it
(agents/teams.py has the rules; agents/services.py `run_finish` queues the
next turn): a `handoff` team's agent names the next speaker with the
`handoff` tool, a `selector` team's selector agent is asked by a model call,
here in the worker, before the turn's run finishes."""

from __future__ import annotations

import asyncio
import logging

from django.db.models import Q
from django.db.models.functions import Coalesce

from agents.models import AgentConfig, Run, RunStatus
from agents.prompts import provider_request_for
from agents.providers.base import TextDelta
from agents.selectors import thread_agent_names
from agents.teams import (
    HUMAN_SEAT,
    Team,
    candidates_after,
    selector_choice,
    terminated,
)
from chat.models import Message, MessageRole
from realtime.events import call_service

logger = logging.getLogger(__name__)

# How much of the conversation the selector's model reads, in characters.
SELECTOR_TRANSCRIPT_CHARS = 8_000
SELECTOR_TIMEOUT_SECONDS = 60.0


async def next_speaker(
    run: Run,
    team: Team | None,
    status: RunStatus,
    text: str,
    *,
    handoff_to: str | None,
) -> str | None:
    """Whom a finished team turn hands the floor to, where the turn decides
    it: `handoff_to` (the `handoff` tool's target, if the run called it), or
    the selector model's pick. None: no team, no choice, or the chain ends
    anyway."""
    if team is None or status != RunStatus.COMPLETED:
        return None
    if team.policy == "handoff":
        return handoff_to
    if team.policy != "selector":
        return None
    try:
        asking = await call_service(selector_request, run=run, team=team, text=text)
    except Exception:
        logger.exception("run %s: could not ask the team's selector", run.id)
        return None
    if asking is None:
        return None
    request, provider, candidates = asking
    chosen, said = await selector_pick(request, provider, candidates)
    return chosen or said[:100]


SELECTOR_SYSTEM_PROMPT = (
    "You choose who speaks next in a group chat of people and AI agents. "
    "Answer with exactly one name from the list you are given, nothing else."
)


def selector_request(*, run, team: Team, text: str):
    """(provider request, provider, candidates) for asking the selector agent
    who speaks after `run` (whose reply is `text`); None when the chain ends
    anyway (turn limit, termination phrase) or the selector is gone. Reads the
    database: call it through `call_service`."""
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
