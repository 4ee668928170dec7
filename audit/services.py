"""Writing audit events. Receivers (audit/receivers.py) and the few services
that alone know the actor call these; nothing else writes AuditEvent rows.

An event is written in a savepoint of the caller's transaction: it commits
with the change it records (and not without it), and should writing it fail,
the change still goes through and the failure is logged.
"""

from __future__ import annotations

import hashlib
import logging

from django.db import transaction

from audit.context import current_origin, request_ip
from audit.models import AuditAction, AuditEvent

logger = logging.getLogger(__name__)


def _user_or_none(user):
    return (
        user if user is not None and getattr(user, "is_authenticated", False) else None
    )


def audit_record(
    *,
    action: AuditAction,
    actor=None,
    target_type: str = "",
    target_id: object = "",
    target_repr: str = "",
    thread_id=None,
    changes: dict | None = None,
    details: dict | None = None,
    ip: str | None = None,
    request=None,
) -> AuditEvent | None:
    """Append one event. The actor defaults to the user of the current request,
    the IP to the current request's or socket's (audit/context.py)."""
    origin = current_origin()
    actor = _user_or_none(actor)
    if actor is None and origin is not None:
        actor = origin.user
    if ip is None:
        ip = request_ip(request) if request is not None else None
    if ip is None and origin is not None:
        ip = origin.ip
    event = AuditEvent(
        action=action,
        actor_id=actor.pk if actor else None,
        actor_username=actor.get_username() if actor else "",
        ip=ip,
        target_type=target_type,
        target_id=str(target_id or "")[:100],
        target_repr=str(target_repr or "")[:200],
        thread_id=thread_id,
        changes=changes or {},
        details=details or {},
    )
    try:
        with transaction.atomic():
            event.save()
    except Exception:
        logger.exception("could not record the audit event %s", action)
        return None
    return event


def token_fingerprint(key: str) -> str:
    """What identifies a token in the log: never the key, a digest of it."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def audit_login(*, request, user, method: str) -> AuditEvent | None:
    """A successful login (`method`: "session", "token")."""
    return audit_record(
        action=AuditAction.LOGIN,
        actor=user,
        target_type="user",
        target_id=user.pk,
        target_repr=user.get_username(),
        details={"method": method},
        request=request,
    )


def audit_run_cancel(*, actor, run) -> AuditEvent | None:
    """A member stopped a run (chat.services.thread_run_cancel)."""
    return audit_record(
        action=AuditAction.RUN_CANCEL,
        actor=actor,
        target_type="run",
        target_id=run.pk,
        target_repr=f"run {run.pk}",
        thread_id=run.thread_id,
        details={"status": str(run.status)},
    )
