"""Single sign-on: OpenID Connect login beside password login (mozilla-django-oidc)."""
