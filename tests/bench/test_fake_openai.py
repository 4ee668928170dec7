"""bench/fake_openai.py's tool-call path, read by the official `openai` SDK.

The bench's `toolstep` scenario relies on it: a request offering `calculate`
gets a streamed tool call, the follow-up carrying the tool's result gets text,
and ``/stats`` pairs the end of the tool-call stream with the follow-up's
arrival. The fake runs as the bench runs it, a process of its own on a port.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI

from tests.eventually import eventually_sync

ROOT = Path(__file__).resolve().parents[2]
CALCULATE = {
    "type": "function",
    "function": {
        "name": "calculate",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture
def fake_openai_url():
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_openai", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        eventually_sync(
            lambda: answers(port) or server.poll() is not None,
            timeout=20,
            what="the fake OpenAI server listening",
        )
        assert server.poll() is None, server.stderr.read().decode()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


async def test_a_tool_call_streams_then_its_result_gets_the_text(fake_openai_url):
    client = AsyncOpenAI(
        api_key="not-needed", base_url=f"{fake_openai_url}/v1", max_retries=0
    )
    question = [{"role": "user", "content": "what is six times seven"}]
    async with client:
        first = await client.chat.completions.create(
            model="bench",
            messages=question,
            tools=[CALCULATE],
            stream=True,
            extra_body={"tokens_per_second": 0},
        )
        calls: dict[int, dict] = {}
        finish_reasons, text = [], ""
        async for chunk in first:
            for choice in chunk.choices:
                text += choice.delta.content or ""
                for delta in choice.delta.tool_calls or []:
                    call = calls.setdefault(
                        delta.index, {"id": "", "name": "", "arguments": ""}
                    )
                    call["id"] += delta.id or ""
                    if delta.function is not None:
                        call["name"] += delta.function.name or ""
                        call["arguments"] += delta.function.arguments or ""
                if choice.finish_reason:
                    finish_reasons.append(choice.finish_reason)

        assert text == ""
        assert finish_reasons == ["tool_calls"]
        assert list(calls) == [0]
        call = calls[0]
        assert call["name"] == "calculate"
        assert call["arguments"] == '{"expression": "6*7"}'
        assert call["id"]

        follow_up = await client.chat.completions.create(
            model="bench",
            messages=[
                *question,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call["id"],
                            "type": "function",
                            "function": {
                                "name": "calculate",
                                "arguments": call["arguments"],
                            },
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": call["id"], "content": "42"},
            ],
            tools=[CALCULATE],
            stream=True,
            extra_body={"tokens_per_second": 0},
        )
        reply = ""
        async for chunk in follow_up:
            for choice in chunk.choices:
                reply += choice.delta.content or ""
                assert not choice.delta.tool_calls

    assert reply.startswith("what@")
    assert reply.endswith(" = 42")
    stats = httpx.get(f"{fake_openai_url}/stats").json()
    assert stats["answered"] == 1 and stats["unanswered"] == 0
    (pair,) = stats["tool_calls"]
    assert pair["id"] == call["id"]
    assert pair["next_request_ns"] > pair["ended_ns"]
    assert pair["latency_ms"] >= 0

    reset = httpx.post(f"{fake_openai_url}/stats/reset").json()
    assert reset["tool_calls"] == []
