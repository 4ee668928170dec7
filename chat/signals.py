"""Revoking a token or logging out closes the sockets that credential opened;
a change to who may open which thread is broadcast to every web process, which
drops what it cached of it (chat/connectcache.py) and closes or updates the
connections it touches (chat/access.py)."""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from rest_framework.authtoken.models import Token

from agents.models import AgentConfig
from chat.auth import REVOKED, credential_group
from chat.connectcache import (
    CHANGED_EVERYTHING,
    CHANGED_TOKENS,
    broadcast_change,
    changed_members,
    changed_thread,
    changed_user,
)
from chat.models import Thread, ThreadMember

logger = logging.getLogger(__name__)


def close_sockets_of(group: str) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(
            group, {"type": REVOKED, "group": group}
        )
    except Exception as error:
        logger.warning("could not close revoked sockets: %s", error)


@receiver(post_delete, sender=Token)
def token_deleted(sender, instance: Token, **kwargs) -> None:
    broadcast_change(CHANGED_TOKENS)
    broadcast_change(changed_user(instance.user_id))  # its SSE streams end too
    close_sockets_of(credential_group("token", instance.key))


@receiver(user_logged_out)
def session_ended(sender, request, user, **kwargs) -> None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        close_sockets_of(credential_group("session", session_key))


@receiver(post_save, sender=Thread)
def thread_changed(sender, instance: Thread, **kwargs) -> None:
    broadcast_change(changed_thread(instance.pk))


@receiver(post_delete, sender=Thread)
def thread_deleted(sender, instance: Thread, **kwargs) -> None:
    broadcast_change(changed_members(instance.pk))


@receiver(post_save, sender=ThreadMember)
@receiver(post_delete, sender=ThreadMember)
def member_changed(sender, instance: ThreadMember, **kwargs) -> None:
    broadcast_change(changed_members(instance.thread_id))


@receiver(post_save, sender=get_user_model())
@receiver(post_delete, sender=get_user_model())
def user_changed(sender, instance, update_fields=None, **kwargs) -> None:
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # every login saves this; nothing cached depends on it
    broadcast_change(changed_user(instance.pk))


@receiver(post_save, sender=AgentConfig)
@receiver(post_delete, sender=AgentConfig)
def agent_changed(sender, **kwargs) -> None:
    broadcast_change(CHANGED_EVERYTHING)
