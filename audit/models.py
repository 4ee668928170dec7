"""AuditEvent: one row per audited action, never changed or deleted.

The actor is kept as an id and a username, not a foreign key: deleting a user
(or a thread) leaves the record as it was, and nothing ever updates a row.
"""

from __future__ import annotations

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone


class AuditAction(models.TextChoices):
    MEMBER_ADD = "member.add", "Member added"
    MEMBER_ROLE_CHANGE = "member.role_change", "Member role changed"
    MEMBER_REMOVE = "member.remove", "Member removed"
    THREAD_DELETE = "thread.delete", "Thread deleted"
    AGENT_CREATE = "agent.create", "Agent config created"
    AGENT_UPDATE = "agent.update", "Agent config changed"
    AGENT_DELETE = "agent.delete", "Agent config deleted"
    RUN_CANCEL = "run.cancel", "Run cancelled"
    TOKEN_CREATE = "token.create", "API token created"
    TOKEN_REVOKE = "token.revoke", "API token revoked"
    LOGIN = "auth.login", "Login"
    LOGIN_FAILED = "auth.login_failed", "Failed login"
    LOGOUT = "auth.logout", "Logout"
    USER_UPDATE = "user.update", "Staff, superuser or active flag changed"
    # Named for the features that record them (tool approvals, invite links;
    # single sign-on: sso/views.py records SSO_REFUSED).
    TOOL_APPROVE = "tool.approve", "Tool call approved"
    TOOL_DENY = "tool.deny", "Tool call denied"
    INVITE_CREATE = "invite.create", "Invite link created"
    INVITE_ACCEPT = "invite.accept", "Invite link used"
    INVITE_REVOKE = "invite.revoke", "Invite link revoked"
    SSO_REFUSED = "auth.sso_refused", "Single sign-on callback refused"


class AuditEventImmutable(Exception):
    """Audit events are appended, never changed or deleted."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AuditEventImmutable("audit events cannot be changed")

    def delete(self):
        raise AuditEventImmutable("audit events cannot be deleted")


class AuditEvent(models.Model):
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    actor_username = models.CharField(max_length=150, blank=True, db_index=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    action = models.CharField(max_length=40, choices=AuditAction.choices)
    target_type = models.CharField(max_length=20, blank=True)
    target_id = models.CharField(max_length=100, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    thread_id = models.UUIDField(null=True, blank=True, db_index=True)
    # {"field": {"before": ..., "after": ...}} for each field that changed.
    changes = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    details = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["action", "created_at"])]

    def __str__(self) -> str:
        who = self.actor_username or "-"
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {who} {self.action} {self.target_repr}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AuditEventImmutable("audit events cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditEventImmutable("audit events cannot be deleted")
