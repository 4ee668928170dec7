"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

`code` is OpenAI's where a generic client may recognise it (`invalid_api_key`,
`model_not_found`), else Parley's own (`rate_limited`, `read_only`,
`provider_error` ...: docs/api.md); `type` follows the HTTP status the way
OpenAI's API does, which is what the SDKs turn into exception classes (400
BadRequestError, 401 AuthenticationError, 403 PermissionDeniedError, 404
NotFoundError, 409 ConflictError, 429 RateLimitError, 5xx InternalServerError).
"""

from __future__ import annotations

from enum import StrEnum

from django.http import JsonResponse

from agents.errors import AgentErrorCode
from realtime.errors import ServiceError


class CompatErrorCode(StrEnum):
    """Codes only the OpenAI-compatible endpoint gives."""

    INVALID_API_KEY = "invalid_api_key"
    MODEL_NOT_FOUND = "model_not_found"
    MODEL_MISMATCH = "model_mismatch"
    INVALID_REQUEST = "invalid_request"
    UNSUPPORTED_CONTENT = "unsupported_content"
    RUN_CANCELLED = "run_cancelled"


# A failed run's error code -> the HTTP status a non-streaming call answers with.
RUN_ERROR_STATUS = {
    AgentErrorCode.PROVIDER_RATE_LIMITED: 429,
    AgentErrorCode.PROVIDER_UNAVAILABLE: 503,
    AgentErrorCode.PROVIDER_CONNECTION_LOST: 503,
    AgentErrorCode.PROVIDER_TIMEOUT: 503,
    AgentErrorCode.WORKER_LOST: 503,
    AgentErrorCode.WORKER_SHUTDOWN: 503,
}


def error_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    if status == 401:
        return "invalid_request_error"  # what OpenAI answers a bad key with
    if status == 403:
        return "permission_error"
    return "invalid_request_error"


class OpenAIError(Exception):
    """An error to answer in OpenAI's shape.

    `retry`: False once the user's message is in the thread (the run started),
    so that the SDKs' automatic retries (`x-should-retry: false`) never post it
    twice; None leaves the SDK's own rule (429 and 5xx before anything was
    stored are safe to retry)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code,
        param: str | None = None,
        retry: bool | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = getattr(code, "value", code)
        self.param = param
        self.retry = retry
        self.retry_after = retry_after
        self.headers: dict[str, str] = {}  # e.g. the thread and run it concerns

    @classmethod
    def from_service(cls, error: ServiceError) -> OpenAIError:
        """A refusal (nothing stored): `server_busy` and other retriable ones
        keep their `Retry-After`, which the SDKs wait for before retrying."""
        return cls(
            error.status,
            error.message,
            code=error.code,
            retry_after=getattr(error, "retry_after", None),
        )

    @classmethod
    def from_run(cls, *, status: str, code: str, message: str) -> OpenAIError:
        """The error a run that ended without completing gives."""
        if status == "cancelled":
            return cls(
                409,
                f"The run was cancelled in its thread: {message}"
                if message
                else "The run was cancelled in its thread.",
                code=CompatErrorCode.RUN_CANCELLED,
                retry=False,
            )
        http_status = RUN_ERROR_STATUS.get(code, 500)
        return cls(
            http_status,
            message or "The agent's run failed.",
            code=code or AgentErrorCode.INTERNAL_ERROR,
            retry=False,
        )

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": error_type(self.status),
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JsonResponse:
        response = JsonResponse(self.body(), status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        if self.retry is not None:
            response["x-should-retry"] = "true" if self.retry else "false"
        if self.retry_after is not None:
            response["Retry-After"] = str(self.retry_after)
        if self.status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response
