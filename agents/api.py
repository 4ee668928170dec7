"""The agents REST API: agent configs, runs (status, cancel) and the staff stream overview.

Everyone authenticated reads enabled agents; staff see every agent and write
them. Runs are visible to whoever may read their thread; cancelling needs a
writer (owner, participant), as on the socket.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.db.models import ProtectedError, QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, mixins, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAdminUser
from rest_framework.response import Response

from agents.errors import AgentErrorCode
from agents.models import ACTIVE_RUN_STATUSES, AgentConfig, Run
from agents.serializers import (
    RUN_STATUS_FILTER,
    AgentConfigSerializer,
    RunCancelSerializer,
    RunFilterSerializer,
    RunSerializer,
    StreamSerializer,
)
from chat.permissions import can_write, permission_error, thread_role
from chat.selectors import thread_list_for_user
from chat.services import thread_run_cancel
from realtime.errors import ServiceError
from realtime.eventlog import get_event_log
from restapi.errors import ApiErrorCode
from restapi.serializers import ErrorSerializer
from restapi.views import UUID_PATTERN, ApiViewMixin, validated


class IsStaffOrReadOnly(BasePermission):
    message = "Only staff may change agents."

    def has_permission(self, request, view) -> bool:
        return request.method in SAFE_METHODS or bool(
            request.user and request.user.is_staff
        )


@extend_schema(tags=["agents"])
class AgentConfigViewSet(
    ApiViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Agent configs, addressed by name."""

    queryset = AgentConfig.objects.all()
    serializer_class = AgentConfigSerializer
    lookup_field = "name"
    lookup_value_regex = r"[-a-zA-Z0-9_]+"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_permissions(self):
        return [*super().get_permissions(), IsStaffOrReadOnly()]

    def get_queryset(self) -> QuerySet[AgentConfig]:
        agents = AgentConfig.objects.order_by("name")
        if getattr(self, "swagger_fake_view", False) or self.request.user.is_staff:
            return agents
        return agents.filter(enabled=True)

    @extend_schema(summary="Agents: enabled ones, or (staff) all")
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(summary="One agent")
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(summary="Create an agent (staff)")
    def create(self, request, *args, **kwargs):
        return super().create(request, *args, **kwargs)

    @extend_schema(summary="Change an agent (staff)")
    def partial_update(self, request, *args, **kwargs):
        return super().partial_update(request, *args, **kwargs)

    @extend_schema(
        summary="Delete an agent no thread uses (staff)",
        responses={
            204: OpenApiResponse(description="Deleted."),
            409: OpenApiResponse(
                ErrorSerializer,
                description="agent_in_use: threads use it; disable it instead.",
            ),
        },
    )
    def destroy(self, request, *args, **kwargs):
        return super().destroy(request, *args, **kwargs)

    def perform_destroy(self, instance: AgentConfig) -> None:
        try:
            instance.delete()
        except ProtectedError:
            raise ServiceError(
                ApiErrorCode.AGENT_IN_USE,
                f"Threads or runs use the agent {instance.name!r}; disable it instead.",
                status=409,
            ) from None


def runs_visible_to(user) -> QuerySet[Run]:
    runs = Run.objects.select_related("agent", "requested_by", "thread")
    if user.is_staff:
        return runs
    return runs.filter(thread__in=thread_list_for_user(user=user).values("pk"))


@extend_schema(tags=["runs"])
class RunViewSet(ApiViewMixin, viewsets.GenericViewSet):
    """Runs in threads the caller may read; others do not exist for it (404)."""

    queryset = Run.objects.none()
    serializer_class = RunSerializer
    lookup_value_regex = UUID_PATTERN

    def get_queryset(self) -> QuerySet[Run]:
        if getattr(self, "swagger_fake_view", False):
            return Run.objects.none()
        return runs_visible_to(self.request.user)

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


async def _presence_counts(thread_ids: set[str]) -> list[tuple[str, int]]:
    log = get_event_log()
    return [
        (thread_id, len(await log.presence_list(thread_id))) for thread_id in thread_ids
    ]


@extend_schema(tags=["runs"])
class StreamListView(ApiViewMixin, generics.GenericAPIView):
    """Staff: every active run with how long it has been going and who watches it.

    `clients` counts every socket and SSE stream open on the run's thread, on
    every web process (the thread's presence).
    """

    permission_classes = [IsAdminUser]
    serializer_class = StreamSerializer

    def get_queryset(self) -> QuerySet[Run]:
        return (
            Run.objects.filter(status__in=ACTIVE_RUN_STATUSES)
            .select_related("agent", "requested_by", "thread")
            .order_by("created_at")
        )

    @extend_schema(
        responses=StreamSerializer(many=True),
        summary="Active runs, oldest first, with their client counts and ages (staff)",
    )
    def get(self, request):
        runs = self.paginate_queryset(self.get_queryset())
        clients = dict(
            async_to_sync(_presence_counts)({str(run.thread_id) for run in runs})
        )
        data = StreamSerializer(runs, many=True, context={"clients": clients}).data
        return self.get_paginated_response(data)
