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
"""

from __future__ import annotations

import asyncio
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


async def stream_reply(writer: asyncio.StreamWriter, body: dict) -> None:
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
            request_line, *lines = head.split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines if line)
            }
            length = int(headers.get("content-length") or 0)
            body = json.loads(await reader.readexactly(length)) if length else {}
            if method != "POST" or not path.endswith("/chat/completions"):
                await respond_json(writer, "404 Not Found", {"error": {}})
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
