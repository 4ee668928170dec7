"""`GET /api/usage/` (totals with filters and groups: your own, or staff
everyone's), `GET /api/usage/budget/` (what your budgets leave this month)
and `/api/usage/budgets/` (staff: set budgets)."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, viewsets
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.response import Response

from chat.selectors import thread_get_for_user
from realtime.errors import ErrorCode, ServiceError
from restapi.serializers import ErrorSerializer
from restapi.views import ApiViewMixin, validated
from usage import services
from usage.models import Budget, UsageRecord
from usage.selectors import (
    GROUPS,
    budget_list,
    budget_status,
    usage_records,
    usage_summary,
)
from usage.serializers import (
    BudgetSerializer,
    BudgetStatusFilterSerializer,
    BudgetStatusSerializer,
    UsageFilterSerializer,
    UsageSummarySerializer,
)

# The filters as clients send them (`from`, `to`: UsageFilterSerializer maps
# them onto its fields).
USAGE_PARAMETERS = [
    OpenApiParameter(
        "user", str, description="Only runs asked by this username (staff)."
    ),
    OpenApiParameter("thread", OpenApiTypes.UUID, description="Only this thread."),
    OpenApiParameter("agent", str, description="Only this agent (name)."),
    OpenApiParameter(
        "from", OpenApiTypes.DATE, description="From this day (UTC), included."
    ),
    OpenApiParameter(
        "to", OpenApiTypes.DATE, description="To this day (UTC), included."
    ),
    OpenApiParameter(
        "group_by", str, enum=list(GROUPS), description="Totals per group."
    ),
]


@extend_schema(tags=["usage"])
class UsageView(ApiViewMixin, GenericAPIView):
    serializer_class = UsageSummarySerializer
    queryset = UsageRecord.objects.none()
    pagination_class = None

    @extend_schema(
        parameters=USAGE_PARAMETERS,
        responses={
            200: UsageSummarySerializer,
            400: OpenApiResponse(
                ErrorSerializer, description="A bad filter (details name it)."
            ),
            403: OpenApiResponse(
                ErrorSerializer, description="`user` other than you (staff only)."
            ),
        },
        summary="Tokens and cost: your runs, or (staff) everyone's",
    )
    def get(self, request):
        filters = validated(UsageFilterSerializer, request.query_params)
        username = filters.pop("user", None)
        group_by = filters.pop("group_by", None)
        if not request.user.is_staff:
            if username not in (None, request.user.username):
                raise ServiceError(
                    ErrorCode.FORBIDDEN,
                    "Only staff see other people's usage.",
                    status=403,
                )
            records = usage_records(user=request.user, **_filters(filters))
        else:
            records = usage_records(username=username, **_filters(filters))
        summary = usage_summary(records=records, group_by=group_by)
        return Response({**summary, "group_by": group_by})


def _filters(filters: dict) -> dict:
    return {
        "thread_id": filters.get("thread"),
        "agent": filters.get("agent"),
        "date_from": filters.get("date_from"),
        "date_to": filters.get("date_to"),
    }


@extend_schema(tags=["usage"])
class BudgetStatusView(ApiViewMixin, GenericAPIView):
    serializer_class = BudgetStatusSerializer
    queryset = Budget.objects.none()
    pagination_class = None

    @extend_schema(
        parameters=[BudgetStatusFilterSerializer],
        responses={
            200: BudgetStatusSerializer(many=True),
            400: OpenApiResponse(ErrorSerializer, description="`thread` is no id."),
            404: OpenApiResponse(
                ErrorSerializer, description="No such thread you may read."
            ),
        },
        summary="Your budgets this month: used and limit of each ([] = unlimited)",
    )
    def get(self, request):
        filters = validated(BudgetStatusFilterSerializer, request.query_params)
        thread = None
        if "thread" in filters:  # 404 for a thread the caller may not read
            thread, _role = thread_get_for_user(
                thread_id=filters["thread"], user=request.user
            )
        return Response(budget_status(user=request.user, thread=thread))


@extend_schema(tags=["usage"])
class BudgetViewSet(
    ApiViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Monthly budgets of users and threads (staff only)."""

    permission_classes = [IsAuthenticated, IsAdminUser]
    serializer_class = BudgetSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self) -> QuerySet[Budget]:
        return budget_list()

    def perform_create(self, serializer) -> None:
        serializer.instance, _created = services.budget_set(**serializer.validated_data)

    def perform_update(self, serializer) -> None:
        budget = serializer.instance
        data = {
            "user": budget.user,
            "thread": budget.thread,
            "monthly_tokens": budget.monthly_tokens,
            "monthly_cost": budget.monthly_cost,
            "hard": budget.hard,
            **serializer.validated_data,
        }
        if data["user"] != budget.user or data["thread"] != budget.thread:
            services.budget_delete(budget=budget)  # moved to someone else
        serializer.instance, _created = services.budget_set(**data)

    def perform_destroy(self, instance) -> None:
        services.budget_delete(budget=instance)
