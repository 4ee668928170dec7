"""URL map: admin, the REST API under /api/, login, the web UI."""

from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path


def healthz(request):
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("config.api_urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("healthz", healthz),
    path("", include("chat.web_urls")),
]

# JSON errors under /api/, HTML pages elsewhere (chat/api_errors.py).
handler404 = "chat.api_errors.handler404"
handler500 = "chat.api_errors.handler500"
