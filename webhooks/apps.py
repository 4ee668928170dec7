"""Webhooks app: signed calls to a URL when a run ends (docs/clients.md, "Webhooks")."""

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from webhooks import receivers  # noqa: F401  (a run ended -> a delivery row)
