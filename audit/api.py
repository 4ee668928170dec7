"""`GET /api/audit/`: the audit log for staff, newest first, filtered and
paginated like every Parley list (`?limit=&offset=`)."""

from drf_spectacular.utils import extend_schema
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import IsAdminUser, IsAuthenticated

from audit.models import AuditEvent
from audit.selectors import audit_event_list
from audit.serializers import AuditEventSerializer, AuditFilterSerializer
from restapi.views import ApiViewMixin, validated


@extend_schema(tags=["audit"])
class AuditEventListView(ApiViewMixin, GenericAPIView):
    permission_classes = [IsAuthenticated, IsAdminUser]
    serializer_class = AuditEventSerializer
    queryset = AuditEvent.objects.none()

    @extend_schema(
        parameters=[AuditFilterSerializer],
        responses=AuditEventSerializer(many=True),
        summary="The audit log, newest first (staff)",
    )
    def get(self, request):
        filters = validated(AuditFilterSerializer, request.query_params)
        page = self.paginate_queryset(audit_event_list(**filters))
        return self.get_paginated_response(AuditEventSerializer(page, many=True).data)
