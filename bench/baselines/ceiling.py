"""The ceiling: a bare ASGI app (no channel layer, database or worker process)
that generates the same timestamped tokens at the same pace and pushes the same
frames to every socket of the thread. Run: ``daphne bench.baselines.ceiling:application``.
"""

import asyncio
import json
import time
import uuid

from bench.baselines.frames import frame, stamped

sockets_by_thread: dict[str, set] = {}
tasks: set[asyncio.Task] = set()


async def broadcast(thread_id: str, payload: dict) -> None:
    text = json.dumps(payload)
    for send in list(sockets_by_thread.get(thread_id, ())):
        try:
            await send({"type": "websocket.send", "text": text})
        except Exception:  # the socket went away mid-stream
            sockets_by_thread.get(thread_id, set()).discard(send)


async def stream_run(thread_id: str, text: str, rate: float) -> None:
    run_id = str(uuid.uuid4())
    interval = 1.0 / rate if rate > 0 else 0.0
    next_at = time.monotonic()
    parts = []
    for index, word in enumerate(text.split()):
        # Token i is due at start + i x interval, token 0 at once (as Parley's
        # echo agent): every system runs the same schedule.
        if interval and index:
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        token = stamped(word)
        parts.append(token)
        await broadcast(
            thread_id,
            frame(
                "response",
                token,
                thread_id=thread_id,
                run_id=run_id,
                stream_index=index,
            ),
        )
    done = {"text": "".join(parts), "status": "completed", "usage": {}}
    await broadcast(
        thread_id, frame("state_complete", done, thread_id=thread_id, run_id=run_id)
    )


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    parts = scope["path"].strip("/").split("/")
    if len(parts) != 3 or parts[:2] != ["ws", "threads"]:
        await send({"type": "websocket.close", "code": 4404})
        return
    thread_id = parts[2]
    members = sockets_by_thread.setdefault(thread_id, set())
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.connect":
            accept = {"type": "websocket.accept"}
            if "parley" in scope.get("subprotocols", []):
                accept["subprotocol"] = "parley"
            await send(accept)
            members.add(send)
        elif kind == "websocket.receive":
            data = json.loads(message.get("text") or "{}")
            if data.get("type") == "message":
                content = data.get("content", "")
                await broadcast(
                    thread_id, frame("message", content, thread_id=thread_id)
                )
                task = asyncio.create_task(
                    stream_run(
                        thread_id, content, float(data.get("tokens_per_second", 50))
                    )
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        elif kind == "websocket.disconnect":
            members.discard(send)
            if not members:
                sockets_by_thread.pop(thread_id, None)
            return
