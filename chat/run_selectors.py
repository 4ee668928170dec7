"""Reads of agent runs as the people of threads see them: a run is visible to
whoever may read its thread (chat/run_api.py serves them)."""

from __future__ import annotations

from django.db.models import QuerySet

from agents.models import Run
from chat.selectors import thread_list_for_user


def run_list_for_user(*, user) -> QuerySet[Run]:
    """The runs in threads `user` may read (staff: every run), with their
    agent, requester and thread."""
    runs = Run.objects.select_related("agent", "requested_by", "thread")
    if user.is_staff:
        return runs
    return runs.filter(thread__in=thread_list_for_user(user=user).values("pk"))
