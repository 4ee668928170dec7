"""Why a single sign-on callback was refused: the reasons the audit log records."""

from __future__ import annotations

from enum import StrEnum


class SsoRefusal(StrEnum):
    BAD_STATE = "bad_state"  # a state this browser was not sent to the provider with
    WRONG_ISSUER = "wrong_issuer"  # the ID token's `iss` is not OIDC_ISSUER
    WRONG_AUDIENCE = "wrong_audience"  # the ID token is not for our client id
    INVALID_TOKEN = "invalid_token"  # bad signature, nonce, expired, malformed
    SUBJECT_MISMATCH = "subject_mismatch"  # userinfo's `sub` is not the token's
    NO_SUBJECT = "no_subject"
    PROVIDER_ERROR = "provider_error"  # the token or userinfo request failed


class SsoRefused(Exception):
    """A callback that must not log anyone in. Deliberately not a
    SuspiciousOperation: mozilla-django-oidc swallows those in places, and every
    refusal has to reach the callback view, which records it."""

    def __init__(self, reason: SsoRefusal, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail
