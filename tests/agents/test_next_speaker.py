"""Who a finished team turn hands the floor to, where the turn decides it
(agents/next_speaker.py); a selector model's pick is tested end to end in
tests/chat/test_teams.py."""

from __future__ import annotations

import pytest

from agents.models import Run, RunStatus
from agents.next_speaker import next_speaker
from agents.teams import Team


@pytest.mark.parametrize(
    ("team", "status", "handoff_to", "chosen"),
    [
        (Team(policy="handoff"), RunStatus.COMPLETED, "beta", "beta"),
        (Team(policy="handoff"), RunStatus.COMPLETED, None, None),
        (Team(policy="handoff"), RunStatus.FAILED, "beta", None),
        (Team(policy="handoff"), RunStatus.CANCELLED, "beta", None),
        (Team(policy="round_robin"), RunStatus.COMPLETED, "beta", None),
        (None, RunStatus.COMPLETED, "beta", None),
    ],
)
async def test_only_a_completed_handoff_turn_names_the_next_speaker_itself(
    team, status, handoff_to, chosen
):
    # No database: the handoff, an ended chain and round robin are decided
    # without asking anyone.
    chosen_now = await next_speaker(
        Run(), team, status, "the reply", handoff_to=handoff_to
    )

    assert chosen_now == chosen
