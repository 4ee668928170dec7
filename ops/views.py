"""`/healthz`, `/readyz` and `/metrics`.

The probes need no login, touch no session and set no cookie; `/healthz` does
not touch the database either. `ops.middleware.ProbeMiddleware`, first in
MIDDLEWARE, answers both before anything else runs (no host check, no HTTPS
redirect: load balancers probe by IP over plain HTTP); the URL routes serve
them where it is not installed.

`/metrics` is for Prometheus: `Authorization: Bearer <PARLEY_METRICS_TOKEN>`,
or a logged-in staff session for a person looking; anything else is 401.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET, require_safe

from ops import health, metrics
from realtime.errors import ErrorCode
from restapi.errors import error_body


@require_safe
def healthz(request) -> JsonResponse:
    """The process is up and serving requests."""
    return JsonResponse({"status": "ok"})


@require_safe
def readyz(request) -> JsonResponse:
    """200 when the database and (if configured) Redis answer in time, else 503
    with the part that did not."""
    checks = health.readiness()
    ready = all(
        result in (health.OK, health.NOT_CONFIGURED) for result in checks.values()
    )
    return JsonResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )


def metrics_allowed(request) -> bool:
    token = getattr(settings, "PARLEY_METRICS_TOKEN", "")
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer":
        return hmac.compare_digest(offered.strip().encode(), token.encode())
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


@require_GET
def metrics_view(request) -> HttpResponse:
    if not metrics_allowed(request):
        response = JsonResponse(
            error_body(
                ErrorCode.NOT_AUTHENTICATED,
                "Metrics need 'Authorization: Bearer <PARLEY_METRICS_TOKEN>' "
                "or a staff login.",
            ),
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics.exposition(), content_type=metrics.CONTENT_TYPE)
