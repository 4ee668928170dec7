"""One error shape for every API response: {"error": {"code", "message"}}."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from chat.errors import ErrorCode, ServiceError

logger = logging.getLogger(__name__)

_CODES = {
    exceptions.NotAuthenticated: ErrorCode.NOT_AUTHENTICATED,
    exceptions.AuthenticationFailed: ErrorCode.NOT_AUTHENTICATED,
    exceptions.PermissionDenied: ErrorCode.FORBIDDEN,
    exceptions.NotFound: ErrorCode.NOT_FOUND,
    exceptions.MethodNotAllowed: ErrorCode.METHOD_NOT_ALLOWED,
    exceptions.Throttled: ErrorCode.RATE_LIMITED,
    exceptions.ValidationError: ErrorCode.VALIDATION_ERROR,
    exceptions.ParseError: ErrorCode.VALIDATION_ERROR,
    exceptions.UnsupportedMediaType: ErrorCode.VALIDATION_ERROR,
}


def error_body(code, message: str, details=None) -> dict:
    body = {"error": {"code": getattr(code, "value", str(code)), "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return body


def _message_of(detail) -> str:
    if isinstance(detail, dict):
        field, value = next(iter(detail.items()), ("", ""))
        return f"{field}: {_message_of(value)}" if field not in ("detail", "non_field_errors") else _message_of(value)
    if isinstance(detail, list):
        return _message_of(detail[0]) if detail else "Invalid input."
    return str(detail)


def exception_handler(exc, context):
    if isinstance(exc, ServiceError):
        return Response(error_body(exc.code, exc.message), status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("API error", exc_info=exc)
        return Response(
            error_body(ErrorCode.SERVER_ERROR, "Something went wrong on our side."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), ErrorCode.VALIDATION_ERROR)
    details = exc.detail if isinstance(exc, exceptions.ValidationError) else None
    response.data = error_body(code, _message_of(exc.detail), details)
    return response
