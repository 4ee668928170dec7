"""`{% sso_login_button next %}`: the "Sign in with <provider>" link on the
login page, rendered only when single sign-on is configured."""

from django import template
from django.conf import settings
from django.urls import reverse
from django.utils.http import urlencode

register = template.Library()


@register.inclusion_tag("sso/login_button.html")
def sso_login_button(next_url: str = "") -> dict:
    if not settings.OIDC_ENABLED:
        return {"enabled": False}
    url = reverse("oidc_authentication_init")
    if next_url:
        url += "?" + urlencode({"next": next_url})
    return {"enabled": True, "url": url, "provider": settings.OIDC_PROVIDER_NAME}
