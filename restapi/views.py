"""What every Parley REST endpoint shares: authentication, JSON in and out,
throttles, pagination and the error shape's schema (restapi/errors.py).

`chat`, `agents`, `audit` and `compat` build their views on these.
"""

from __future__ import annotations

from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

from realtime.caching import shared_cache
from restapi.errors import ErrorDocumentingSchema

UUID_PATTERN = (
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)


class UserThrottle(UserRateThrottle):
    """UserRateThrottle that reads its rate per request, so a changed setting
    (tests, `override_settings`) applies without a restart. Counts live in the
    default cache: Redis in production, shared by every web process."""

    cache = property(lambda self: shared_cache())

    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class AnonThrottle(AnonRateThrottle):
    cache = property(lambda self: shared_cache())

    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class ListPagination(LimitOffsetPagination):
    """`?limit=&offset=` on lists; at most MAX_LIMIT items a page."""

    default_limit = 50
    max_limit = 200
    # Beyond any real list; keeps absurd offsets from overflowing the SQL.
    max_offset = 1_000_000_000

    def get_offset(self, request) -> int:
        return min(super().get_offset(request), self.max_offset)


class ApiViewMixin:
    """What every Parley API view shares.

    Token authentication comes first so that an unauthenticated call answers 401
    with `WWW-Authenticate: Token` (with session first DRF answers 403). JSON
    only, in and out: no browsable-API HTML ever reaches a client.
    """

    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    renderer_classes = [JSONRenderer]
    parser_classes = [JSONParser]
    throttle_classes = [UserThrottle, AnonThrottle]
    pagination_class = ListPagination
    schema = ErrorDocumentingSchema()


def validated(serializer_class, data, **kwargs) -> dict:
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
