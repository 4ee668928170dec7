"""Usage app: what each run cost, who it was charged to, and monthly budgets."""

from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "usage"
    default_auto_field = "django.db.models.BigAutoField"
