"""The Parley user of an OpenID Connect login: found by issuer and subject,
created on first login, kept in step with the provider's claims.

Staff mapping: with `OIDC_STAFF_GROUP` set, every login sets `is_staff` to
whether that value is in the claim `OIDC_GROUPS_CLAIM` (default `groups`) of
the ID token or userinfo; the provider decides, both ways. Superusers keep
their staff flag. Unset: single sign-on never changes `is_staff`. Changes go
through `save()`, so the audit log records them (`user.update`).
"""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from sso.errors import SsoRefusal, SsoRefused
from sso.models import OidcIdentity

USERNAME_MAX = 150
_NOT_IN_USERNAME = re.compile(r"[^\w.@+-]")


def sso_groups_of(claims: dict) -> list[str]:
    """The groups (or roles) the provider says the user is in."""
    groups = claims.get(settings.OIDC_GROUPS_CLAIM) or []
    if isinstance(groups, str):
        groups = [groups]
    return [str(group) for group in groups] if isinstance(groups, list) else []


def sso_is_staff(claims: dict) -> bool | None:
    """Staff by the mapping, or None when no mapping is configured."""
    if not settings.OIDC_STAFF_GROUP:
        return None
    return settings.OIDC_STAFF_GROUP in sso_groups_of(claims)


def _free_username(claims: dict) -> str:
    email = str(claims.get("email") or "")
    wanted = str(claims.get("preferred_username") or email.split("@")[0] or "user")
    base = _NOT_IN_USERNAME.sub("-", wanted).strip("-")[: USERNAME_MAX - 8] or "user"
    users = get_user_model().objects
    candidate, number = base, 1
    while users.filter(username__iexact=candidate).exists():
        number += 1
        candidate = f"{base}-{number}"
    return candidate


@transaction.atomic
def sso_user_get_or_create(*, issuer: str, claims: dict):
    """The user these claims (ID token and userinfo, merged) log in as."""
    subject = str(claims.get("sub") or "")
    if not subject:
        raise SsoRefused(SsoRefusal.NO_SUBJECT, "the provider sent no sub claim")
    identity = (
        OidcIdentity.objects.select_related("user")
        .filter(issuer=issuer, subject=subject)
        .first()
    )
    if identity is None:
        user = get_user_model().objects.create_user(
            username=_free_username(claims), email=str(claims.get("email") or "")
        )  # no password: this user logs in through the provider only
        identity = OidcIdentity.objects.create(
            user=user, issuer=issuer, subject=subject
        )
    user = identity.user
    changed = _apply_claims(user, claims)
    if changed:
        user.save(update_fields=changed)
    identity.last_login_at = timezone.now()
    identity.save(update_fields=["last_login_at"])
    return user


def _apply_claims(user, claims: dict) -> list[str]:
    """Copy what the provider says onto the user; the names of changed fields."""
    wanted = {
        "email": str(claims.get("email") or user.email)[:254],
        "first_name": str(claims.get("given_name") or user.first_name)[:150],
        "last_name": str(claims.get("family_name") or user.last_name)[:150],
    }
    staff = sso_is_staff(claims)
    if staff is not None and not user.is_superuser:
        wanted["is_staff"] = staff
    changed = []
    for field, value in wanted.items():
        if getattr(user, field) != value:
            setattr(user, field, value)
            changed.append(field)
    return changed
