"""The AG-UI endpoint, `POST /api/agui/<agent name>` (docs/clients.md, "AG-UI").

It takes AG-UI's `RunAgentInput` (the protocol's own Python package,
`ag-ui-protocol`, parses it), posts the last message (a user message) to the
Parley thread `threadId` names through the same service as the OpenAI endpoint
and the socket (compat/services.py: roles, rate limits, run limits, busy
policy), and follows that run through the event log (compat/follow.py),
answering with AG-UI events as Server-Sent Events, built from `ag_ui.core`'s
types and `ag_ui.encoder.EventEncoder`:

    RUN_STARTED, STATE_SNAPSHOT (`{"parley": {thread, run, agent, role, status}}`
    beside the client's own state), TEXT_MESSAGE_START / CONTENT / END (one
    message per stretch of text between tool steps), TOOL_CALL_START / ARGS /
    END and TOOL_CALL_RESULT (Parley's `tool_call` / `tool_result` steps, run by
    the server), CUSTOM `parley.input_request` (a question or approval, answered
    in the thread), then STATE_SNAPSHOT (`status`, `usage`) and RUN_FINISHED, or
    RUN_ERROR (a failed run, or the caller's access lost mid-run). A run
    cancelled in the thread is RUN_FINISHED with the `cancelled` outcome.

`threadId`: a Parley thread's id continues that thread (a writer may post; an
observer gets 403, a stranger 404); an id that names no thread yet starts one
of the caller's *with that id* (a UUID as given; any other string is mapped to a
UUID of its own per user), so an `HttpAgent` keeps one Parley thread for as long
as it keeps its `threadId`. `compat/aisdk.py` shares this rule and the helpers
below (errors in Parley's shape, the thread of a client's id, the turn start).

Errors before the stream starts are JSON in Parley's API shape
(`{"error": {"code", "message"}}`, restapi/errors.py): 400 a malformed body,
401 a bad token, 403/404 no access, 404 an unknown agent, 409/429 Parley's
limits. A client that hangs up does not cancel the run (the thread is shared).
"""

from __future__ import annotations

import json
import logging
import uuid
from contextlib import aclosing

from ag_ui.core import (
    CustomEvent,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedEvent,
    RunStartedEvent,
    StateSnapshotEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
    UserMessage,
)
from ag_ui.core.events import RunFinishedCancelledOutcome
from ag_ui.encoder import EventEncoder
from django.conf import settings
from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from pydantic import ValidationError

from agents.errors import AgentErrorCode
from chat.access import live_access
from compat import wire
from compat.errors import OpenAIError
from compat.follow import (
    AccessLost,
    Ended,
    Heartbeat,
    InputRequest,
    RunFollower,
    TextDelta,
    ToolCall,
    ToolResult,
)
from compat.selectors import model_get
from compat.services import turn_start
from compat.views import authenticate_bearer, bearer_token_key, require_method
from realtime.errors import ErrorCode, ServiceError
from realtime.eventlog import get_event_log
from realtime.events import call_service
from restapi.errors import error_body

logger = logging.getLogger(__name__)

# Client ids that are not UUIDs become uuid5(namespace, "<user id>:<client id>").
CLIENT_THREAD_NAMESPACE = uuid.UUID("5b0d4c8e-2f6a-4c1e-9a57-3d8e1f0b7a42")
CLIENT_ID_CHARS = 200
INPUT_REQUEST_EVENT = "parley.input_request"


# --- shared with compat/aisdk.py ------------------------------------------------


def parley_errors(view):
    """Answer errors raised before a stream starts in Parley's API shape.

    The compat app's error carrier is OpenAIError (status, code, message,
    Retry-After; the OpenAI endpoint's own helpers raise it); these endpoints
    answer it as `{"error": {"code", "message"}}`, and a ServiceError the same
    way."""

    async def wrapped(request, *args, **kwargs):
        try:
            return await view(request, *args, **kwargs)
        except OpenAIError as error:
            return _error_response(
                error.status, error.code, error.message, error.retry_after
            )
        except ServiceError as error:
            return _error_response(
                error.status,
                error.code,
                error.message,
                getattr(error, "retry_after", None),
            )
        except Exception:
            logger.exception("%s failed", view.__name__)
            return _error_response(
                500, ErrorCode.SERVER_ERROR, "Something went wrong on our side."
            )

    return csrf_exempt(wrapped)


