"""Which tools a run's model is offered (agents/tool_calls.py `tools_for`);
running the calls is tested end to end in tests/agents/test_tools.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async

from agents.models import AgentConfig, Run, RunStatus
from agents.tool_calls import tools_for
from chat.models import Role, Thread
from tests.agents.test_sweep import make_run

pytestmark = pytest.mark.django_db(transaction=True)


async def run_of(thread: Thread, user) -> Run:
    run = await make_run(
        thread, user, text="hi", status=RunStatus.RUNNING, age=timedelta(0)
    )
    return await database_sync_to_async(
        Run.objects.select_related("agent", "thread").get
    )(pk=run.pk)


@database_sync_to_async
def configure(thread: Thread, *, config: dict | None = None, **agent_fields):
    AgentConfig.objects.filter(pk=thread.agent_id).update(**agent_fields)
    if config is not None:
        Thread.objects.filter(pk=thread.pk).update(config=config)


async def offered(thread: Thread, user) -> dict[str, str]:
    """Model-facing name -> registered name of each tool offered."""
    tools = await tools_for(await run_of(thread, user))
    return {wire: name for wire, (name, _tool) in tools.items()}


async def test_the_model_is_offered_the_tools_its_config_names(thread, users):
    await configure(thread, tools=["calculate", "clock", "no_such_tool"])

    assert await offered(thread, users[Role.OWNER]) == {
        "calculate": "calculate",
        "clock": "clock",
    }


async def test_a_python_agent_gets_its_own_tools_too(thread, users):
    await configure(thread, provider="python", model="weather", tools=["clock"])

    assert await offered(thread, users[Role.OWNER]) == {
        "clock": "clock",
        "get_weather": "get_weather",
    }


async def test_the_agents_of_a_handoff_team_get_the_handoff_tool(thread, users):
    await configure(thread, config={"team": {"policy": "handoff"}})

    assert await offered(thread, users[Role.OWNER]) == {"handoff": "handoff"}


async def test_other_teams_do_not_get_the_handoff_tool(thread, users):
    await configure(thread, config={"team": {"policy": "round_robin"}})

    assert await offered(thread, users[Role.OWNER]) == {}
