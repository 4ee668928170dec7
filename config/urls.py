"""URL map: admin, the REST API under /api/, login, the web UI."""

from django.contrib import admin
from django.urls import include, path

from compat.urls import agui_urlpatterns, aisdk_urlpatterns

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/audit/", include("audit.urls")),  # before the /api/ catch-all
    path("api/openai/v1/", include("compat.urls")),  # before the /api/ catch-all
    path("api/agui/", include(agui_urlpatterns)),  # AG-UI (compat/agui.py)
    path("api/aisdk/", include(aisdk_urlpatterns)),  # AI SDK (compat/aisdk.py)
    path("api/", include("config.api_urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("oidc/", include("sso.urls")),  # single sign-on, when configured
    path("", include("ops.urls")),  # /healthz, /readyz, /metrics
    path("", include("chat.web_urls")),
]

# JSON errors under /api/, HTML pages elsewhere (restapi/errors.py).
handler404 = "restapi.errors.handler404"
handler500 = "restapi.errors.handler500"
