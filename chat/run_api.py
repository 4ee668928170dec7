"""The runs REST API (/api/runs/): a run's status, timings, usage and error,
and cancelling it.

Runs are visible to whoever may read their thread (others get 404, as if they
did not exist); cancelling needs a writer of the thread (owner, participant),
as on the socket. A run's events stream from chat/sse.py.
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from agents.errors import AgentErrorCode
from agents.models import Run
from agents.serializers import (
    RUN_STATUS_FILTER,
    RunCancelSerializer,
    RunFilterSerializer,
    RunSerializer,
)
from chat.permissions import can_write, permission_error, thread_role
from chat.selectors import run_list_for_user
from chat.services import thread_run_cancel
from realtime.errors import ServiceError
from restapi.serializers import ErrorSerializer
from restapi.views import UUID_PATTERN, ApiViewMixin, validated


@extend_schema(tags=["runs"])
class RunViewSet(ApiViewMixin, viewsets.GenericViewSet):
    """Runs in threads the caller may read; others do not exist for it (404)."""

    queryset = Run.objects.none()
    serializer_class = RunSerializer
    lookup_value_regex = UUID_PATTERN

    def get_queryset(self) -> QuerySet[Run]:
        if getattr(self, "swagger_fake_view", False):
            return Run.objects.none()
        return run_list_for_user(user=self.request.user)

    def _get_run(self, pk) -> Run:
        run = self.get_queryset().filter(pk=pk).first()
        if run is None:
            raise ServiceError(AgentErrorCode.RUN_NOT_FOUND, "No such run.", status=404)
        return run

    @extend_schema(
        parameters=[RUN_STATUS_FILTER],
        responses=RunSerializer(many=True),
        summary="Runs in threads the caller may read, newest first",
        description="Filter with `status`, `agent` (name) and `thread` (id).",
    )
    def list(self, request):
        filters = validated(RunFilterSerializer, request.query_params)
        runs = self.get_queryset()
        if "status" in filters:
            runs = runs.filter(status=filters["status"])
        if "agent" in filters:
            runs = runs.filter(agent__name=filters["agent"])
        if "thread" in filters:
            runs = runs.filter(thread_id=filters["thread"])
        page = self.paginate_queryset(runs.order_by("-created_at"))
        return self.get_paginated_response(RunSerializer(page, many=True).data)

    @extend_schema(
        responses=RunSerializer, summary="A run's status, timings, usage and error"
    )
    def retrieve(self, request, pk=None):
        return Response(RunSerializer(self._get_run(pk)).data)

    @extend_schema(
        request=RunCancelSerializer,
        responses={
            200: RunSerializer,
            409: OpenApiResponse(
                ErrorSerializer, description="run_not_active: it already ended."
            ),
        },
        summary="Cancel a run (owner, participants)",
        description=(
            "A queued run is cancelled at once (`status` `cancelled`); a running one "
            "is asked to stop (`cancel_requested` true) and ends `cancelled` shortly."
        ),
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        run = self._get_run(pk)
        role = thread_role(thread=run.thread, user=request.user)
        if not can_write(role):
            raise permission_error(role, action="cancel runs")
        reason = ""
        if request.content_type == "application/json" and request.body:
            # The body is optional: a bare POST cancels without a reason.
            reason = validated(RunCancelSerializer, request.data).get("reason") or ""
        thread_run_cancel(
            actor=request.user, thread_id=run.thread_id, run_id=run.pk, reason=reason
        )
        return Response(RunSerializer(self._get_run(pk)).data)
