"""The tutorial-style agent worker: one task per run, one ``group_send`` per token."""

import asyncio
import time
import uuid

from channels.consumer import AsyncConsumer

from bench.baselines.frames import frame, stamped


async def stream_run(layer, thread_id: str, text: str, rate: float) -> None:
    group = f"thread_{thread_id}"
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
        await layer.group_send(
            group,
            {
                "type": "chat.frame",
                "frame": frame(
                    "response",
                    token,
                    thread_id=thread_id,
                    run_id=run_id,
                    stream_index=index,
                ),
            },
        )
    done = {"text": "".join(parts), "status": "completed", "usage": {}}
    await layer.group_send(
        group,
        {
            "type": "chat.frame",
            "frame": frame("state_complete", done, thread_id=thread_id, run_id=run_id),
        },
    )


class RunWorker(AsyncConsumer):
    tasks: set[asyncio.Task] = set()

    async def run_start(self, message: dict) -> None:
        task = asyncio.create_task(
            stream_run(
                self.channel_layer,
                message["thread_id"],
                message["text"],
                float(message.get("tokens_per_second", 50)),
            )
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
