"""The agents REST API: agent configs and the staff overview of active runs.

Everyone authenticated reads enabled agents; staff see every agent and write
them. The runs of threads, as their people see them, are chat/run_api.py's.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.db.models import ProtectedError, QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, mixins, viewsets
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAdminUser

from agents.models import ACTIVE_RUN_STATUSES, AgentConfig, Run
from agents.serializers import AgentConfigSerializer, StreamSerializer
from realtime.errors import ServiceError
from realtime.eventlog import get_event_log
from restapi.errors import ApiErrorCode
from restapi.serializers import ErrorSerializer
from restapi.views import ApiViewMixin


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
