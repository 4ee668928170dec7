"""The OpenAI-compatible endpoint, under /api/openai/v1/ (docs/clients.md).

* `POST chat/completions`: the last user message of `messages` is posted to a
  thread of the caller's (a new one, or the one `X-Parley-Thread-Id` or
  `metadata.parley_thread_id` names) through the same service as a socket's
  message, and the answer follows that run through the event log: one
  `chat.completion`, or (`stream: true`) `chat.completion.chunk` events as
  Server-Sent Events. A client that hangs up does not cancel the run: the
  thread is shared and its reply is stored as usual.
* `GET models`, `GET models/{name}`: the enabled agents.

Authentication is `Authorization: Bearer <Parley API token>`; every error is
in OpenAI's shape (compat/errors.py). Plain async Django views, as chat/sse.py
(DRF cannot stream from an async view); they stay thin: parse, call one
service, follow the run.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from contextlib import aclosing

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from chat.access import live_access
from compat import wire
from compat.errors import CompatErrorCode, OpenAIError
from compat.follow import AccessLost, Ended, Heartbeat, RunFollower, TextDelta
from compat.selectors import model_get, model_list
from compat.services import completion_start
from realtime.errors import ErrorCode, ServiceError
from realtime.eventlog import get_event_log
from realtime.events import call_service
from restapi.views import UserThrottle
from webhooks.selectors import webhook_named_in_metadata
from webhooks.services import run_webhook_add

logger = logging.getLogger(__name__)


class BearerTokenAuthentication(TokenAuthentication):
    """DRF's token check with OpenAI's keyword: `Authorization: Bearer <key>`."""

    keyword = "Bearer"


def _openai_errors(view):
    """Answer OpenAIError (and anything unexpected: 500) in OpenAI's shape."""

    async def wrapped(request, *args, **kwargs):
        try:
            return await view(request, *args, **kwargs)
        except OpenAIError as error:
            return error.response()
        except Exception:
            logger.exception("OpenAI-compatible endpoint failed")
            return OpenAIError(
                500,
                "Something went wrong on our side.",
                code=ErrorCode.SERVER_ERROR,
            ).response()

    return csrf_exempt(wrapped)


def bearer_token_key(request) -> str | None:
    kind, _, key = request.headers.get("Authorization", "").partition(" ")
    return key.strip() if kind.lower() in ("bearer", "token") and key.strip() else None


def _authenticate_sync(request):
    """The caller (401 without a valid token), then API_USER_RATE (429)."""
    key = bearer_token_key(request)
    if key is None:
        raise OpenAIError(
            401,
            "Missing API key: send `Authorization: Bearer <Parley API token>`.",
            code=CompatErrorCode.INVALID_API_KEY,
        )
    try:
        user, _ = BearerTokenAuthentication().authenticate_credentials(key)
    except AuthenticationFailed:
        raise OpenAIError(
            401, "Incorrect API key provided.", code=CompatErrorCode.INVALID_API_KEY
        ) from None
    request.user = user
    throttle = UserThrottle()
    if not throttle.allow_request(request, None):
        wait = throttle.wait()
        raise OpenAIError(
            429,
            "Too many requests. Try again shortly.",
            code=ErrorCode.RATE_LIMITED,
            retry_after=max(1, int(wait or 1)),
        )
    return user


async def authenticate_bearer(request):
    return await sync_to_async(_authenticate_sync)(request)


def require_method(request, allowed: str) -> None:
    if request.method != allowed:
        raise OpenAIError(
            405,
            f"Method {request.method} not allowed; use {allowed}.",
            code=ErrorCode.METHOD_NOT_ALLOWED,
        )


def _model_not_found(name: str) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model `{name}` does not exist or you do not have access to it.",
        code=CompatErrorCode.MODEL_NOT_FOUND,
        param="model",
    )


# --- models -------------------------------------------------------------------


@_openai_errors
async def models(request):
    require_method(request, "GET")
    await authenticate_bearer(request)
    agents = await call_service(model_list)
    return JsonResponse(
        {"object": "list", "data": [wire.model_object(agent) for agent in agents]}
    )


@_openai_errors
async def model_detail(request, name: str):
    require_method(request, "GET")
    await authenticate_bearer(request)
    agent = await call_service(model_get, name=name)
    if agent is None:
        raise _model_not_found(name)
    return JsonResponse(wire.model_object(agent))


@_openai_errors
async def not_found(request, *args, **kwargs):
    raise OpenAIError(
        404,
        f"Unknown path {request.path}: the OpenAI-compatible endpoint serves "
        "chat/completions and models.",
        code=ErrorCode.NOT_FOUND,
    )


# --- chat completions --------------------------------------------------------------


def _thread_named(request, body: wire.CompletionRequest) -> str | None:
    header = request.headers.get(wire.THREAD_HEADER, "").strip() or None
    named = (body.metadata or {}).get(wire.THREAD_METADATA_KEY) or None
    if header and named and header != named:
        raise OpenAIError(
            400,
            f"{wire.THREAD_HEADER} and metadata.{wire.THREAD_METADATA_KEY} "
            "name different threads.",
            code=CompatErrorCode.INVALID_REQUEST,
            param=f"metadata.{wire.THREAD_METADATA_KEY}",
        )
    value = header or named
    if value is None:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise OpenAIError(
            400,
            f"{value!r} is not a thread id (a UUID).",
            code=CompatErrorCode.INVALID_REQUEST,
            param=f"metadata.{wire.THREAD_METADATA_KEY}",
        ) from None


