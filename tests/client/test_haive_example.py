"""A client written from the Haive document's example (shared/reference: a
`config` frame first, then a message, read until `state_complete`) works against
`/ws/agents/echo/` unchanged, but for the token in a header instead of the URL."""

from __future__ import annotations

import json

import websockets


async def haive_example(uri: str, token: str) -> tuple[list[str], list[dict]]:
    """The example's client, as written there (printing replaced by keeping)."""
    printed, others = [], []
    async with websockets.connect(
        uri, additional_headers={"Authorization": f"Token {token}"}
    ) as websocket:
        # Send initial configuration
        await websocket.send(
            json.dumps(
                {
                    "type": "config",
                    "content": {
                        "agent_name": "echo",
                        "provider": "openai",
                        "model": "gpt-4",
                        "stream": True,
                    },
                }
            )
        )
        # Send a message to the agent
        await websocket.send(
            json.dumps(
                {"type": "message", "content": "Analyze this text for sentiment"}
            )
        )
        # Receive streaming responses
        while True:
            response = json.loads(await websocket.recv())
            if response["type"] == "response":
                printed.append(response["content"])
            elif response["type"] == "state_complete":
                others.append(response)
                break
            else:
                others.append(response)
    return printed, others


async def test_the_haive_example_client_streams_a_reply_from_the_agent_socket(
    embedded,
):
    uri = embedded.url.replace("http", "ws") + "/ws/agents/echo/"
    printed, others = await haive_example(uri, embedded.tokens["owner"])

    assert "".join(printed) == "Analyze this text for sentiment"
    assert others[-1]["content"]["status"] == "completed"
    # The provider and model it asks for are not this agent's to change: the
    # config is refused with a clear error, which the example simply skips.
    errors = [frame for frame in others if frame["type"] == "error"]
    assert [error["content"]["code"] for error in errors] == ["invalid_config"]
    assert "provider" in errors[0]["content"]["message"]
