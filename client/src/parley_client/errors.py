"""The errors a Parley client raises, one class per way things end.

- `ConnectionClosedError`: the server or the caller ended the connection on
  purpose (not authenticated, removed from the thread, thread deleted, the
  caller's own `close()`); retrying would not help, so it is never retried.
- `ConnectionLostError`: the network or a server process went away; the client
  retries with backoff and resumes, and raises this only when retries run out.
- `RequestError`: the server answered a request with an `error` frame.
- `ApiError`: a REST call answered with an error status.
"""

from __future__ import annotations

from typing import Any

# Close codes of docs/protocol.md.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_ABNORMAL = 1006
CLOSE_FRAME_TOO_LARGE = 1009
CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY_CLIENTS = 4429
CLOSE_TRY_AGAIN = 4503

# Closes that come from the network or a server going away: worth a retry.
RETRYABLE_CLOSE_CODES = frozenset(
    {
        CLOSE_GOING_AWAY,
        CLOSE_ABNORMAL,
        1011,  # server error
        1012,  # service restart
        1013,  # try again later
        1014,  # bad gateway
        CLOSE_TRY_AGAIN,
    }
)


class ParleyError(Exception):
    """Base class of everything this package raises on purpose."""


class ProtocolViolation(ParleyError):
    """The server sent something this client cannot read as a frame."""


class FrameTooLargeError(ParleyError, ValueError):
    """A frame the client was asked to send is over the server's frame limit;
    nothing was sent."""


class ConnectionClosedError(ParleyError):
    """The connection was ended on purpose, by the server or by the caller.

    `close_code` is the WebSocket close code (4401, 4403, 4404, 4429, 1009, or
    1000 when the caller closed); `error_code` and `error_message` are those of
    the `error` frame the server sent just before closing, if it sent one.
    """

    def __init__(
        self,
        close_code: int,
        *,
        reason: str = "",
        error_code: str | None = None,
        error_message: str | None = None,
        by_client: bool = False,
    ) -> None:
        self.close_code = close_code
        self.reason = reason
        self.error_code = error_code
        self.error_message = error_message
        self.by_client = by_client
        if by_client:
            text = "the connection was closed by this client"
        else:
            text = f"the server closed the connection ({close_code}"
            text += f" {error_code})" if error_code else ")"
            if error_message or reason:
                text += f": {error_message or reason}"
        super().__init__(text)


class ConnectionLostError(ParleyError):
    """The connection was lost and every retry failed (`attempts` of them,
    over `elapsed` seconds); `last_error` says what the last attempt met."""

    def __init__(self, message: str, *, attempts: int, elapsed: float) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.elapsed = elapsed


class RequestError(ParleyError):
    """The server refused a request: its `error` frame's code and message."""

    def __init__(self, code: str, message: str, frame: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.frame = frame


class RequestTimeout(ParleyError, TimeoutError):
    """No reply to a request within the time the caller allowed."""


class ApiError(ParleyError):
    """A REST call failed: HTTP `status`, Parley's error `code` and `message`
    (`details` per field for validation errors)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