@_openai_errors
async def chat_completions(request):
    require_method(request, "POST")
    user = await authenticate_bearer(request)
    body = wire.parse_request(request.body)
    text = wire.last_user_text(body)
    agent = await call_service(model_get, name=body.model)
    if agent is None:
        raise _model_not_found(body.model)
    thread_id = _thread_named(request, body)
    try:  # metadata.parley_webhook: one of the caller's webhooks (webhooks/)
        webhook = await call_service(
            webhook_named_in_metadata, user=user, metadata=body.metadata
        )
    except ServiceError as error:
        raise OpenAIError.from_service(error) from None
    log = get_event_log()
    # Read before the message is posted: the run's events all come after it.
    after = (await log.thread_state(thread_id)).last_event_id if thread_id else 0
    read_at_generation = live_access().generation
    try:
        run, role = await call_service(
            completion_start,
            user=user,
            agent_name=agent.name,
            thread_id=thread_id,
            text=text,
            title=wire.title_of(body),
        )
    except ServiceError as error:
        raise OpenAIError.from_service(error) from None
    if webhook is not None:
        await call_service(run_webhook_add, actor=user, run_id=run.id, webhook=webhook)
    created = run.created_at.timestamp() if run.created_at else time.time()
    completion = wire.Completion(
        run_id=str(run.id),
        thread_id=str(run.thread_id),
        model=agent.name,
        created=int(created),
    )
    follower = RunFollower(
        thread_id=str(run.thread_id),
        run_id=str(run.id),
        user=user,
        token_key=bearer_token_key(request),
        role=role,
    )
    headers = {
        wire.THREAD_HEADER: completion.thread_id,
        wire.RUN_HEADER: completion.run_id,
    }
    if body.stream:
        completion.include_usage = bool(
            body.stream_options and body.stream_options.include_usage
        )
        response = StreamingHttpResponse(
            _stream(follower, completion, after=after, generation=read_at_generation),
            content_type="text/event-stream",
            headers=headers,
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    answer = None
    try:
        await follower.open(read_at_generation=read_at_generation)
        async with aclosing(follower.updates(after=after)) as updates:
            async for update in updates:
                if isinstance(update, Ended):
                    if update.status != "completed":
                        raise OpenAIError.from_run(
                            status=update.status,
                            code=update.error_code,
                            message=update.error,
                        )
                    answer = JsonResponse(completion.whole(update.text, update.usage))
                    break
                if isinstance(update, AccessLost):
                    raise _access_lost(update)
    except OpenAIError as error:
        error.headers.update(headers)
        raise
    finally:
        await follower.close()
    if answer is None:
        raise RuntimeError("the run's updates ended without its end")
    for name, value in headers.items():
        answer[name] = value
    return answer


def _access_lost(update: AccessLost) -> OpenAIError:
    status = 404 if update.code == ErrorCode.THREAD_NOT_FOUND else 403
    if update.code == ErrorCode.NOT_AUTHENTICATED:
        status = 401
    return OpenAIError(status, update.message, code=update.code, retry=False)


async def _stream(
    follower: RunFollower, completion: wire.Completion, *, after, generation
):
    """The run as chat.completion.chunk events: the role first, the text as
    it comes, then the finish (and usage), then `[DONE]`; a run that does not
    complete ends with an error event (OpenAI's error object) and `[DONE]`.
    Opened here, not in the view, so that a client gone before the first byte
    leaves no subscription behind (the handler closes a started generator)."""
    heartbeat = settings.PARLEY_SSE_HEARTBEAT_SECONDS
    try:
        await follower.open(read_at_generation=generation)
        yield completion.role_chunk()
        updates = follower.updates(after=after, heartbeat=heartbeat)
        async with aclosing(updates):
            async for update in updates:
                if isinstance(update, TextDelta):
                    yield completion.content_chunk(update.text)
                elif isinstance(update, Heartbeat):
                    yield wire.HEARTBEAT
                elif isinstance(update, Ended):
                    if update.status == "completed":
                        yield completion.finish_chunk()
                        if completion.include_usage:
                            yield completion.usage_chunk(update.usage)
                    else:
                        error = OpenAIError.from_run(
                            status=update.status,
                            code=update.error_code,
                            message=update.error,
                        )
                        yield wire.sse(_json(error.body()))
                    yield wire.DONE
                    return
                elif isinstance(update, AccessLost):
                    yield wire.sse(_json(_access_lost(update).body()))
                    yield wire.DONE
                    return
    except Exception:  # the response has started: say so in the stream
        logger.exception("OpenAI-compatible stream failed")
        error = OpenAIError(
            500, "Something went wrong on our side.", code=ErrorCode.SERVER_ERROR
        )
        yield wire.sse(_json(error.body()))
        yield wire.DONE
    finally:
        await follower.close()


def _json(data: dict) -> str:
    return json.dumps(data, ensure_ascii=False)
