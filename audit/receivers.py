"""Signal receivers that record audit events; the actor and IP come from the
request or socket being served (audit/context.py).

Recorded here: thread membership added, role changed, removed; thread deleted
(with who was in it); agent config created, changed (before and after of each
field that changed), deleted; API token created and revoked; logins, failed
logins and logouts; a user's staff, superuser or active flag changed.
Run cancels and token logins are recorded by the services that know the actor
(audit.services.audit_run_cancel, audit_login).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import (
    user_logged_in,
    user_logged_out,
    user_login_failed,
)
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save
from django.dispatch import receiver
from rest_framework.authtoken.models import Token

from agents.models import AgentConfig
from audit.context import current_origin
from audit.models import AuditAction
from audit.services import audit_record, token_fingerprint
from chat.models import Thread, ThreadMember

User = get_user_model()


def _plain(value):
    """A JSON-friendly copy of a field's value."""
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    return str(value)


def _diff(before: dict, after: dict) -> dict:
    return {
        field: {"before": before.get(field), "after": after[field]}
        for field in after
        if before.get(field) != after[field]
    }


def _username_of(user_id) -> str:
    return (
        User.objects.filter(pk=user_id).values_list("username", flat=True).first() or ""
    )


# --- thread membership ------------------------------------------------------------


@receiver(pre_save, sender=ThreadMember)
def member_before_save(sender, instance: ThreadMember, **kwargs) -> None:
    instance._audit_role_before = (
        ThreadMember.objects.filter(pk=instance.pk)
        .values_list("role", flat=True)
        .first()
        if instance.pk
        else None
    )


@receiver(post_save, sender=ThreadMember)
def member_saved(sender, instance: ThreadMember, created: bool, **kwargs) -> None:
    before = getattr(instance, "_audit_role_before", None)
    if not created and before == instance.role:
        return  # saved unchanged (sharing again with the same role)
    username = _username_of(instance.user_id)
    audit_record(
        action=AuditAction.MEMBER_ADD if created else AuditAction.MEMBER_ROLE_CHANGE,
        target_type="user",
        target_id=instance.user_id,
        target_repr=username,
        thread_id=instance.thread_id,
        changes={
            "role": {"before": None if created else before, "after": instance.role}
        },
        details={"username": username},
    )


@receiver(post_delete, sender=ThreadMember)
def member_deleted(sender, instance: ThreadMember, origin=None, **kwargs) -> None:
    if isinstance(origin, Thread):
        return  # part of the thread's deletion, recorded as that
    username = _username_of(instance.user_id)
    audit_record(
        action=AuditAction.MEMBER_REMOVE,
        target_type="user",
        target_id=instance.user_id,
        target_repr=username,
        thread_id=instance.thread_id,
        changes={"role": {"before": instance.role, "after": None}},
        details={"username": username},
    )


# --- threads ----------------------------------------------------------------------


@receiver(pre_delete, sender=Thread)
def thread_before_delete(sender, instance: Thread, **kwargs) -> None:
    instance._audit_members = [
        {"username": username, "role": role}
        for username, role in ThreadMember.objects.filter(thread=instance)
        .order_by("created_at")
        .values_list("user__username", "role")
    ]


@receiver(post_delete, sender=Thread)
def thread_deleted(sender, instance: Thread, **kwargs) -> None:
    audit_record(
        action=AuditAction.THREAD_DELETE,
        target_type="thread",
        target_id=instance.pk,
        target_repr=instance.title or str(instance.pk),
        thread_id=instance.pk,
        details={
            "title": instance.title,
            "owner": _username_of(instance.owner_id),
            "agent_id": instance.agent_id,
            "members": getattr(instance, "_audit_members", []),
        },
    )


# --- agent configs ----------------------------------------------------------------

# version follows from the other fields: each change bumps it (agents/models.py).
AGENT_FIELDS_NOT_AUDITED = {"id", "created_at", "updated_at", "version"}


def _agent_fields() -> list[str]:
    return [
        field.attname
        for field in AgentConfig._meta.concrete_fields
        if field.attname not in AGENT_FIELDS_NOT_AUDITED
    ]


def _agent_values(agent: AgentConfig) -> dict:
    return {name: _plain(getattr(agent, name)) for name in _agent_fields()}


