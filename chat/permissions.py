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
        ThreadMember.objects.filter(thread=thread, user=user).values_list("role", flat=True).first()
    )
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
