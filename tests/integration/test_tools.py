"""Tools through the production shape: daphne and `runworker agent-runs` on
PostgreSQL and Redis, a loopback model server asking for `calculate` (approved
by a second user over their own socket) and for a tool of a real MCP server,
watched by an observer on another daphne."""

from __future__ import annotations

import pytest

from tests.fakes import FakeOpenAIServer, FakeToolCall, Scenario
from tests.fakes.mcp_server import FakeMCPServer
from tests.integration.conftest import Socket, Stack

pytestmark = pytest.mark.integration

KEY = "sk-parley-it-tools-9a8b7c6d5e4f3a2b"


def complete(frame) -> bool:
    return frame["type"] == "state_complete"


def tool_frames(frames) -> list[tuple[str, dict]]:
    return [
        (frame["content"]["kind"], frame["content"]["data"])
        for frame in frames
        if frame["type"] == "state"
        and frame["content"]["kind"] in ("tool_call", "tool_result")
    ]


async def joined(socket: Socket) -> Socket:
    assert (await socket.receive())["content"]["state"] == "connected"
    assert (await socket.receive())["content"]["state"] in ("snapshot", "resynced")
    return socket


async def test_an_approved_calculate_and_an_mcp_tool_through_real_processes(tmp_path):
    with FakeOpenAIServer() as model, FakeMCPServer() as mcp:
        model.script(
            Scenario.calls(
                FakeToolCall("calculate", ('{"expression": "6*7"}',), id="call_calc")
            ),
            Scenario.calls(
                FakeToolCall("math__add", ('{"a": 42, "b": 1}',), id="call_add")
            ),
            Scenario.tool_results("Done: "),
        )
        stack = Stack(tmp_path, PARLEY_IT_MODEL_KEY=KEY).start()
        try:
            setup = stack.python(
                "from django.contrib.auth import get_user_model\n"
                "from rest_framework.authtoken.models import Token\n"
                "from agents.models import AgentConfig\n"
                "from chat.models import Thread, ThreadMember\n"
                "U = get_user_model()\n"
                "users = {n: U.objects.get_or_create(username=n)[0] for n in ('owner', 'participant', 'observer')}\n"
                "agent = AgentConfig(name='tooled', provider='openai', model='m',"
                f" base_url={model.base_url!r}, api_key_env='PARLEY_IT_MODEL_KEY',"
                " tools=['calculate', 'math.add'], approval_required=['calculate'],"
                f" mcp_servers=[{{'name': 'math', 'url': {mcp.url!r}}}])\n"
                "agent.full_clean()\n"
                "agent.save()\n"
                "thread = Thread.objects.create(owner=users['owner'], agent=agent, title='it')\n"
                "ThreadMember.objects.create(thread=thread, user=users['participant'], role='participant')\n"
                "ThreadMember.objects.create(thread=thread, user=users['observer'], role='observer')\n"
                "result = {'thread': str(thread.id), 'tokens': {n: Token.objects.get_or_create(user=u)[0].key for n, u in users.items()}}\n"
            )
            thread, tokens = setup["thread"], setup["tokens"]
            web_a, web_b = stack.daphne(), stack.daphne()
            stack.worker()
            async with (
                Socket(web_a.ws_url(thread), tokens["owner"]) as owner,
                Socket(web_a.ws_url(thread), tokens["participant"]) as participant,
                Socket(web_b.ws_url(thread), tokens["observer"]) as observer,
            ):
                for socket in (owner, participant, observer):
                    await joined(socket)
                await owner.send({"type": "message", "content": "6*7, plus one?"})
                (request,) = [
                    frame
                    for frame in await participant.receive_until(
                        lambda frame: frame["type"] == "input_request"
                    )
                    if frame["type"] == "input_request"
                ]
                assert request["content"]["kind"] == "approval"
                assert request["content"]["tool_call"]["name"] == "calculate"
                await participant.send(
                    {
                        "type": "input",
                        "content": {
                            "run_id": request["run_id"],
                            "input_id": request["content"]["input_id"],
                            "approve": True,
                        },
                    }
                )
                watched = await observer.receive_until(complete)
                seen = await owner.receive_until(complete)
        finally:
            stack.stop()

    assert [f for f in watched if f["event_id"]] == [f for f in seen if f["event_id"]]
    assert tool_frames(watched) == [
        (
            "tool_call",
            {
                "id": "call_calc",
                "name": "calculate",
                "arguments": {"expression": "6*7"},
            },
        ),
        ("tool_result", {"id": "call_calc", "name": "calculate", "output": "42"}),
        (
            "tool_call",
            {"id": "call_add", "name": "math.add", "arguments": {"a": 42, "b": 1}},
        ),
        ("tool_result", {"id": "call_add", "name": "math.add", "output": "43"}),
    ]
    done = watched[-1]["content"]
    assert (done["status"], done["text"]) == ("completed", "Done: 43")
    for frame in watched:
        assert KEY not in str(frame)
