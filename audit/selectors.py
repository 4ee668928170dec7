"""Reads of the audit log."""

from __future__ import annotations

from django.db.models import QuerySet

from audit.models import AuditEvent


def audit_event_list(
    *, actor=None, action=None, thread=None, since=None, until=None
) -> QuerySet[AuditEvent]:
    """Events, newest first, filtered by actor (username), action, thread and a
    time range [since, until)."""
    events = AuditEvent.objects.all()
    if actor:
        events = events.filter(actor_username=actor)
    if action:
        events = events.filter(action=action)
    if thread:
        events = events.filter(thread_id=thread)
    if since:
        events = events.filter(created_at__gte=since)
    if until:
        events = events.filter(created_at__lt=until)
    return events.order_by("-created_at", "-id")
