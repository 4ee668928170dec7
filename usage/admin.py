"""Usage and budgets in the admin: usage records are read only, with a chart
of the last 30 days above the list; staff set budgets."""

from __future__ import annotations

from django.contrib import admin

from usage.charts import daily_bars
from usage.models import Budget, UsageRecord
from usage.selectors import usage_by_day

CHART_DAYS = 30


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    change_list_template = "admin/usage/usagerecord/change_list.html"
    list_display = (
        "created_at",
        "username",
        "agent_name",
        "agent_version",
        "model",
        "status",
        "input_tokens",
        "output_tokens",
        "cost",
        "estimated",
        "thread_id",
    )
    list_filter = ("agent_name", "status", "estimated")
    search_fields = ("username", "=thread_id", "=run_id", "agent_name")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    readonly_fields = [field.name for field in UsageRecord._meta.fields]
    actions = None

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        days = usage_by_day(days=CHART_DAYS)
        # `?chart=cost` is the chart's, not a filter of the list (which would
        # refuse an unknown parameter).
        query = request.GET.copy()
        measure = "cost" if query.pop("chart", [""])[0] == "cost" else "total_tokens"
        request.GET = query
        extra_context = {
            **(extra_context or {}),
            "chart": daily_bars(days, measure=measure),
            "chart_days": CHART_DAYS,
            "chart_totals": {
                "runs": sum(day["runs"] for day in days),
                "tokens": sum(day["total_tokens"] for day in days),
            },
        }
        return super().changelist_view(request, extra_context)


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ("__str__", "monthly_tokens", "monthly_cost", "hard", "updated_at")
    list_filter = ("hard",)
    search_fields = ("user__username", "=thread__id", "thread__title")
    raw_id_fields = ("user", "thread")
    fields = ("user", "thread", "monthly_tokens", "monthly_cost", "hard")
