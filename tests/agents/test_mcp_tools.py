"""MCP servers as tool sources: a real MCP server on loopback (the `mcp` SDK's
server side over Streamable HTTP) whose tools an agent discovers and calls
through the worker; a server that is down, or goes away mid-run."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from agents.models import AgentConfig
from chat.models import Role, Thread, ThreadMember
from tests.agents.test_tools import KEY_ENV, joined, tool_frames, until_complete
from tests.fakes import FakeOpenAIServer, FakeToolCall, Scenario
from tests.fakes.mcp_server import FakeMCPServer

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN_ENV = "PARLEY_TEST_MCP_TOKEN"
TOKEN = "Bearer mcp-secret-7f6e5d4c3b2a"


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-parley-mcp-0a1b2c3d4e5f6a7b")
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


@pytest.fixture
def mcp_server():
    with FakeMCPServer() as server:
        yield server


@pytest.fixture
def model():
    with FakeOpenAIServer() as server:
        yield server


def make_thread(users, model, mcp_url, **fields) -> Thread:
    agent = AgentConfig.objects.create(
        name="mcp-agent",
        provider="openai",
        model="model-test",
        base_url=model.base_url,
        api_key_env=KEY_ENV,
        mcp_servers=[
            {
                "name": "math",
                "url": mcp_url,
                "headers_env": {"Authorization": TOKEN_ENV},
            }
        ],
        **fields,
    )
    thread = Thread.objects.create(owner=users[Role.OWNER], agent=agent, title="t")
    ThreadMember.objects.create(
        thread=thread, user=users[Role.PARTICIPANT], role=Role.PARTICIPANT
    )
    return thread


async def test_an_agent_discovers_and_calls_an_mcp_servers_tools(
    users, env, mcp_server, model, worker, client_for
):
    thread = await database_sync_to_async(make_thread)(
        users, model, mcp_server.url, tools=["math.add", "math.whoami"]
    )
    model.script(
        Scenario.calls(
            FakeToolCall("math__add", ('{"a": 2, "b": 40}',), id="call_add"),
            FakeToolCall("math__whoami", ("{}",), id="call_who"),
        ),
        Scenario.tool_results("Sum and caller: "),
    )
    owner = await joined(client_for(thread.id, users[Role.OWNER]))

    await owner.send({"type": "message", "content": "2+40?"})
    frames = await owner.receive_until(until_complete, timeout=20)

    # Offered as <server>__<tool> on the wire (the APIs allow no dots), shown
    # to people as <server>.<tool>.
    first = model.requests[0]
    assert sorted(model.tools_offered(first.body)) == ["math__add", "math__whoami"]
    steps = tool_frames(frames)
    assert steps[0] == (
        "tool_call",
        {"id": "call_add", "name": "math.add", "arguments": {"a": 2, "b": 40}},
    )
    results = {data["id"]: data for kind, data in steps if kind == "tool_result"}
    assert results["call_add"] == {"id": "call_add", "name": "math.add", "output": "42"}
    # The header came from the environment, and its value never shows.
    assert results["call_who"]["output"] == "[redacted]"
    assert frames[-1]["content"]["text"] == "Sum and caller: 42; [redacted]"
    assert TOKEN not in model.last_request.raw_body.decode()


async def test_an_mcp_server_that_is_down_fails_the_run_with_tool_unavailable(
    users, env, model, worker, client_for
):
    with FakeMCPServer() as gone:
        url = gone.url
    thread = await database_sync_to_async(make_thread)(
        users, model, url, tools=["math.add"]
    )
    owner = await joined(client_for(thread.id, users[Role.OWNER]))

    await owner.send({"type": "message", "content": "2+40?"})
    frames = await owner.receive_until(until_complete, timeout=20)

    errors = [frame["content"] for frame in frames if frame["type"] == "error"]
    assert [error["code"] for error in errors] == ["tool_unavailable"]
    assert "math" in errors[0]["message"]
    assert frames[-1]["content"]["status"] == "failed"
    assert model.requests == []  # the model was never called


async def test_an_mcp_server_stopped_mid_run_gives_the_call_an_error(
    users, env, mcp_server, model, worker, client_for
):
    thread = await database_sync_to_async(make_thread)(
        users,
        model,
        mcp_server.url,
        tools=["math.add"],
        approval_required=["math.add"],
    )
    model.script(
        Scenario.calls(FakeToolCall("math__add", ('{"a": 1, "b": 2}',))),
        Scenario.tool_results("Result: "),
    )
    owner = await joined(client_for(thread.id, users[Role.OWNER]))
    await owner.send({"type": "message", "content": "1+2?"})
    request = await owner.receive_type("input_request", timeout=20)
    await asyncio.to_thread(mcp_server.stop)  # discovered, now gone

    await owner.send(
        {
            "type": "input",
            "content": {
                "run_id": request["run_id"],
                "input_id": request["content"]["input_id"],
                "approve": True,
            },
        }
    )
    frames = await owner.receive_until(until_complete, timeout=20)

    (_, result) = tool_frames(frames)[-1]
    assert "tool_unavailable" in result["error"]
    assert frames[-1]["content"]["status"] == "completed"


def test_the_admin_reports_unreachable_servers_and_missing_tools(
    db, env, mcp_server, admin_client
):
    with FakeMCPServer() as gone:
        gone_url = gone.url
    agent = AgentConfig.objects.create(
        name="mcp-admin",
        provider="echo",
        tools=["math.add", "math.nope", "down.x"],
        mcp_servers=[
            {"name": "math", "url": mcp_server.url},
            {"name": "down", "url": gone_url},
        ],
    )

    response = admin_client.get(f"/admin/agents/agentconfig/{agent.pk}/change/")

    shown = [str(message) for message in response.context["messages"]]
    assert "mcp-admin: MCP server 'math' has no tool 'nope'." in shown
    assert any("MCP server 'down' is unreachable" in text for text in shown)
    assert not any("'math' is unreachable" in text for text in shown)


@pytest.mark.parametrize(
    ("servers", "problem"),
    [
        ([{"name": "a.b", "url": "http://x/mcp"}], "no dots"),
        ([{"name": "a", "url": "ftp://x/mcp"}], "http:// or https://"),
        ([{"name": "a"}], "either url"),
        ([{"name": "a", "command": "npx"}], "PARLEY_MCP_ALLOW_STDIO"),
        (
            [{"name": "a", "url": "http://x/mcp", "headers_env": {"X": "sk-literal!"}}],
            "environment variable name",
        ),
        ([{"name": "a", "url": "http://x/mcp", "token": "t"}], "unknown keys token"),
        (
            [
                {"name": "a", "url": "http://x/mcp"},
                {"name": "a", "url": "http://y/mcp"},
            ],
            "used twice",
        ),
    ],
)
def test_bad_mcp_server_entries_are_refused_with_the_reason(db, servers, problem):
    from django.core.exceptions import ValidationError

    agent = AgentConfig(name="x", provider="echo", mcp_servers=servers)
    with pytest.raises(ValidationError) as error:
        agent.full_clean()
    assert problem in error.value.message_dict["mcp_servers"][0]


def test_mcp_tool_names_need_their_server_in_the_config(db):
    from django.core.exceptions import ValidationError

    agent = AgentConfig(
        name="x",
        provider="echo",
        tools=["math.add", "files.*"],
        mcp_servers=[{"name": "math", "url": "http://127.0.0.1:1/mcp"}],
    )
    with pytest.raises(ValidationError) as error:
        agent.full_clean()
    assert "files.*" in error.value.message_dict["tools"][0]
    assert "math.add" not in error.value.message_dict["tools"][0]


def test_stdio_servers_are_allowed_only_by_the_setting(db, settings):
    settings.PARLEY_MCP_ALLOW_STDIO = True
    agent = AgentConfig(
        name="x",
        provider="echo",
        tools=["local.*"],
        mcp_servers=[{"name": "local", "command": "python", "args": ["server.py"]}],
    )
    agent.full_clean()


async def test_a_stdio_server_is_started_and_its_tools_called(settings):
    import sys

    from agents.tools.mcp import mcp_tools_for

    settings.PARLEY_MCP_ALLOW_STDIO = True
    agent = AgentConfig(
        name="x",
        provider="echo",
        tools=["local.shout"],
        tool_timeout_seconds=20,
        mcp_servers=[
            {
                "name": "local",
                "command": sys.executable,
                "args": [
                    "-c",
                    "from tests.fakes.mcp_server import build_server; "
                    "build_server().run('stdio')",
                ],
            }
        ],
    )

    tools = await mcp_tools_for(agent)

    assert list(tools) == ["local.shout"]
    assert await tools["local.shout"].call({"text": "hi"}, None) == "HI"
