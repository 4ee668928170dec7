"""Revoking a token or logging out closes the sockets that credential opened."""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_delete
from django.dispatch import receiver
from rest_framework.authtoken.models import Token

from chat.auth import credential_group

logger = logging.getLogger(__name__)


def close_sockets_of(group: str) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(group, {"type": "auth.revoked"})
    except Exception as error:
        logger.warning("could not close revoked sockets: %s", error)


@receiver(post_delete, sender=Token)
def token_deleted(sender, instance: Token, **kwargs) -> None:
    close_sockets_of(credential_group("token", instance.key))


@receiver(user_logged_out)
def session_ended(sender, request, user, **kwargs) -> None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        close_sockets_of(credential_group("session", session_key))
