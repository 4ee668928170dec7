"""`/ws/agents/<agent name>/`: a socket that opens a thread with the agent for
the caller (or goes on with `?thread_id=`), then is a thread socket."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token

from chat.models import Role, Thread

pytestmark = pytest.mark.django_db(transaction=True)


def complete(frame: dict) -> bool:
    return frame["type"] == "state_complete"


async def closed_with(client) -> int:
    """The close code a refused socket ends with (frames before it skipped)."""
    await client.connect()
    output = await client.communicator.receive_output(timeout=5)
    while output["type"] == "websocket.send":
        output = await client.communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close"
    return output["code"]


async def test_an_agent_socket_opens_a_thread_of_the_callers_and_streams(
    users, echo_agent, worker, client_for
):
    owner = users[Role.OWNER]
    client = client_for(None, owner, path=f"/ws/agents/{echo_agent.name}/")
    connected, snapshot = await client.join()
    thread_id = connected["thread_id"]
    thread = await Thread.objects.select_related("owner", "agent").aget(pk=thread_id)
    assert thread.owner == owner and thread.agent == echo_agent
    assert connected["content"]["role"] == "owner"
    assert snapshot["content"]["messages"] == []

    await client.send({"type": "message", "content": "hello there"})
    done = (await client.receive_until(complete))[-1]
    assert done["content"]["text"] == "hello there"
    assert done["thread_id"] == thread_id


async def test_an_agent_socket_goes_on_with_a_thread_the_caller_may_read(
    thread, users, client_for
):
    client = client_for(
        None,
        users[Role.PARTICIPANT],
        path=f"/ws/agents/{thread.agent.name}/",
        query=f"thread_id={thread.id}",
    )
    connected, _ = await client.join()
    assert connected["thread_id"] == str(thread.id)
    assert connected["content"]["role"] == "participant"
    assert await Thread.objects.acount() == 1  # no new thread

    stranger = client_for(
        None,
        users["stranger"],
        path=f"/ws/agents/{thread.agent.name}/",
        query=f"thread_id={thread.id}",
    )
    assert await closed_with(stranger) == 4403


async def test_an_unknown_agent_is_an_error_then_4404_and_no_thread(users, client_for):
    client = client_for(None, users[Role.OWNER], path="/ws/agents/nobody/")
    await client.connect()
    error = await client.receive()
    assert error["type"] == "error" and error["content"]["code"] == "agent_not_found"
    assert (await client.communicator.receive_output())["code"] == 4404
    assert await Thread.objects.acount() == 0


async def test_an_agent_socket_needs_a_login(echo_agent, client_for):
    client = client_for(None, None, path=f"/ws/agents/{echo_agent.name}/")
    assert await closed_with(client) == 4401


async def test_an_agent_socket_with_an_api_token_opens_the_tokens_users_thread(
    users, echo_agent, client_for
):
    token = await Token.objects.acreate(user=users[Role.PARTICIPANT])
    client = client_for(
        None,
        None,
        path=f"/ws/agents/{echo_agent.name}/",
        headers=[(b"authorization", f"Token {token.key}".encode())],
    )
    connected, _ = await client.join()
    thread = await Thread.objects.aget(pk=connected["thread_id"])
    assert thread.owner_id == users[Role.PARTICIPANT].pk
