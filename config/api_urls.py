"""REST API routes, mounted under /api/ (docs/api.md describes them)."""

from django.urls import include, path, re_path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)
from rest_framework.routers import SimpleRouter

from agents.api import AgentConfigViewSet, StreamListView
from chat import sse
from chat.api import ThreadViewSet, TokenRevokeView, TokenView
from chat.run_api import RunViewSet
from restapi.errors import api_not_found

router = SimpleRouter(trailing_slash=True)
router.register("agents", AgentConfigViewSet, basename="agent")
router.register("threads", ThreadViewSet, basename="thread")
router.register("runs", RunViewSet, basename="run")

urlpatterns = [
    path("auth/token/", TokenView.as_view(), name="api-token"),
    path("auth/token/revoke/", TokenRevokeView.as_view(), name="api-token-revoke"),
    path("streams/", StreamListView.as_view(), name="api-streams"),
    path("usage/", include("usage.urls")),
    path("", include("webhooks.urls")),  # webhooks/, threads/{id}/webhook/, ...
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path(
        "docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"
    ),
    path(
        "redoc/",
        # templates/api/redoc.html: Redoc without its web-font links.
        SpectacularRedocView.as_view(
            url_name="api-schema", template_name="api/redoc.html"
        ),
        name="api-redoc",
    ),
    # --- Server-Sent Events (chat/sse.py, built by the lead) -------------------
    path("runs/<str:run_id>/stream/", sse.run_stream, name="api-run-stream"),
    path(
        "threads/<uuid:thread_id>/stream/", sse.thread_stream, name="api-thread-stream"
    ),
    # ---------------------------------------------------------------------------
    *router.urls,
    # Keep last: any other /api/ path is a JSON 404, never Django's HTML page.
    re_path(r"^[\s\S]*$", api_not_found),  # [\s\S]: newlines too
]
