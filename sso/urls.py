"""Single sign-on routes under /oidc/ (`authenticate/`, `callback/`, `logout/`):
mozilla-django-oidc's, present only when OIDC_ISSUER is set."""

from django.conf import settings
from django.urls import include, path

urlpatterns = (
    [path("", include("mozilla_django_oidc.urls"))] if settings.OIDC_ENABLED else []
)
