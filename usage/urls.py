"""Routes of the usage app, mounted at /api/usage/ (config/api_urls.py)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from usage.api import BudgetStatusView, BudgetViewSet, UsageView

router = SimpleRouter(trailing_slash=True)
router.register("budgets", BudgetViewSet, basename="budget")

urlpatterns = [
    path("", UsageView.as_view(), name="api-usage"),
    path("budget/", BudgetStatusView.as_view(), name="api-usage-budget"),
    *router.urls,
]
