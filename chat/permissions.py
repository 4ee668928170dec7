"""Who may do what in a thread: the one place the API and the socket both ask."""

from __future__ import annotations

from chat.models import Role, Thread, ThreadMember

WRITER_ROLES = frozenset({Role.OWNER, Role.PARTICIPANT})
MANAGER_ROLES = frozenset({Role.OWNER, Role.STAFF})


def thread_role(*, thread: Thread, user) -> Role | None:
    """The user's role in the thread, or None for a stranger."""
    if user is None or not user.is_authenticated:
        return None
    if thread.owner_id == user.pk:
        return Role.OWNER
    member_role = (
        ThreadMember.objects.filter(thread=thread, user=user)
        .values_list("role", flat=True)
        .first()
    )
    return thread_role_for(thread=thread, user=user, member_role=member_role)


def thread_role_for(*, thread: Thread, user, member_role: str | None) -> Role | None:
    """`thread_role` when the user's membership row (its role, or None) is known."""
    if user is None or not user.is_authenticated:
        return None
    if thread.owner_id == user.pk:
        return Role.OWNER
    if member_role:
        return Role(member_role)
    if user.is_staff:
        return Role.STAFF
    return None


def can_read(role: Role | None) -> bool:
    return role is not None


def can_write(role: Role | None) -> bool:
    """Send messages, cancel runs, answer input requests, change the thread's config."""
    return role in WRITER_ROLES


def can_manage(role: Role | None) -> bool:
    """Rename, share, reset and delete the thread."""
    return role in MANAGER_ROLES


def thread_roles(*, threads, user) -> dict:
    """thread pk -> the user's role, for many threads in one query (API lists)."""
    threads = list(threads)
    if user is None or not user.is_authenticated or not threads:
        return {}
    memberships = dict(
        ThreadMember.objects.filter(thread__in=threads, user=user).values_list(
            "thread_id", "role"
        )
    )
    roles = {}
    for thread in threads:
        if thread.owner_id == user.pk:
            roles[thread.pk] = Role.OWNER
        elif thread.pk in memberships:
            roles[thread.pk] = Role(memberships[thread.pk])
        elif user.is_staff:
            roles[thread.pk] = Role.STAFF
    return roles


def permission_error(role: Role | None, *, action: str):
    """The ServiceError a caller gets for an action its role does not allow.

    Observers get `read_only` (as on the socket); other roles `forbidden`.
    """
    from chat.errors import ErrorCode, ServiceError

    if role == Role.OBSERVER:
        return ServiceError(
            ErrorCode.READ_ONLY,
            f"You are observing this thread; you cannot {action}.",
            status=403,
        )
    return ServiceError(
        ErrorCode.FORBIDDEN, f"Your role does not allow you to {action}.", status=403
    )