@receiver(pre_save, sender=AgentConfig)
def agent_before_save(sender, instance: AgentConfig, **kwargs) -> None:
    stored = (
        AgentConfig.objects.filter(pk=instance.pk).values(*_agent_fields()).first()
        if instance.pk
        else None
    )
    instance._audit_before = (
        {name: _plain(value) for name, value in stored.items()} if stored else None
    )


@receiver(post_save, sender=AgentConfig)
def agent_saved(sender, instance: AgentConfig, created: bool, **kwargs) -> None:
    before = getattr(instance, "_audit_before", None)
    changes = _diff(before or {}, _agent_values(instance))
    if before is not None and not changes:
        return
    audit_record(
        action=AuditAction.AGENT_CREATE
        if created or before is None
        else AuditAction.AGENT_UPDATE,
        target_type="agent",
        target_id=instance.pk,
        target_repr=instance.name,
        changes=changes,
    )


@receiver(post_delete, sender=AgentConfig)
def agent_deleted(sender, instance: AgentConfig, **kwargs) -> None:
    audit_record(
        action=AuditAction.AGENT_DELETE,
        target_type="agent",
        target_id=instance.pk,
        target_repr=instance.name,
        changes={
            name: {"before": value, "after": None}
            for name, value in _agent_values(instance).items()
        },
    )


# --- API tokens -------------------------------------------------------------------


def _token_event(action: AuditAction, token: Token, details: dict) -> None:
    origin = current_origin()
    acting = origin.user if origin is not None else None
    username = _username_of(token.user_id)
    audit_record(
        action=action,
        actor=acting or token.user,
        target_type="token",
        target_id=token_fingerprint(token.key),
        target_repr=f"token of {username}",
        details={"user": username, **details},
    )


@receiver(post_save, sender=Token)
def token_saved(sender, instance: Token, created: bool, **kwargs) -> None:
    if created:
        _token_event(AuditAction.TOKEN_CREATE, instance, {})


@receiver(post_delete, sender=Token)
def token_deleted(sender, instance: Token, origin=None, **kwargs) -> None:
    reason = "user_deleted" if isinstance(origin, User) else "revoked"
    _token_event(AuditAction.TOKEN_REVOKE, instance, {"reason": reason})


# --- logins -----------------------------------------------------------------------


@receiver(user_logged_in)
def logged_in(sender, request, user, **kwargs) -> None:
    from audit.services import audit_login

    audit_login(request=request, user=user, method="session")


@receiver(user_logged_out)
def logged_out(sender, request, user, **kwargs) -> None:
    if user is None:
        return
    audit_record(
        action=AuditAction.LOGOUT,
        actor=user,
        target_type="user",
        target_id=user.pk,
        target_repr=user.get_username(),
        request=request,
    )


@receiver(user_login_failed)
def login_failed(sender, credentials: dict, request=None, **kwargs) -> None:
    # Django has already masked the password in `credentials`; keep only the name.
    username = str(credentials.get("username") or "")[:150]
    audit_record(
        action=AuditAction.LOGIN_FAILED,
        actor=None,
        target_type="user",
        target_repr=username,
        details={"username": username},
        request=request,
    )


# --- users' flags -----------------------------------------------------------------

USER_FLAGS = ("is_staff", "is_superuser", "is_active")


@receiver(pre_save, sender=User)
def user_before_save(sender, instance, update_fields=None, **kwargs) -> None:
    if update_fields is not None and not set(update_fields) & set(USER_FLAGS):
        instance._audit_flags_before = None  # e.g. last_login on every login
        return
    instance._audit_flags_before = (
        User.objects.filter(pk=instance.pk).values(*USER_FLAGS).first()
        if instance.pk
        else None
    )


@receiver(post_save, sender=User)
def user_saved(sender, instance, created: bool, **kwargs) -> None:
    before = getattr(instance, "_audit_flags_before", None)
    if created or before is None:
        return
    changes = _diff(before, {flag: getattr(instance, flag) for flag in USER_FLAGS})
    if changes:
        audit_record(
            action=AuditAction.USER_UPDATE,
            target_type="user",
            target_id=instance.pk,
            target_repr=instance.get_username(),
            changes=changes,
        )
