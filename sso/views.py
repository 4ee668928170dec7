"""The OpenID Connect callback: mozilla-django-oidc's view, with every refusal
recorded in the audit log (`auth.sso_refused`, with the reason) and told to
the person on the login page.

Refused: a state this browser's session was not sent to the provider with
(forged, replayed, or from another browser: the library then fails silently
when the session holds no state at all), an ID token from another issuer or
for another client, a bad signature, nonce or expiry, and a token or userinfo
request the provider fails.
"""

from __future__ import annotations

import logging

import jwt
import requests
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import SuspiciousOperation
from django.http import HttpResponseRedirect
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView

from audit.models import AuditAction
from audit.services import audit_record
from sso.errors import SsoRefusal, SsoRefused

logger = logging.getLogger(__name__)


class OidcCallbackView(OIDCAuthenticationCallbackView):
    def get(self, request):
        state = request.GET.get("state")
        if "code" in request.GET and state is not None:
            if state not in request.session.get("oidc_states", {}):
                return self.refused(
                    SsoRefused(SsoRefusal.BAD_STATE, "no login of this browser")
                )
        try:
            return super().get(request)
        except SsoRefused as error:
            return self.refused(error)
        except (SuspiciousOperation, jwt.InvalidTokenError) as error:
            return self.refused(SsoRefused(SsoRefusal.INVALID_TOKEN, str(error)))
        except requests.RequestException as error:
            detail = f"{type(error).__name__}: {error}"
            return self.refused(SsoRefused(SsoRefusal.PROVIDER_ERROR, detail))

    def refused(self, error: SsoRefused):
        logger.warning("single sign-on refused: %s", error.reason.value)
        audit_record(
            action=AuditAction.SSO_REFUSED,
            target_type="sso",
            target_repr=settings.OIDC_PROVIDER_NAME,
            details={"reason": error.reason.value, "detail": error.detail[:300]},
            request=self.request,
        )
        messages.error(
            self.request,
            f"Sign-in with {settings.OIDC_PROVIDER_NAME} was refused "
            f"({error.reason.value.replace('_', ' ')}). Please try again.",
        )
        return HttpResponseRedirect(self.failure_url)

    def login_failure(self):
        # The provider said no (the person cancelled) or the user is inactive.
        messages.error(
            self.request,
            f"Sign-in with {settings.OIDC_PROVIDER_NAME} did not log you in.",
        )
        return super().login_failure()
