"""Routes of the audit app, mounted at /api/audit/ (config/urls.py)."""

from django.urls import path

from audit.api import AuditEventListView

urlpatterns = [path("", AuditEventListView.as_view(), name="api-audit")]
