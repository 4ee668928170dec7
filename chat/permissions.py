"""Who may do what in a thread: the one place the API and the socket both ask."""

from __future__ import annotations

from django.contrib.auth import get_user_model

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


def thread_role_now(*, thread: Thread, user) -> Role | None:
    """The user's role as the database has it now, for a write in progress.

    Call inside the write's transaction: the membership row stays locked until
    it commits, so a removal or role change (which writes that row) is ordered
    wholly before this write (the write is refused) or after it (the write was
    stored while the role allowed it), never beside it. The socket's and the
    API's earlier reads are only hints for quick refusals.
    """
    if user is None or not user.is_authenticated:
        return None
    key = (str(thread.pk), user.pk)
    return thread_roles_now(pairs={key}, threads={key[0]: thread})[key]


def thread_roles_now(*, pairs: set[tuple[str, int]], threads: dict) -> dict:
    """`thread_role_now` for many (thread id, user id) pairs in two statements
    (a burst of messages); `threads` maps thread ids to their rows, read in the
    same transaction. Pairs whose thread is missing get None."""
    user_ids = {user_id for _, user_id in pairs}
    accounts = {
        pk: (active, staff)
        for pk, active, staff in get_user_model()
        .objects.filter(pk__in=user_ids)
        .values_list("pk", "is_active", "is_staff")
    }
    members = [
        (thread_id, user_id)
        for thread_id, user_id in pairs
        if thread_id in threads and threads[thread_id].owner_id != user_id
    ]
    member_roles = {}
    if members:
        member_roles = {
            (str(thread_id), user_id): role
            for thread_id, user_id, role in ThreadMember.objects.select_for_update()
            .filter(
                thread_id__in={thread_id for thread_id, _ in members},
                user_id__in={user_id for _, user_id in members},
            )
            .values_list("thread_id", "user_id", "role")
        }
    roles = {}
    for thread_id, user_id in pairs:
        active, staff = accounts.get(user_id, (False, False))
        thread = threads.get(thread_id)
        if thread is None or not active:
            roles[(thread_id, user_id)] = None
        elif thread.owner_id == user_id:
            roles[(thread_id, user_id)] = Role.OWNER
        elif (thread_id, user_id) in member_roles:
            roles[(thread_id, user_id)] = Role(member_roles[(thread_id, user_id)])
        else:
            roles[(thread_id, user_id)] = Role.STAFF if staff else None
    return roles


def require_role(role: Role | None, allowed, *, action: str) -> Role:
    """`role` when `allowed(role)`, else the ServiceError for `action`."""
    if not allowed(role):
        raise permission_error(role, action=action)
    return role


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
    from realtime.errors import ErrorCode, ServiceError

    if role == Role.OBSERVER:
        return ServiceError(
            ErrorCode.READ_ONLY,
            f"You are observing this thread; you cannot {action}.",
            status=403,
        )
    if role is None:
        return ServiceError(
            ErrorCode.FORBIDDEN,
            f"You no longer have access to this thread; you cannot {action}.",
            status=403,
        )
    return ServiceError(
        ErrorCode.FORBIDDEN, f"Your role does not allow you to {action}.", status=403
    )


def access_now(
    *, user_ids_by_thread: dict[str, set[int]], token_keys: set[str]
) -> dict:
    """What open connections may still do, read in one trip: for each thread
    (None when it is gone) the role of each of the given users (None when they
    lost access), `inactive` users and the `live_tokens` among `token_keys`.

    `{"roles": {thread_id: {user_id: Role | None} | None}, "inactive": set,
    "live_tokens": set}`.
    """
    from rest_framework.authtoken.models import Token

    user_ids = (
        set().union(*user_ids_by_thread.values()) if user_ids_by_thread else set()
    )
    accounts = dict(
        (pk, (active, staff))
        for pk, active, staff in get_user_model()
        .objects.filter(pk__in=user_ids)
        .values_list("pk", "is_active", "is_staff")
    )
    owners = {
        str(pk): owner_id
        for pk, owner_id in Thread.objects.filter(
            pk__in=list(user_ids_by_thread)
        ).values_list("pk", "owner_id")
    }
    memberships = {
        (str(thread_id), user_id): role
        for thread_id, user_id, role in ThreadMember.objects.filter(
            thread_id__in=list(owners), user_id__in=user_ids
        ).values_list("thread_id", "user_id", "role")
    }
    roles: dict = {}
    for thread_id, users in user_ids_by_thread.items():
        owner_id = owners.get(thread_id)
        if owner_id is None:
            roles[thread_id] = None
            continue
        roles[thread_id] = {}
        for user_id in users:
            active, staff = accounts.get(user_id, (False, False))
            member_role = memberships.get((thread_id, user_id))
            if not active:
                role = None
            elif owner_id == user_id:
                role = Role.OWNER
            elif member_role:
                role = Role(member_role)
            else:
                role = Role.STAFF if staff else None
            roles[thread_id][user_id] = role
    live_tokens = (
        set(
            Token.objects.filter(key__in=list(token_keys)).values_list("key", flat=True)
        )
        if token_keys
        else set()
    )
    inactive = {pk for pk in user_ids if not accounts.get(pk, (False,))[0]}
    return {"roles": roles, "inactive": inactive, "live_tokens": live_tokens}
