"""The thread socket: `/ws/threads/{id}/`.

Inbound frames are parsed by realtime/protocol.py and dispatched by type to one
handler each, which calls one service. Outbound thread events arrive from the
event log (realtime/eventlog.py) through `deliver`, already serialized, and are
forwarded in event_id order; a socket that falls behind (its send buffer
passes PARLEY_SEND_BUFFER_LIMIT_BYTES) stops receiving events and, once it
drains, is resynchronised with one snapshot instead of the backlog.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.utils import await_many_dispatch
from django.conf import settings

from chat import services
from chat.access import live_access
from chat.admission import message_admission
from chat.auth import SUBPROTOCOL, credential_sockets, origin_allowed
from chat.connectcache import socket_access, socket_snapshot
from chat.models import Role
from chat.permissions import can_read, can_write
from chat.selectors import message_content
from ops import metrics
from ops.logs import log_context_start
from realtime import errors as close_codes
from realtime.errors import ErrorCode, ServiceError
from realtime.eventlog import Event, EventCursor, get_event_log
from realtime.events import (
    call_service,
    new_connection_id,
    presence_member,
    presence_news,
    presence_users,
)
from realtime.layers import join_thread, leave_thread
from realtime.protocol import (
    OBSERVER_FRAME_TYPES,
    CancelIn,
    ConfigIn,
    InputIn,
    MessageContent,
    MessageFrame,
    MessageIn,
    PingIn,
    PongFrame,
    ProtocolError,
    ResumeIn,
    StatusFrame,
    error_frame,
    frame_json,
    parse_client_frame,
    request_id_of,
)
from realtime.retry import Backoff
from realtime.transport import SocketTransport

logger = logging.getLogger(__name__)

# Live events buffered while a socket replays or loads a snapshot; past this the
# socket resyncs again rather than hold more.
MAX_PENDING_EVENTS = 5_000


class ThreadConsumer(AsyncWebsocketConsumer):
    thread_id: str | None = None

    async def __call__(self, scope, receive, send):
        # As channels' AsyncConsumer.__call__, without a channel-layer channel
        # per socket: the one channel-layer message a socket gets, a revoked
        # credential, comes through the process's CredentialSockets
        # (chat/auth.py). This also keeps sockets open while Redis restarts.
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        self.connection_id = new_connection_id()
        self.credentials = None
        try:
            await await_many_dispatch([receive], self.dispatch)
        except StopConsumer:
            pass

    async def dispatch(self, message: dict) -> None:
        # As channels' dispatch, without its hop to the database thread to close
        # stale connections before every message: each database call here goes
        # through call_service, which does that around the call itself.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- connect / disconnect ------------------------------------------------
    async def connect(self) -> None:
        # The socket under this consumer (realtime/transport.py owns its internals).
        self._transport = SocketTransport.for_send(self.base_send)
        self.thread_id = None
        self.closed = False
        self.subscribed = False
        self.cursor = EventCursor()  # the last event sent to this socket
        self.syncing = False
        self.pending: list[Event] = []
        self.resync_pending = False
        self.resync_task: asyncio.Task | None = None
        # Live events held while an access change is checked (chat/access.py).
        self.access_held = False
        self.live = None
        if not origin_allowed(self.scope):
            await self.close()  # before accept: the handshake is refused (403)
            return
        offered = self.scope.get("subprotocols", [])
        self.subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
        token_key = self.scope.get("auth_token")
        user = self.scope.get("user")
        if token_key is None and (user is None or not user.is_authenticated):
            await self._refuse(close_codes.CLOSE_NOT_AUTHENTICATED)
            return
        read_at_generation = live_access().generation
        thread_id = await self.thread_to_open(user=user, token_key=token_key)
        if thread_id is None:
            return  # refused (thread_to_open said why)
        access = await socket_access(
            thread_id=thread_id, user=user, token_key=token_key
        )
        if not access.user.is_authenticated:
            await self._refuse(close_codes.CLOSE_NOT_AUTHENTICATED)
            return
        if access.thread is None or not can_read(access.role):
            await self._refuse(
                close_codes.CLOSE_NOT_FOUND
                if access.thread is None
                else close_codes.CLOSE_FORBIDDEN
            )
            return
        self.thread, self.role = access.thread, access.role
        self.thread_id = str(self.thread.id)
        self.user = user = self.scope["user"] = access.user
        self.user_id, self.token_key = user.pk, token_key
        log_context_start(
            request_id=self.connection_id, thread_id=self.thread_id, user_id=user.pk
        )
        log = get_event_log()
        self.presence_member = presence_member(self.connection_id, user, self.role)
        try:
            present = await log.presence_set(self.thread_id, self.presence_member, True)
        except Exception as error:  # Redis unreachable: a retryable refusal
            logger.warning("refusing a socket: presence unavailable (%s)", error)
            await self._refuse_unavailable()
            return
        if len(present) > settings.PARLEY_MAX_CLIENTS_PER_THREAD:
            await log.presence_set(self.thread_id, self.presence_member, False)
            await self.accept(self.subprotocol)
            await self.send_frame(
                error_frame(
                    ErrorCode.TOO_MANY_CLIENTS,
                    "This thread has as many viewers as it allows; try again later.",
                    thread_id=self.thread_id,
                )
            )
            await self.close(close_codes.CLOSE_TOO_MANY_CLIENTS)
            return
        await self.accept(self.subprotocol)
        group = self.scope.get("credential_group")
        if group:
            self.credentials = credential_sockets()
            if self.credentials is not None:
                await self.credentials.add(group, self)
        await self.send_frame(
            StatusFrame(
                content={
                    "state": "connected",
                    "role": self.role.value,
                    "user": user.username,
                },
                thread_id=self.thread_id,
            )
        )
        self.live = live_access()
        self.live.add(self, read_at_generation=read_at_generation)
        metrics.socket_opened()
        # Held from here: what arrives while subscribing is in the snapshot (or
        # the replay) that sync() reads next, which comes right after `connected`.
        self.syncing = True
        try:
            await join_thread(self.thread_id, self)
        except Exception as error:  # the subscriber could not reach Redis in time
            logger.warning("refusing a socket: events unavailable (%s)", error)
            await leave_thread(self.thread_id, self)
            await self._refuse_unavailable(accepted=True)
            return
        self.subscribed = True
        try:
            await self.sync(self._query_last_event_id(), present=present)
        except Exception as error:  # the log unreadable (Redis restarting)
            logger.warning("refusing a socket: its snapshot is unavailable (%s)", error)
            await self._refuse_unavailable(accepted=True)
            return
        await presence_news().changed(self.thread_id, present)

    async def thread_to_open(self, *, user, token_key: str | None) -> str | None:
        """The thread this socket is for: the one its URL names."""
        return self.scope["url_route"]["kwargs"]["thread_id"]

    async def _refuse(self, code: int) -> None:
        await self.accept(self.subprotocol)
        await self.close(code)

    async def _refuse_unavailable(self, *, accepted: bool = False) -> None:
        """Close with CLOSE_TRY_AGAIN: the client backs off and reconnects."""
        if not accepted:
            await self.accept(self.subprotocol)
        await self.send_frame(
            error_frame(
                ErrorCode.SERVICE_UNAVAILABLE,
                "The server cannot take this connection right now; reconnect shortly.",
                thread_id=self.thread_id,
            )
        )
        await self.close(close_codes.CLOSE_TRY_AGAIN)

    def _query_last_event_id(self) -> int | None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        try:
            value = int(query.get("last_event_id", [""])[0])
        except ValueError:
            return None
        return value if value >= 0 else None

    async def disconnect(self, code) -> None:
        self.closed = True
        if self.resync_task is not None:
            self.resync_task.cancel()
        if self.live is not None:
            self.live.remove(self)
            metrics.socket_closed()
        if self.subscribed:
            self.subscribed = False
            await leave_thread(self.thread_id, self)
            log = get_event_log()
            try:
                present = await log.presence_set(
                    self.thread_id, self.presence_member, False
                )
                await presence_news().changed(self.thread_id, present)
            except Exception as error:  # Redis away: the entry expires by itself
                logger.info("presence of a closed socket not updated: %s", error)
        group = self.scope.get("credential_group")
        if group and self.credentials is not None:
            self.credentials.remove(group, self)

    # --- outbound --------------------------------------------------------------
    async def send_frame(self, frame) -> None:
        await self.send(text_data=frame_json(frame))

    async def _send_event(self, payload: str) -> None:
        """Forward an event frame (already JSON): straight to the socket where
        realtime/transport.py can, else through daphne."""
        transport = self._transport
        if not transport.send_text(payload):
            await transport.send({"type": "websocket.send", "text": payload})

    def backlog_bytes(self) -> int:
        """Bytes queued for this socket and not yet sent (realtime/transport.py)."""
        return self._transport.backlog_bytes()

    async def deliver(self, event: Event) -> None:
        """A live thread event (called by the event log, in event_id order)."""
        if (
            event.event_id == 0
        ):  # an announcement: current news, the snapshot has it too
            if not (
                self.syncing or self.resync_pending or self.access_held or self.closed
            ):
                await self._send_event(event.text)
            return
        if self.resync_pending or self.closed:
            return  # the snapshot that follows holds it
        if self.syncing or self.access_held:
            self.pending.append(event)
            if len(self.pending) > MAX_PENDING_EVENTS:
                self.lost_continuity()
            return
        place = self.cursor.place(event)
        if place == EventCursor.SEEN:
            return
        if place == EventCursor.GAP:
            self.lost_continuity()
            return
        if self.backlog_bytes() > settings.PARLEY_SEND_BUFFER_LIMIT_BYTES:
            self._reader_too_slow()
            return
        await self._send_event(event.text)
        self.cursor.sent(event)

    def _reader_too_slow(self) -> None:
        """Its unsent data passed PARLEY_SEND_BUFFER_LIMIT_BYTES: nothing more
        reaches it until it drains, then one resync (PARLEY_SLOW_CLIENT
        `resync`), or it is closed with 4408 after what it was sent (`close`):
        the client reconnects with its last event id and resumes."""
        if settings.PARLEY_SLOW_CLIENT != "close":
            self.lost_continuity()
            return
        if self.closed:
            return
        self.closed = True  # nothing more reaches this socket
        self.pending = []
        closing = asyncio.get_running_loop().create_task(
            self._transport.close_with(close_codes.CLOSE_TOO_SLOW, "too slow")
        )
        closing.add_done_callback(_log_close_failure)

    def lost_continuity(self) -> None:
        """Drop live events from now on and resync this socket from a snapshot,
        once its send buffer has drained. Nothing is held meanwhile: a stalled
        reader costs no memory beyond its send buffer."""
        self.resync_pending = True
        self.pending = []
        if self.resync_task is None or self.resync_task.done():
            self.resync_task = asyncio.get_running_loop().create_task(self._resync())

    async def _resync(self) -> None:
        backoff = Backoff(0.2)
        while self.resync_pending and not self.closed:
            try:
                limit = settings.PARLEY_SEND_BUFFER_LIMIT_BYTES // 4
                while self.backlog_bytes() > limit:
                    await asyncio.sleep(0.1)
                # From here live events are buffered by sync() until the snapshot
                # is sent; a new loss during it brings us round again.
                self.resync_pending = False
                await self.sync(None, state="resynced")
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the log is unreachable (Redis restarting)
                self.resync_pending = True
                logger.info("resync of thread %s waits: %s", self.thread_id, error)
                await backoff.wait()

    async def sync(
        self,
        last_event_id: int | None,
        *,
        state: str = "snapshot",
        present: list[str] | None = None,
    ) -> None:
        """Bring this socket up to date, then hand over to live delivery.

        Live events are buffered meanwhile; the subscription is active before the
        log is read, so nothing falls between the replay and the live stream.
        `present`: the presence list connect() has just read, if any.
        """
        self.syncing = True
        self.pending = []
        log = get_event_log()
        try:
            events = await self.cursor.missed(log, self.thread_id, last_event_id)
            if events is None:
                if last_event_id is not None:
                    state = "resynced"
                log_state = await log.thread_state(self.thread_id)
                snapshot = await socket_snapshot(
                    thread=self.thread, log_state=log_state
                )
                if present is None:
                    present = await log.presence_set(
                        self.thread_id, self.presence_member, True
                    )
                snapshot["presence"] = presence_users(present)
                await self.send_frame(
                    StatusFrame(
                        content={"state": state, **snapshot}, thread_id=self.thread_id
                    )
                )
                self.cursor.last_event_id = snapshot["last_event_id"]
            else:
                for event in events:
                    await self._send_event(event.text)
                    self.cursor.sent(event)
            if not self.access_held:
                await self._send_pending()
        finally:
            self.syncing = False

    async def _send_pending(self) -> None:
        """Send the live events held meanwhile, in order (a gap: resync)."""
        while self.pending and not self.resync_pending:
            pending, self.pending = self.pending, []
            for event in pending:
                place = self.cursor.place(event)
                if place == EventCursor.SEEN:
                    continue
                if place == EventCursor.GAP:
                    # Missed between log read and live stream: start over.
                    self.pending = []
                    return await self.sync(None, state="resynced")
                await self._send_event(event.text)
                self.cursor.sent(event)

    # --- access changes (chat/access.py) ----------------------------------------
    def hold_live(self) -> None:
        self.access_held = True

    async def release_live(self) -> None:
        self.access_held = False
        if not self.syncing and not self.closed:
            self.syncing = True  # events arriving while these go out queue behind
            try:
                await self._send_pending()
            finally:
                self.syncing = False

    async def access_lost(self, close_code: int, code: ErrorCode, message: str) -> None:
        self.pending = []
        if self.closed:
            return
        self.closed = True  # nothing more reaches this socket
        await self.send_frame(error_frame(code, message, thread_id=self.thread_id))
        await self.close(close_code)

    async def role_changed(self, role: Role) -> None:
        old_member, self.role = self.presence_member, role
        self.presence_member = presence_member(self.connection_id, self.user, role)
        await self.send_frame(
            StatusFrame(
                content={"state": "role_changed", "role": role.value},
                thread_id=self.thread_id,
            )
        )
        log = get_event_log()
        try:
            await log.presence_set(self.thread_id, old_member, False)
            present = await log.presence_set(self.thread_id, self.presence_member, True)
            await presence_news().changed(self.thread_id, present)
        except Exception as error:  # Redis away: the next refresh has it right
            logger.info("presence of a socket's new role not updated: %s", error)

    async def auth_revoked(self, message: dict) -> None:
        await self.send_frame(
            error_frame(
                ErrorCode.NOT_AUTHENTICATED,
                "Your session ended or your token was revoked.",
                thread_id=self.thread_id,
            )
        )
        await self.close(close_codes.CLOSE_NOT_AUTHENTICATED)

    # --- inbound ---------------------------------------------------------------
    async def receive(self, text_data=None, bytes_data=None) -> None:
        if self.thread_id is None:
            return
        if bytes_data is not None:
            await self.send_frame(
                error_frame(
                    ErrorCode.INVALID_FRAME,
                    "Frames are JSON text, not binary.",
                    thread_id=self.thread_id,
                )
            )
            return
        if len(text_data) > settings.PARLEY_MAX_FRAME_BYTES or (
            len(text_data.encode()) > settings.PARLEY_MAX_FRAME_BYTES
        ):
            await self.send_frame(
                error_frame(
                    ErrorCode.FRAME_TOO_LARGE,
                    f"Frames are limited to {settings.PARLEY_MAX_FRAME_BYTES} bytes.",
                    thread_id=self.thread_id,
                )
            )
            await self._close_frame_too_large()
            return
        try:
            frame = parse_client_frame(text_data)
        except ProtocolError as error:
            await self.send_frame(
                error_frame(
                    error.code,
                    error.message,
                    thread_id=self.thread_id,
                    request_id=request_id_of(text_data),
                )
            )
            return
        if frame.type not in OBSERVER_FRAME_TYPES and not can_write(self.role):
            await self._error(
                frame,
                ErrorCode.READ_ONLY,
                "You are observing this thread; you cannot write to it.",
            )
            return
        handler = self.handlers[frame.type]
        try:
            await handler(self, frame)
        except ServiceError as error:
            await self._error(frame, error.code, error.message, details=error.details)
        except Exception:
            logger.exception("handling a %s frame failed", frame.type)
            await self._error(
                frame,
                ErrorCode.SERVER_ERROR,
                "Something went wrong; nothing was changed.",
            )

    async def _close_frame_too_large(self) -> None:
        """Close with 1009, which autobahn refuses through daphne's ASGI close
        (realtime/transport.py has the way round)."""
        await self._transport.close_with(
            close_codes.CLOSE_FRAME_TOO_LARGE, "frame too large"
        )

    async def _error(self, frame, code, message: str, details=None) -> None:
        await self.send_frame(
            error_frame(
                code,
                message,
                thread_id=self.thread_id,
                request_id=frame.request_id,
                details=details,
            )
        )

    async def _accepted(self, frame, **details) -> None:
        """The reply to a request that succeeded (only when it has a request_id:
        every request gets exactly one reply, this or an `error`)."""
        if frame.request_id is None:
            return
        await self.send_frame(
            StatusFrame(
                content={"state": "accepted", "request": frame.type, **details},
                thread_id=self.thread_id,
                request_id=frame.request_id,
            )
        )

    async def on_message(self, frame: MessageIn) -> None:
        # The reply is the `message` event itself, which carries the request_id.
        # Posted with the other messages of this process that arrive meanwhile
        # (chat/admission.py); past a bound of messages ahead of it, the sender
        # hears at once that it is queued, and where, instead of silence.
        admission = message_admission()
        ahead = admission.ahead()
        if ahead >= settings.PARLEY_QUEUED_NOTICE_AFTER > 0:
            await self.send_frame(
                StatusFrame(
                    content={"state": "queued", "position": ahead},
                    thread_id=self.thread_id,
                    request_id=frame.request_id,
                )
            )
        run = await admission.post(
            services.MessageRequest(
                thread_id=self.thread.pk,
                user=self.user,
                text=frame.content,
                request_id=frame.request_id,
                client_id=frame.client_id,
            )
        )
        if run.resent:
            # Posted before (a resend after a cut): no new event; this socket
            # gets the message as it was stored, as the reply to this request.
            await self.send_frame(
                MessageFrame(
                    content=MessageContent(**message_content(run.prompt)),
                    thread_id=self.thread_id,
                    run_id=run.pk,
                    request_id=frame.request_id,
                )
            )

    async def on_config(self, frame: ConfigIn) -> None:
        thread = await call_service(
            services.thread_update,
            actor=self.user,
            thread=self.thread,
            config=frame.content,
        )
        await self._accepted(frame, config=thread.config)

    async def on_cancel(self, frame: CancelIn) -> None:
        run = await call_service(
            services.thread_run_cancel,
            actor=self.user,
            thread_id=self.thread_id,
            run_id=frame.content.run_id if frame.content else None,
            reason=(frame.content.reason or "") if frame.content else "",
        )
        await self._accepted(frame, run_id=str(run.id))

    async def on_input(self, frame: InputIn) -> None:
        run = await call_service(
            services.thread_input_submit,
            actor=self.user,
            thread_id=self.thread_id,
            run_id=frame.content.run_id,
            input_id=frame.content.input_id,
            text=frame.content.text,
            approve=frame.content.approve,
        )
        await self._accepted(frame, run_id=str(run.id))

    async def on_ping(self, frame: PingIn) -> None:
        await self.send_frame(
            PongFrame(thread_id=self.thread_id, request_id=frame.request_id)
        )

    async def on_resume(self, frame: ResumeIn) -> None:
        # last_event_id null asks for a fresh snapshot (a client saw a gap).
        await self.sync(frame.content.last_event_id, state="resynced")
        await self._accepted(frame, last_event_id=self.cursor.last_event_id)

    handlers = {
        "message": on_message,
        "config": on_config,
        "cancel": on_cancel,
        "input": on_input,
        "ping": on_ping,
        "resume": on_resume,
    }


class AgentConsumer(ThreadConsumer):
    """`/ws/agents/<agent name>/`: a socket that opens a new thread with that
    agent for the caller (or goes on with `?thread_id=`, a thread the caller
    may read), then is exactly a thread socket; `connected` names the thread
    (its `thread_id`). Reconnect with `?thread_id=` to stay in it."""

    async def thread_to_open(self, *, user, token_key: str | None) -> str | None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        continued = query.get("thread_id", [""])[0]
        if continued:
            return continued
        try:
            thread = await call_service(
                services.thread_open_for_agent,
                user=user,
                token_key=token_key,
                agent_name=self.scope["url_route"]["kwargs"]["agent_name"],
            )
        except ServiceError as refusal:
            await self.accept(self.subprotocol)
            await self.send_frame(error_frame(refusal.code, refusal.message))
            await self.close(close_codes.CLOSE_NOT_FOUND)
            return None
        if thread is None:
            await self._refuse(close_codes.CLOSE_NOT_AUTHENTICATED)
            return None
        return str(thread.pk)


def _log_close_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.info("closing a slow socket failed: %r", task.exception())


class UnknownPathConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path: accepted only to say so (`error` not_found),
    then closed with 4404, as for a thread that does not exist; never an HTTP
    500 from the router."""

    async def connect(self) -> None:
        offered = self.scope.get("subprotocols") or []
        await self.accept(SUBPROTOCOL if SUBPROTOCOL in offered else None)
        await self.send(
            text_data=frame_json(
                error_frame(
                    ErrorCode.NOT_FOUND,
                    f"No WebSocket endpoint at {self.scope.get('path', '')!r}: "
                    "threads are /ws/threads/<id>/, agents /ws/agents/<name>/.",
                )
            )
        )
        await self.close(close_codes.CLOSE_NOT_FOUND)
