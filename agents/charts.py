"""Server-rendered SVG for the admin: an agent's feedback over time (core.charts draws it)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from django.utils.safestring import SafeString

from agents.selectors import FeedbackDay
from core.charts import Point, Series, daily_lines_svg

NO_VARIANT = "(no variant)"


def feedback_chart_svg(points: list[FeedbackDay], *, start: dt.date, end: dt.date) -> SafeString:
    """Daily mean reward (0 to 1) per variant from ``start`` to ``end`` (inclusive): one line
    per variant, a dot per day with ratings (sized and labelled by their count, its exact
    figures in a tooltip)."""
    by_variant: dict[str, list[FeedbackDay]] = defaultdict(list)
    for point in points:
        by_variant[point.variant or NO_VARIANT].append(point)
    series = []
    for name, rows in sorted(by_variant.items()):
        total = sum(r.count for r in rows)
        mean = sum(r.mean * r.count for r in rows) / total
        series.append(
            Series(
                name=name,
                legend=f"{name}: {mean:.2f} ({total})",
                points=[
                    Point(
                        day=r.day,
                        value=r.mean,
                        tooltip=f"{r.day:%Y-%m-%d} · {name}: mean {r.mean:.3f} over "
                        f"{r.count} rating{'s' if r.count != 1 else ''}",
                        label=str(r.count),
                        radius=3 + min(r.count, 25) ** 0.5,
                    )
                    for r in rows
                ],
            )
        )
    return daily_lines_svg(
        series,
        start=start,
        end=end,
        css_class="agent-feedback-plot",
        title="Mean feedback reward per day and variant",
        caption="mean reward (thumbs -1/0/1 = 0/0.5/1, stars 1-5 = 0-1) by day of rating; "
        "dots: number of ratings",
        empty="No feedback in this period.",
        y_range=(0.0, 1.0),
        y_format=lambda value: f"{value:g}",
        height=280,
        left=44,
    )
