"""Ops app: /healthz, /readyz, /metrics and the metric hooks' receivers."""

from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from ops import receivers  # noqa: F401  (model signals -> metrics)
