"""The OpenID Connect authentication backend: mozilla-django-oidc's, plus the
checks it leaves out and Parley's way of finding users.

mozilla-django-oidc verifies the ID token's signature (JWKS), algorithm, expiry
and nonce. Added here: the issuer must be `OIDC_ISSUER` and the audience must
hold our client id (the library skips both), and userinfo must be about the
token's subject. Users are matched by issuer and subject (sso/services.py), not
by email as the library does.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from sso.errors import SsoRefusal, SsoRefused
from sso.services import sso_user_get_or_create


class OidcBackend(OIDCAuthenticationBackend):
    def verify_token(self, token, **kwargs):
        payload = super().verify_token(token, **kwargs)
        issuer = payload.get("iss")
        if issuer != settings.OIDC_ISSUER:
            raise SsoRefused(
                SsoRefusal.WRONG_ISSUER,
                f"issuer {str(issuer)[:100]!r}, expected {settings.OIDC_ISSUER!r}",
            )
        audience = payload.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience or []
        if self.OIDC_RP_CLIENT_ID not in audiences:
            raise SsoRefused(SsoRefusal.WRONG_AUDIENCE, "not issued for this client")
        return payload

    def get_or_create_user(self, access_token, id_token, payload):
        try:
            userinfo = self.get_userinfo(access_token, id_token, payload)
        except SuspiciousOperation as error:  # a signed userinfo that fails checks
            raise SsoRefused(SsoRefusal.INVALID_TOKEN, str(error)) from None
        if userinfo.get("sub") != payload.get("sub"):
            raise SsoRefused(SsoRefusal.SUBJECT_MISMATCH, "userinfo is about another")
        return sso_user_get_or_create(
            issuer=settings.OIDC_ISSUER, claims={**payload, **userinfo}
        )

    def get_user(self, user_id):
        # As ModelBackend: a user deactivated since their login is logged out.
        user = super().get_user(user_id)
        return user if user is not None and self.user_can_authenticate(user) else None
