"""The tutorial-style consumer: join the thread's group, forward every group
message to the socket, hand user messages to a worker channel."""

import json
import zlib

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from bench.baselines.frames import frame


def worker_channel(thread_id: str) -> str:
    return f"{settings.RUN_CHANNEL}-{zlib.crc32(thread_id.encode()) % settings.WORKERS}"


class ThreadConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.thread_id = self.scope["url_route"]["kwargs"]["thread_id"]
        self.group = f"thread_{self.thread_id}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        subprotocols = self.scope.get("subprotocols") or []
        await self.accept("parley" if "parley" in subprotocols else None)

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data=None) -> None:
        data = json.loads(text_data or "{}")
        if data.get("type") == "ping":
            await self.send(
                text_data=json.dumps(frame("pong", None, thread_id=self.thread_id))
            )
            return
        if data.get("type") != "message":
            return
        content = data.get("content", "")
        await self.channel_layer.group_send(
            self.group,
            {
                "type": "chat.frame",
                "frame": frame("message", content, thread_id=self.thread_id),
            },
        )
        await self.channel_layer.send(
            worker_channel(self.thread_id),
            {
                "type": "run.start",
                "thread_id": self.thread_id,
                "text": content,
                "tokens_per_second": data.get("tokens_per_second", 50),
            },
        )

    async def chat_frame(self, event: dict) -> None:
        await self.send(text_data=json.dumps(event["frame"]))


class ShortcutThreadConsumer(ThreadConsumer):
    """Channels 4.2+ runs ``aclose_old_connections()`` (a thread-pool hop) before
    every message; streaming frames never touch the database, so skip it."""

    async def dispatch(self, message: dict) -> None:
        if message["type"] == "chat.frame":
            await self.chat_frame(message)
        else:
            await super().dispatch(message)
