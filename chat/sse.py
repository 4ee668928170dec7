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
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import JsonResponse, StreamingHttpResponse
from rest_framework.authtoken.models import Token

from agents.models import FINAL_RUN_STATUSES, Run
from chat.access import QueuedConnection, live_access
from chat.selectors import thread_get_for_user, thread_snapshot
from realtime.errors import ErrorCode, ServiceError
from realtime.eventlog import Event, EventCursor, get_event_log
from realtime.events import new_connection_id, presence_member, presence_news
from realtime.layers import join_thread, leave_thread
from realtime.protocol import StatusFrame, error_frame, frame_json
from restapi.errors import error_body

logger = logging.getLogger(__name__)


class _Stream(QueuedConnection):
    """One SSE response's live side: its events from the event log (overflow
    means resync) and its access (chat/access.py: held while a change is
    checked, ended when access is lost). The response's generator reads
    `queue`: ("event", Event), ("frame", sse bytes), ("lost",) or
    ("closed", sse bytes)."""

    async def access_lost(self, close_code: int, code, message: str) -> None:
        self.held = None
        frame = error_frame(code, message, thread_id=self.thread_id)
        self.queue.put_nowait(("closed", _sse(None, "error", frame_json(frame))))

    async def role_changed(self, role) -> None:
        self.role = role
        frame = StatusFrame(
            content={"state": "role_changed", "role": role.value},
            thread_id=self.thread_id,
        )
        self.queue.put_nowait(("frame", _sse(None, "status", frame_json(frame))))


def _token_of(request) -> str | None:
    kind, _, key = request.headers.get("Authorization", "").partition(" ")
    return key.strip() if kind.lower() == "token" and key.strip() else None


async def _user_of(request):
    key = _token_of(request)
    if key is not None:
        token = await Token.objects.select_related("user").filter(key=key).afirst()
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


def _error(code: ErrorCode, message: str, status: int) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status)


def _end(run_id: str, status: str | None = None) -> bytes:
    body = (
        {"run_id": run_id} if status is None else {"run_id": run_id, "status": status}
    )
    return _sse(None, "end", json.dumps(body))


def _run_ended_status(run_id: str) -> str | None:
    status = Run.objects.filter(pk=run_id).values_list("status", flat=True).first()
    return status if status in FINAL_RUN_STATUSES else None


async def _events(
    thread, stream: _Stream, *, presence: str, last_event_id: int | None, run_id
):
    log = get_event_log()
    thread_id = str(thread.id)
    heartbeat = settings.PARLEY_SSE_HEARTBEAT_SECONDS
    cursor = EventCursor()  # the last event this stream has passed

    def wanted(event: Event) -> bool:
        return run_id is None or event.run_id == run_id

    try:
        yield b"retry: 1000\n\n"
        if last_event_id is None and run_id is not None:
            last_event_id = 0  # a run's stream: its events so far, if the log has them
        replay = await cursor.missed(log, thread_id, last_event_id)
        if replay is None:
            state = await log.thread_state(thread_id)
            snapshot = await sync_to_async(thread_snapshot)(
                thread=thread, log_state=state
            )
            if run_id is not None:
                snapshot = await sync_to_async(_run_snapshot)(run_id, snapshot)
            yield _sse(None, "snapshot", json.dumps(snapshot))
            cursor.last_event_id = state.last_event_id
            if run_id is not None and snapshot.get("ended"):
                yield _end(run_id, snapshot["status"])
                return
        else:
            for event in replay:
                cursor.sent(event)
                if wanted(event):
                    yield _sse(event.event_id, event.type, event.text)
                    if run_id is not None and event.type == "state_complete":
                        yield _end(run_id)
                        return
            if run_id is not None:
                # Resumed at or after the run's end: its last event is behind us.
                ended = await sync_to_async(_run_ended_status)(run_id)
                if ended is not None:
                    yield _end(run_id, ended)
                    return
        while True:
            try:
                item = await asyncio.wait_for(stream.queue.get(), heartbeat)
            except TimeoutError:
                yield b": heartbeat\n\n"
                continue
            kind = item[0]
            if kind == "closed":  # access lost: say why, then end
                yield item[1]
                return
            if kind == "frame":
                yield item[1]
                continue
            event = item[1] if kind == "event" else None
            place = cursor.place(event) if event is not None else EventCursor.GAP
            if place == EventCursor.GAP:  # lost continuity: resume from the cursor
                last = cursor.last_event_id
                yield _sse(None, "resync", json.dumps({"last_event_id": last}))
                return
            if place == EventCursor.SEEN:
                continue
            cursor.sent(event)
            if wanted(event):
                yield _sse(event.event_id, event.type, event.text)
                if run_id is not None and event.type == "state_complete":
                    yield _end(run_id)
                    return
    finally:
        live_access().remove(stream)
        await leave_thread(thread_id, stream)
        try:
            present = await log.presence_set(thread_id, presence, False)
            await presence_news().changed(thread_id, present)
        except Exception as error:  # Redis away: the entry expires by itself
            logger.info("presence of a closed SSE stream not updated: %s", error)


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
    read_at_generation = live_access().generation
    try:
        thread, role = await sync_to_async(thread_get_for_user)(
            thread_id=thread_id, user=user
        )
    except ServiceError as error:
        return _error(error.code, error.message, error.status)
    return await _open(
        request, thread, user, role, read_at_generation=read_at_generation
    )


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
    read_at_generation = live_access().generation
    try:
        thread, role = await sync_to_async(thread_get_for_user)(
            thread_id=run.thread_id, user=user
        )
    except ServiceError:
        return _error(ErrorCode.NOT_FOUND, "No such run.", 404)
    return await _open(
        request,
        thread,
        user,
        role,
        read_at_generation=read_at_generation,
        run_id=str(run.id),
    )


async def _open(request, thread, user, role, *, read_at_generation: int, run_id=None):
    """Count the stream in the thread's presence (the per-thread client limit
    covers sockets and SSE streams alike), subscribe it, then stream."""
    log = get_event_log()
    thread_id = str(thread.id)
    presence = presence_member(new_connection_id(), user, role)
    try:
        present = await log.presence_set(thread_id, presence, True)
    except Exception as error:
        logger.warning("refusing an SSE stream: presence unavailable (%s)", error)
        return _error(ErrorCode.SERVICE_UNAVAILABLE, "Try again shortly.", status=503)
    if len(present) > settings.PARLEY_MAX_CLIENTS_PER_THREAD:
        await log.presence_set(thread_id, presence, False)
        return _error(
            ErrorCode.TOO_MANY_CLIENTS,
            "This thread has as many viewers as it allows; try again later.",
            status=429,
        )
    stream = _Stream(
        thread_id=thread_id, user=user, token_key=_token_of(request), role=role
    )
    live_access().add(stream, read_at_generation=read_at_generation)
    await join_thread(thread_id, stream)
    await presence_news().changed(thread_id, present)
    return _stream(
        _events(
            thread,
            stream,
            presence=presence,
            last_event_id=_last_event_id(request),
            run_id=run_id,
        )
    )


def _is_uuid(value) -> bool:
    import uuid

    try:
        uuid.UUID(str(value))
        return True
    except ValueError:
        return False