def _error_response(status, code, message, retry_after=None) -> JsonResponse:
    response = JsonResponse(error_body(code, message), status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def bad_request(message: str) -> OpenAIError:
    return OpenAIError(400, message, code=ErrorCode.VALIDATION_ERROR)


async def agent_named(name: str):
    """The enabled agent `name`; 404 otherwise."""
    agent = await call_service(model_get, name=name)
    if agent is None:
        raise OpenAIError(
            404,
            f"No enabled agent named {name!r}.",
            code=AgentErrorCode.AGENT_NOT_FOUND,
        )
    return agent


def thread_id_for(*, client_id: str, user) -> str:
    """The Parley thread a client's thread (or chat) id stands for: the id
    itself when it is a UUID, else a UUID of its own for this user (the same
    every time, so a client keeps one thread per id)."""
    if not client_id or len(client_id) > CLIENT_ID_CHARS:
        raise bad_request(
            f"A thread id is 1 to {CLIENT_ID_CHARS} characters: a Parley "
            "thread's id, or a new one of yours."
        )
    try:
        return str(uuid.UUID(client_id))
    except ValueError:
        return str(uuid.uuid5(CLIENT_THREAD_NAMESPACE, f"{user.pk}:{client_id}"))


async def turn_follower(
    request, *, user, agent, client_thread_id: str, text: str, title: str
):
    """Start a turn in the thread the client id names and a follower of its run
    (not yet opened): (run, role, follower, after, generation)."""
    thread_id = thread_id_for(client_id=client_thread_id, user=user)
    # Read before the message is posted: the run's events all come after it.
    after = (await get_event_log().thread_state(thread_id)).last_event_id
    generation = live_access().generation
    run, role = await call_service(
        turn_start,
        user=user,
        agent_name=agent.name,
        thread_id=thread_id,
        text=text,
        title=title,
    )
    follower = RunFollower(
        thread_id=str(run.thread_id),
        run_id=str(run.id),
        user=user,
        token_key=bearer_token_key(request),
        role=role,
    )
    return run, role, follower, after, generation


def title_from(text: str) -> str:
    lines = text.strip().splitlines()
    first = lines[0].strip() if lines else ""
    limit = wire.TITLE_CHARS
    return first if len(first) <= limit else first[: limit - 1] + "…"


def event_stream(chunks, *, run, extra_headers=None) -> StreamingHttpResponse:
    response = StreamingHttpResponse(chunks, content_type="text/event-stream")
    response[wire.THREAD_HEADER] = str(run.thread_id)
    response[wire.RUN_HEADER] = str(run.id)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    for name, value in (extra_headers or {}).items():
        response[name] = value
    return response


def arguments_text(arguments: dict | str) -> str:
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments, ensure_ascii=False)


# --- AG-UI -------------------------------------------------------------------------


