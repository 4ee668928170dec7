"""Server-Sent Events: a run's or a thread's events over plain HTTP.

`GET /api/runs/{id}/stream/` and `GET /api/threads/{id}/stream/` send the same
frames as the socket, one SSE event each (`id:` = event_id, `event:` = frame
type, `data:` = the frame JSON), honour `Last-Event-ID` (header or
`?last_event_id=`), send a heartbeat comment every
PARLEY_SSE_HEARTBEAT_SECONDS, and the run stream ends with `event: end` once
the run has ended. A run's events stay in the thread's event log for
PARLEY_EVENT_LOG_TTL_SECONDS after its last event, so late subscribers drain
them; past that (or after the log was lost) they get `event: snapshot`.
"""

from __future__ import annotations

import asyncio
import json

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import JsonResponse, StreamingHttpResponse
from rest_framework.authtoken.models import Token

from agents.models import FINAL_RUN_STATUSES, Run
from chat.api_errors import error_body
from chat.errors import ErrorCode, ServiceError
from chat.eventlog import get_event_log
from chat.selectors import thread_get_for_user, thread_snapshot

QUEUE_LIMIT = 10_000


class _QueueSubscriber:
    """Collects live events for one SSE response; overflow means resync."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()
        self.lost = False

    async def deliver(self, event_id: int, payload: str) -> None:
        if self.queue.qsize() >= QUEUE_LIMIT:
            self.lost_continuity()
            return
        self.queue.put_nowait((event_id, payload))

    def lost_continuity(self) -> None:
        self.lost = True
        self.queue.put_nowait(None)


async def _user_of(request):
    header = request.headers.get("Authorization", "")
    kind, _, key = header.partition(" ")
    if kind.lower() == "token" and key:
        token = (
            await Token.objects.select_related("user").filter(key=key.strip()).afirst()
        )
        return token.user if token and token.user.is_active else None
    user = await request.auser()
    return user if user.is_authenticated else None


def _last_event_id(request) -> int | None:
    value = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _sse(event_id: int | None, event: str, data: str) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


def _type_of(payload: str) -> str:
    return payload[9 : payload.index('"', 9)]  # payloads start with {"type":"


def _error(code: ErrorCode, message: str, status: int) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status)


async def _events(thread, *, last_event_id: int | None, run_id: str | None):
    log = get_event_log()
    thread_id = str(thread.id)
    subscriber = _QueueSubscriber()
    await log.subscribe(thread_id, subscriber)
    marker = f'"run_id":"{run_id}"' if run_id else None
    heartbeat = settings.PARLEY_SSE_HEARTBEAT_SECONDS
    last_sent = 0

    def wanted(payload: str) -> bool:
        return marker is None or marker in payload

    try:
        yield b"retry: 1000\n\n"
        replay = None
        if last_event_id is not None:
            replay = await log.read_after(thread_id, last_event_id)
        elif run_id is not None:
            replay = await log.read_after(thread_id, 0)  # the run's events so far
        if replay is None:
            state = await log.thread_state(thread_id)
            snapshot = await sync_to_async(thread_snapshot)(
                thread=thread, log_state=state
            )
            if run_id is not None:
                snapshot = await sync_to_async(_run_snapshot)(run_id, snapshot)
            yield _sse(None, "snapshot", json.dumps(snapshot))
            last_sent = state.last_event_id
            if run_id is not None and snapshot.get("ended"):
                yield _sse(
                    None,
                    "end",
                    json.dumps({"run_id": run_id, "status": snapshot["status"]}),
                )
                return
        else:
            last_sent = last_event_id or 0
            for event_id, payload in replay:
                last_sent = event_id
                if wanted(payload):
                    yield _sse(event_id, _type_of(payload), payload)
                    if marker and _type_of(payload) == "state_complete":
                        yield _sse(None, "end", json.dumps({"run_id": run_id}))
                        return
        while True:
            try:
                item = await asyncio.wait_for(subscriber.queue.get(), heartbeat)
            except TimeoutError:
                yield b": heartbeat\n\n"
                continue
            if item is None:  # lost continuity: let the client resume from last_sent
                yield _sse(None, "resync", json.dumps({"last_event_id": last_sent}))
                return
            event_id, payload = item
            if event_id <= last_sent:
                continue
            last_sent = event_id
            if wanted(payload):
                kind = _type_of(payload)
                yield _sse(event_id, kind, payload)
                if marker and kind == "state_complete":
                    yield _sse(None, "end", json.dumps({"run_id": run_id}))
                    return
    finally:
        await log.unsubscribe(thread_id, subscriber)


def _run_snapshot(run_id: str, snapshot: dict) -> dict:
    run = Run.objects.get(pk=run_id)
    ended = run.status in FINAL_RUN_STATUSES
    text = next(
        (
            m["text"]
            for m in snapshot["messages"]
            if m["run_id"] == run_id and m["role"] == "assistant"
        ),
        None,
    )
    if text is None:
        text = next((r["text"] for r in snapshot["runs"] if r["run_id"] == run_id), "")
    return {
        "run_id": run_id,
        "status": run.status,
        "ended": ended,
        "text": text,
        "last_event_id": snapshot["last_event_id"],
    }


def _stream(generator) -> StreamingHttpResponse:
    response = StreamingHttpResponse(generator, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def thread_stream(request, thread_id):
    user = await _user_of(request)
    if user is None:
        return _error(
            ErrorCode.NOT_AUTHENTICATED,
            "Authentication credentials were not provided.",
            401,
        )
    try:
        thread, _ = await sync_to_async(thread_get_for_user)(
            thread_id=thread_id, user=user
        )
    except ServiceError as error:
        return _error(error.code, error.message, error.status)
    return _stream(_events(thread, last_event_id=_last_event_id(request), run_id=None))


async def run_stream(request, run_id):
    user = await _user_of(request)
    if user is None:
        return _error(
            ErrorCode.NOT_AUTHENTICATED,
            "Authentication credentials were not provided.",
            401,
        )
    run = await Run.objects.filter(pk=run_id).afirst() if _is_uuid(run_id) else None
    if run is None:
        return _error(ErrorCode.NOT_FOUND, "No such run.", 404)
    try:
        thread, _ = await sync_to_async(thread_get_for_user)(
            thread_id=run.thread_id, user=user
        )
    except ServiceError:
        return _error(ErrorCode.NOT_FOUND, "No such run.", 404)
    return _stream(
        _events(thread, last_event_id=_last_event_id(request), run_id=str(run.id))
    )


def _is_uuid(value) -> bool:
    import uuid

    try:
        uuid.UUID(str(value))
        return True
    except ValueError:
        return False
