"""A fake OpenAI-compatible server for the bench's `openai` capacity line.

    python -m bench.fake_openai PORT

Its own process, so Parley's worker streams over real HTTP from a real server
and any lag of the worker shows. ``POST /v1/chat/completions`` with
``"stream": true`` answers in the Chat Completions Server-Sent Events format
(chunked ``data: {chat.completion.chunk}`` events, a usage chunk when
``stream_options.include_usage``, then ``data: [DONE]``; the shape
tests/fakes/llm_servers.py uses): it echoes the last user message word by word
at the body's ``tokens_per_second`` (default 50; the agent's ``extra_params``
reach the body), the first word at once, word i due at request + i / rate.
Every word is stamped ``word@<CLOCK_MONOTONIC ns>`` when it is written, like the
echo agent's ``timestamp_tokens``, so the bench's stamp latency starts here.

Tool calling (the `toolstep` scenario), in the same wire format: a request that
offers the ``calculate`` tool and whose last message is the user's streams a
tool call instead of text (``tool_calls`` deltas: the id and name first, the
arguments ``{"expression": "6*7"}`` in two pieces, finish_reason
``tool_calls``); a request whose last message is a ``tool`` result streams the
echo as above, then `` = <the tool's output>`` right after the last word (so
its pace is the plain reply's). A request without tools is answered as before,
byte for byte. For each tool call it records when its stream ended and when
the request carrying its result back arrived (CLOCK_MONOTONIC ns), beside when
the request it answered arrived: ``GET /stats`` returns those pairs, ``POST
/stats/reset`` forgets them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import sys
import time

WORD = re.compile(r"\S+\s*|\s+")
CHUNK = (
    '{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,'
    '"model":"bench","choices":[{"index":0,"delta":%s,"finish_reason":%s}]}'
)
USAGE = (
    '{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,'
    '"model":"bench","choices":[],"usage":{"prompt_tokens":%d,'
    '"completion_tokens":%d,"total_tokens":%d}}'
)


TOOL_NAME = "calculate"
# The arguments as the model streams them: in two pieces, as real servers do.
TOOL_ARGUMENT_PIECES = ('{"expression"', ': "6*7"}')
TOOL_CALL_IDS = itertools.count(1)
# tool call id -> {"ended_ns": its stream's end, "next_request_ns": the arrival
# of the request carrying its result, None until then}
TOOL_CALLS: dict[str, dict] = {}


def event(data: str) -> bytes:
    """One SSE event as one HTTP chunk."""
    payload = f"data: {data}\n\n".encode()
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


def last_user_text(body: dict) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(part.get("text", "") for part in content)
            return str(content or "")
    return ""


def offers_tool(body: dict) -> bool:
    return any(
        isinstance(tool, dict) and (tool.get("function") or {}).get("name") == TOOL_NAME
        for tool in body.get("tools") or []
    )


# The turns a tool-offering request is answered by the tool path after: the
# user's (a tool call) and a tool's (the text, with the result).
TURNS = ("user", "tool")


def last_role(body: dict) -> str | None:
    messages = body.get("messages") or []
    return (
        messages[-1].get("role")
        if messages and isinstance(messages[-1], dict)
        else None
    )


def trailing_tool_results(body: dict) -> list[dict]:
    """The tool messages after the last non-tool message (the results of the
    model's last tool calls), oldest first; none when the last is not a tool's."""
    results = []
    for message in reversed(body.get("messages") or []):
        if not isinstance(message, dict) or message.get("role") != "tool":
            break
        results.append(message)
    return results[::-1]


def content_text(content) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content)
    return str(content or "")


async def stream_tool_call(
    writer: asyncio.StreamWriter, body: dict, requested_ns: int
) -> None:
    """A reply that asks for ``calculate``, as the Chat Completions API streams it."""
    call_id = f"call_bench_{next(TOOL_CALL_IDS)}"
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    writer.write(event(CHUNK % ('{"role":"assistant","content":null}', "null")))
    opening = {
        "index": 0,
        "id": call_id,
        "type": "function",
        "function": {"name": TOOL_NAME, "arguments": ""},
    }
    writer.write(event(CHUNK % (json.dumps({"tool_calls": [opening]}), "null")))
    for piece in TOOL_ARGUMENT_PIECES:
        more = {"index": 0, "function": {"arguments": piece}}
        writer.write(event(CHUNK % (json.dumps({"tool_calls": [more]}), "null")))
    writer.write(event(CHUNK % ("{}", '"tool_calls"')))
    if (body.get("stream_options") or {}).get("include_usage"):
        writer.write(event(USAGE % (1, 1, 2)))
    writer.write(event("[DONE]") + b"0\r\n\r\n")
    await writer.drain()
    TOOL_CALLS[call_id] = {
        "requested_ns": requested_ns,
        "ended_ns": time.monotonic_ns(),
        "next_request_ns": None,
    }


def stats() -> dict:
    pairs = [
        {
            "id": call_id,
            "requested_ns": times["requested_ns"],
            "ended_ns": times["ended_ns"],
            "next_request_ns": times["next_request_ns"],
            "latency_ms": None
            if times["next_request_ns"] is None
            else round((times["next_request_ns"] - times["ended_ns"]) / 1e6, 3),
        }
        for call_id, times in TOOL_CALLS.items()
    ]
    return {
        "tool_calls": pairs,
        "answered": sum(1 for pair in pairs if pair["latency_ms"] is not None),
        "unanswered": sum(1 for pair in pairs if pair["latency_ms"] is None),
    }


async def stream_reply(
    writer: asyncio.StreamWriter, body: dict, tail: str = ""
) -> None:
    words = WORD.findall(last_user_text(body))
    rate = float(body.get("tokens_per_second") or 50)
    interval = 1.0 / rate if rate > 0 else 0.0
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    writer.write(event(CHUNK % ('{"role":"assistant","content":""}', "null")))
    started = time.monotonic()
    for index, word in enumerate(words):
        if interval and index:
            delay = started + index * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        stripped = word.rstrip()
        token = f"{stripped}@{time.monotonic_ns()}{word[len(stripped) :]}"
        writer.write(event(CHUNK % (json.dumps({"content": token}), "null")))
        await writer.drain()
    if tail:
        writer.write(event(CHUNK % (json.dumps({"content": tail}), "null")))
    writer.write(event(CHUNK % ("{}", '"stop"')))
    if (body.get("stream_options") or {}).get("include_usage"):
        writer.write(event(USAGE % (len(words), len(words), 2 * len(words))))
    writer.write(event("[DONE]") + b"0\r\n\r\n")
    await writer.drain()


async def respond_json(writer: asyncio.StreamWriter, status: str, doc: dict) -> None:
    payload = json.dumps(doc).encode()
    writer.write(
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await writer.drain()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:  # keep-alive: one request after another
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            arrived_ns = time.monotonic_ns()
            request_line, *lines = head.split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines if line)
            }
            length = int(headers.get("content-length") or 0)
            body = json.loads(await reader.readexactly(length)) if length else {}
            if method == "GET" and path == "/stats":
                await respond_json(writer, "200 OK", stats())
            elif method == "POST" and path == "/stats/reset":
                TOOL_CALLS.clear()
                await respond_json(writer, "200 OK", stats())
            elif method != "POST" or not path.endswith("/chat/completions"):
                await respond_json(writer, "404 Not Found", {"error": {}})
            elif body.get("stream") and offers_tool(body) and last_role(body) in TURNS:
                results = trailing_tool_results(body)
                for result in results:
                    times = TOOL_CALLS.get(str(result.get("tool_call_id")))
                    if times is not None and times["next_request_ns"] is None:
                        times["next_request_ns"] = arrived_ns
                if results:
                    outputs = "; ".join(content_text(r.get("content")) for r in results)
                    await stream_reply(writer, body, tail=f" = {outputs}")
                else:
                    await stream_tool_call(writer, body, arrived_ns)
            elif body.get("stream"):
                await stream_reply(writer, body)
            else:
                text = "".join(WORD.findall(last_user_text(body)))
                message = {"role": "assistant", "content": text}
                await respond_json(
                    writer,
                    "200 OK",
                    {
                        "id": "chatcmpl-bench",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "bench",
                        "choices": [
                            {"index": 0, "message": message, "finish_reason": "stop"}
                        ],
                    },
                )
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    print(f"fake OpenAI server on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
