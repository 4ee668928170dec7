"""One error shape for every API response: {"error": {"code", "message"}}.

* `exception_handler` is DRF's EXCEPTION_HANDLER: service errors, DRF errors,
  Django's Http404/PermissionDenied and any unexpected exception (500) all
  leave as JSON; a traceback never does.
* `api_not_found` answers unknown /api/... paths (the catch-all route at the
  end of config/api_urls.py); `handler404`/`handler500` do the same for errors
  raised outside DRF views, for /api/ paths only (the web UI keeps HTML).
* `ErrorDocumentingSchema` adds the error responses each operation can give to
  the OpenAPI schema, so generated clients know them.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.urls import Resolver404, resolve
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.openapi import AutoSchema
from rest_framework import exceptions, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from realtime.errors import ErrorCode, ServiceError

logger = logging.getLogger(__name__)


class ApiErrorCode(StrEnum):
    """Codes only HTTP clients see (the socket has no equivalent)."""

    NOT_ACCEPTABLE = "not_acceptable"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    AGENT_IN_USE = "agent_in_use"


_CODES = {
    exceptions.NotAuthenticated: ErrorCode.NOT_AUTHENTICATED,
    exceptions.AuthenticationFailed: ErrorCode.NOT_AUTHENTICATED,
    exceptions.PermissionDenied: ErrorCode.FORBIDDEN,
    exceptions.NotFound: ErrorCode.NOT_FOUND,
    exceptions.MethodNotAllowed: ErrorCode.METHOD_NOT_ALLOWED,
    exceptions.Throttled: ErrorCode.RATE_LIMITED,
    exceptions.ValidationError: ErrorCode.VALIDATION_ERROR,
    exceptions.ParseError: ErrorCode.VALIDATION_ERROR,
    exceptions.UnsupportedMediaType: ApiErrorCode.UNSUPPORTED_MEDIA_TYPE,
    exceptions.NotAcceptable: ApiErrorCode.NOT_ACCEPTABLE,
}


def error_body(code, message: str, details=None) -> dict:
    body = {"error": {"code": getattr(code, "value", str(code)), "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return body


def _message_of(detail) -> str:
    if isinstance(detail, dict):
        field, value = next(iter(detail.items()), ("", ""))
        if field in ("detail", "non_field_errors"):
            return _message_of(value)
        return f"{field}: {_message_of(value)}"
    if isinstance(detail, list):
        return _message_of(detail[0]) if detail else "Invalid input."
    return str(detail)


def exception_handler(exc, context):
    if isinstance(exc, ServiceError):
        set_rollback()
        response = Response(
            error_body(exc.code, exc.message, exc.details), status=exc.status
        )
        if exc.retry_after is not None:
            response["Retry-After"] = str(exc.retry_after)
        return response
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        set_rollback()
        view = context.get("view")
        logger.error(
            "API error in %s", type(view).__name__ if view else "?", exc_info=exc
        )
        return Response(
            error_body(ErrorCode.SERVER_ERROR, "Something went wrong on our side."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    code = next(
        (code for cls, code in _CODES.items() if isinstance(exc, cls)),
        ErrorCode.VALIDATION_ERROR,
    )
    details = exc.detail if isinstance(exc, exceptions.ValidationError) else None
    if isinstance(details, list):
        details = {"non_field_errors": details}
    response.data = error_body(code, _message_of(exc.detail), details)
    return response


# --- Outside DRF views --------------------------------------------------------


def _json_error(code, message: str, status_code: int) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status_code)


@csrf_exempt  # a 404 changes nothing; CSRF's own refusal would be an HTML page
def api_not_found(request, *args, **kwargs) -> JsonResponse:
    """Any /api/ path no route matched, whatever the method."""
    message = "No such API endpoint."
    path = request.path_info
    if not path.endswith("/"):
        try:
            resolve(path + "/")
        except Resolver404:
            pass
        else:
            message = (
                f"No such API endpoint; did you mean {path}/ (API paths end with /)?"
            )
    return _json_error(ErrorCode.NOT_FOUND, message, 404)


def _is_api(request) -> bool:
    return request.path_info.startswith("/api/")


def handler404(request, exception=None):
    """For config/urls.py: JSON for /api/ paths, Django's page elsewhere."""
    if _is_api(request):
        return _json_error(ErrorCode.NOT_FOUND, "Not found.", 404)
    return defaults.page_not_found(request, exception)


def csrf_failure(request, reason=""):
    """For settings.CSRF_FAILURE_VIEW: JSON for /api/ paths, Django's page elsewhere."""
    if _is_api(request):
        return _json_error(ErrorCode.FORBIDDEN, f"CSRF check failed: {reason}", 403)
    from django.views.csrf import csrf_failure as django_csrf_failure

    return django_csrf_failure(request, reason=reason)


def handler500(request):
    """For config/urls.py: JSON for /api/ paths, Django's page elsewhere."""
    if _is_api(request):
        return _json_error(
            ErrorCode.SERVER_ERROR, "Something went wrong on our side.", 500
        )
    return defaults.server_error(request)


# --- Schema -------------------------------------------------------------------


class ErrorDocumentingSchema(AutoSchema):
    """drf-spectacular's AutoSchema plus the error responses of each operation.

    400 where a body or query parameters can be wrong, 401/403 where
    authentication or permission is checked (403 also covers CSRF for session
    clients), 404 where the path names an object or a cursor is taken, 429
    always (throttling). Explicit `@extend_schema(responses=...)` entries win.
    """

    def _resolve_path_parameters(self, variables):
        # Object ids are matched by a UUID regex in the URL (so that other
        # strings never reach the database); to clients they are plain UUIDs.
        parameters = super()._resolve_path_parameters(variables)
        for parameter in parameters:
            if "[0-9a-fA-F]{8}" in parameter["schema"].get("pattern", ""):
                parameter["schema"] = {"type": "string", "format": "uuid"}
        return parameters

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        from restapi.serializers import ErrorSerializer

        wanted: dict[str, str] = {}
        has_body = (
            self.method in ("POST", "PUT", "PATCH")
            and self.get_request_serializer() is not None
        )
        has_query = self.method == "GET" and self._is_list_view()
        if has_body or has_query:
            wanted["400"] = "The request is invalid (error.details names the fields)."
        public = any(
            isinstance(permission, AllowAny)
            for permission in self.view.get_permissions()
        )
        if not public:
            wanted["401"] = "Not authenticated: send `Authorization: Token <token>`."
            wanted["403"] = (
                "Not allowed (role, staff-only endpoint, or CSRF for sessions)."
            )
        if "{" in self.path or has_query:
            wanted["404"] = "No such object (or not visible to the caller)."
        wanted["429"] = "Throttled; retry after the `Retry-After` header's seconds."
        for code, description in wanted.items():
            if code not in responses:
                response = self._get_response_for_code(
                    ErrorSerializer, code, direction=direction
                )
                response["description"] = description
                responses[code] = response
        return responses
