"""`{% usage_budget user thread %}`: "used X of Y this month" for the web UI
(the thread page's header); nothing when no budget applies."""

from __future__ import annotations

from django import template

from usage.selectors import budget_status

register = template.Library()


@register.inclusion_tag("usage/budget_line.html")
def usage_budget(user, thread=None) -> dict:
    """The budgets that apply to `user`'s runs in `thread`, with what is used."""
    if user is None or not user.is_authenticated:
        return {"limits": []}
    return {"limits": budget_status(user=user, thread=thread)}
