"""The admin's chart of the last 30 days: bar geometry for a server-rendered
SVG (no JavaScript, no CDN)."""

from __future__ import annotations

from decimal import Decimal

WIDTH = 760
HEIGHT = 180
TOP = 14  # room for the biggest bar's label
BOTTOM = 22  # room for the day labels


def daily_bars(days: list[dict], *, measure: str = "total_tokens") -> dict:
    """Bars of `days` (usage_by_day's rows) by `measure` (total_tokens or
    cost): each {x, y, width, height, day, label, title}, plus the chart's size
    and its largest value."""
    values = [Decimal(str(day[measure])) for day in days]
    largest = max(values, default=Decimal(0))
    slot = WIDTH / max(len(days), 1)
    plot = HEIGHT - TOP - BOTTOM
    bars = []
    for position, (day, value) in enumerate(zip(days, values, strict=True)):
        height = float(value / largest) * plot if largest else 0.0
        bars.append(
            {
                "x": round(position * slot + slot * 0.15, 1),
                "width": round(slot * 0.7, 1),
                "y": round(TOP + plot - height, 1),
                "height": round(height, 1),
                "day": day["key"],
                "label": day["key"][8:],  # the day of the month
                "label_x": round(position * slot + slot / 2, 1),
                "title": f"{day['key']}: {day['total_tokens']} tokens, cost "
                f"{day['cost']}, {day['runs']} runs",
            }
        )
    return {
        "bars": bars,
        "width": WIDTH,
        "height": HEIGHT,
        "baseline": HEIGHT - BOTTOM,
        "label_y": HEIGHT - 6,
        "largest": largest,
        "measure": measure,
    }
