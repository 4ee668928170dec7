"""Error codes of the chat app, used in `error` frames and API errors alike."""

from enum import Enum, StrEnum


class ErrorCode(StrEnum):
    INVALID_JSON = "invalid_json"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_FRAME = "invalid_frame"
    FRAME_TOO_LARGE = "frame_too_large"
    MESSAGE_TOO_LONG = "message_too_long"
    READ_ONLY = "read_only"
    NOT_AUTHENTICATED = "not_authenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    THREAD_NOT_FOUND = "thread_not_found"
    THREAD_BUSY = "thread_busy"
    TOO_MANY_CLIENTS = "too_many_clients"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_RUNS = "too_many_runs"
    INVALID_CONFIG = "invalid_config"
    USER_NOT_FOUND = "user_not_found"
    VALIDATION_ERROR = "validation_error"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    SERVICE_UNAVAILABLE = "service_unavailable"
    SERVER_BUSY = "server_busy"
    SERVER_ERROR = "server_error"
    # A monthly budget (usage/) is used up: details {used, limit, period, ...}.
    BUDGET_EXCEEDED = "budget_exceeded"


class ServiceError(Exception):
    """A refused request, raised by services and shown to clients as an error.

    `code` is an ErrorCode or agents' AgentErrorCode; `status` is the HTTP status
    an API view answers with; `retry_after` (seconds), when trying again later
    will do (the API sends it as `Retry-After`); `details`, facts a client may
    act on (`budget_exceeded`: used, limit, period), sent as the error's
    `details` on the socket and in the API.
    """

    def __init__(
        self,
        code: Enum,
        message: str,
        *,
        status: int = 400,
        retry_after: int | None = None,
        details: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.details = details


# WebSocket close codes (shared CONTRACT.md)
CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY_CLIENTS = 4429
# The server cannot take the socket right now (Redis unreachable): reconnect later.
CLOSE_TRY_AGAIN = 4503
CLOSE_FRAME_TOO_LARGE = 1009
# A reader too slow for its events (PARLEY_SLOW_CLIENT=close): reconnect and
# resume from the last event id.
CLOSE_TOO_SLOW = 4408
