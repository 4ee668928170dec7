"""Compat app: Parley behind the ecosystem's own protocols (OpenAI Chat Completions)."""

from django.apps import AppConfig


class CompatConfig(AppConfig):
    name = "compat"
    default_auto_field = "django.db.models.BigAutoField"