def _parse_input(body: bytes) -> RunAgentInput:
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise bad_request("The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise bad_request("The body must be a JSON object (AG-UI's RunAgentInput).")
    try:
        return RunAgentInput.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise bad_request(f"{where}: {first['msg']}") from None


def _user_text(run_input: RunAgentInput) -> str:
    """What is posted: the last message, which must be the user's, as text."""
    if not run_input.messages:
        raise bad_request("messages is empty: the last one is what is posted.")
    last = run_input.messages[-1]
    if not isinstance(last, UserMessage):
        raise bad_request(
            f"The last message is a {last.role!r} message; Parley posts the "
            "last message, which must be the user's (tools run on the server)."
        )
    if isinstance(last.content, str):
        text = last.content
    else:
        texts = []
        for part in last.content:
            if getattr(part, "type", None) != "text":
                raise bad_request("Only text content is supported.")
            texts.append(part.text)
        text = "\n".join(texts)
    if not text.strip():
        raise bad_request("The last user message is empty.")
    return text


@parley_errors
async def run_agent(request, agent_name: str):
    require_method(request, "POST")
    user = await authenticate_bearer(request)
    run_input = _parse_input(request.body)
    text = _user_text(run_input)
    agent = await agent_named(agent_name)
    run, role, follower, after, generation = await turn_follower(
        request,
        user=user,
        agent=agent,
        client_thread_id=run_input.thread_id,
        text=text,
        title=title_from(text),
    )
    encoder = EventEncoder(accept=request.headers.get("Accept"))
    events = _events(
        follower,
        run_input=run_input,
        run=run,
        agent_name=agent.name,
        role=role,
        after=after,
        generation=generation,
        encoder=encoder,
    )
    return event_stream(events, run=run)


class _Stream:
    """One AG-UI run's text messages: which one is open, what the last was."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.open_id: str | None = None
        self.last_id: str | None = None
        self.count = 0

    def text(self, piece: str) -> list:
        events = []
        if self.open_id is None:
            self.count += 1
            suffix = "" if self.count == 1 else f"-{self.count}"
            self.open_id = self.last_id = f"{self.run_id}{suffix}"
            events.append(
                TextMessageStartEvent(message_id=self.open_id, role="assistant")
            )
        events.append(TextMessageContentEvent(message_id=self.open_id, delta=piece))
        return events

    def close(self) -> list:
        if self.open_id is None:
            return []
        ended, self.open_id = self.open_id, None
        return [TextMessageEndEvent(message_id=ended)]


def _state(run_input: RunAgentInput, parley: dict) -> StateSnapshotEvent:
    own = run_input.state if isinstance(run_input.state, dict) else {}
    return StateSnapshotEvent(snapshot={**own, "parley": parley})


async def _events(
    follower: RunFollower,
    *,
    run_input: RunAgentInput,
    run,
    agent_name: str,
    role,
    after: int,
    generation: int,
    encoder: EventEncoder,
):
    """The run as AG-UI events (module docstring). Opened here, not in the
    view, so that a client gone before the first byte leaves no subscription
    behind."""
    ids = {"thread_id": run_input.thread_id, "run_id": run_input.run_id}
    parley = {
        "thread_id": str(run.thread_id),
        "run_id": str(run.id),
        "agent": agent_name,
        "role": getattr(role, "value", str(role)),
        "status": "running",
    }
    text = _Stream(str(run.id))
    heartbeat = settings.PARLEY_SSE_HEARTBEAT_SECONDS
    try:
        await follower.open(read_at_generation=generation)
        yield encoder.encode(RunStartedEvent(**ids))
        yield encoder.encode(_state(run_input, parley))
        updates = follower.updates(after=after, heartbeat=heartbeat)
        async with aclosing(updates):
            async for update in updates:
                events = []
                if isinstance(update, TextDelta):
                    events = text.text(update.text) if update.text else []
                elif isinstance(update, ToolCall):
                    events = [
                        *text.close(),
                        ToolCallStartEvent(
                            tool_call_id=update.id,
                            tool_call_name=update.name,
                            parent_message_id=text.last_id,
                        ),
                        ToolCallArgsEvent(
                            tool_call_id=update.id,
                            delta=arguments_text(update.arguments),
                        ),
                        ToolCallEndEvent(tool_call_id=update.id),
                    ]
                elif isinstance(update, ToolResult):
                    events = [
                        *text.close(),
                        ToolCallResultEvent(
                            message_id=f"{run.id}-{update.id}",
                            tool_call_id=update.id,
                            content=update.output
                            if update.error is None
                            else f"error: {update.error}",
                            role="tool",
                        ),
                    ]
                elif isinstance(update, InputRequest):
                    events = [
                        CustomEvent(name=INPUT_REQUEST_EVENT, value=update.content)
                    ]
                elif isinstance(update, Heartbeat):
                    yield wire.HEARTBEAT
                elif isinstance(update, Ended):
                    events = [*text.close(), *_ending(update, ids, run_input, parley)]
                elif isinstance(update, AccessLost):
                    events = [
                        *text.close(),
                        RunErrorEvent(message=update.message, code=update.code),
                    ]
                for event in events:
                    yield encoder.encode(event)
                if isinstance(update, Ended | AccessLost):
                    return
    except Exception:  # the response has started: say so in the stream
        logger.exception("AG-UI stream failed")
        yield encoder.encode(
            RunErrorEvent(
                message="Something went wrong on our side.",
                code=ErrorCode.SERVER_ERROR.value,
            )
        )
    finally:
        await follower.close()


def _ending(ended: Ended, ids: dict, run_input: RunAgentInput, parley: dict) -> list:
    if ended.status == "failed":
        return [
            RunErrorEvent(
                message=ended.error or "The agent's run failed.",
                code=ended.error_code or None,
            )
        ]
    state = _state(run_input, {**parley, "status": ended.status, "usage": ended.usage})
    if ended.status == "cancelled":
        return [
            state,
            RunFinishedEvent(**ids, outcome=RunFinishedCancelledOutcome()),
        ]
    return [state, RunFinishedEvent(**ids)]
