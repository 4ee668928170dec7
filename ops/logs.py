"""Structured logs: one JSON line per log record, with the ids of what is served.

`LOG_FORMAT=json` (config/settings.py) formats every record with `JsonFormatter`
after `LogContextFilter` has copied the current ids onto it:

* `request_id`: the HTTP request's (`X-Request-ID` from the proxy when it is a
  plain token, otherwise a new one; sent back in the response), or a socket's
  connection id;
* `thread_id`, `run_id`: the thread a socket serves, the run a worker executes;
* `user_id`: the socket's user, the run's requester, or the request's user once
  authentication has looked it up (never looked up for the log's sake).

The ids live in one context variable, set in three places only: the HTTP
middleware (`ops.middleware.LogContextMiddleware`), the socket consumer's
`connect` and the worker's `execute` (both `log_context_start`). asyncio tasks and
`sync_to_async` threads copy it, so what those places start is logged with the
same ids. The line holds the record's own message and nothing else of it: no
arguments, no request body, no message text; key-like words (`Bearer ...`,
`Token ...`, `sk-...`) are redacted from the message and the traceback.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, datetime

from django.utils.functional import LazyObject

CONTEXT_FIELDS = ("request_id", "thread_id", "run_id", "user_id")
# Attributes a record may carry via `extra=` that the JSON line keeps (the
# request log line's); anything else passed as extra is left out.
EXTRA_FIELDS = ("method", "path", "status", "duration_ms")
REQUEST_ID_HEADER = "X-Request-ID"
_GIVEN_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_SECRET = re.compile(
    r"(?i)\b(bearer\s+|token\s+|basic\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|\b(sk-(?:ant-)?)[A-Za-z0-9_-]{8,}"
)


@dataclass(frozen=True)
class LogContext:
    request_id: str | None = None
    thread_id: str | None = None
    run_id: str | None = None
    user_id: str | None = None
    request: object = None  # the HttpRequest; its user is read once it is known


_NO_CONTEXT = LogContext()  # frozen: safe to share as the default
_context: ContextVar[LogContext] = ContextVar(  # noqa: B039  (immutable)
    "parley_log_context", default=_NO_CONTEXT
)


def _text(value) -> str | None:
    return None if value is None or value == "" else str(value)


def log_context_start(
    *, request_id=None, thread_id=None, run_id=None, user_id=None, request=None
) -> Token:
    """Make these the ids of everything logged from here in this task or thread
    (and in what it starts); earlier ids are dropped, not merged."""
    return _context.set(
        LogContext(
            request_id=_text(request_id),
            thread_id=_text(thread_id),
            run_id=_text(run_id),
            user_id=_text(user_id),
            request=request,
        )
    )


def log_context_end(token: Token) -> None:
    """Back to the ids before the matching `log_context_start`."""
    _context.reset(token)


def log_context_ids() -> dict[str, str]:
    """The ids known now, e.g. {"request_id": "...", "user_id": "7"}."""
    context = _context.get()
    ids = {
        name: getattr(context, name)
        for name in CONTEXT_FIELDS
        if getattr(context, name) is not None
    }
    if "user_id" not in ids and context.request is not None:
        user_id = _known_user_id(context.request)
        if user_id is not None:
            ids["user_id"] = user_id
    return ids


def _known_user_id(request) -> str | None:
    """The request's user id if authentication already found it, without a query:
    DRF puts the user it authenticated on the request; Django's session user is
    lazy and cached on the request (`_cached_user`) once something read it."""
    user = vars(request).get("user")
    if isinstance(user, LazyObject):  # isinstance does not evaluate it
        user = vars(request).get("_cached_user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return _text(user.pk)


def request_id_for(headers) -> str:
    """The proxy's request id when it is a plain token, otherwise a new one."""
    given = headers.get(REQUEST_ID_HEADER, "")
    return given if _GIVEN_REQUEST_ID.match(given) else uuid.uuid4().hex


def redact(text: str) -> str:
    """Key-like words replaced by `[redacted]`."""
    return _SECRET.sub(lambda match: (match[1] or match[2]) + "[redacted]", text)


class LogContextFilter(logging.Filter):
    """Copies the current ids onto each record (on the handler, so in the thread
    and task that logged it); ids passed explicitly with `extra=` win."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in log_context_ids().items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "process": os.getpid(),
        }
        for name in CONTEXT_FIELDS + EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)
