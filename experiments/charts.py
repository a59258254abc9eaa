"""Server-rendered SVG for the admin's results page (no JavaScript, no CDN): each variant's
lift against control with its intervals, and a metric's daily mean per variant (drawn by
core.charts, as every line plot of the admin)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from core.charts import COLOURS, Point, Series, daily_lines_svg
from experiments.selectors import MetricDay

WIDTH = 760
LEFT, RIGHT = 210, 190
ROW = 30
# Colour-blind-safe (Okabe-Ito): better, worse, not significant; series colours.
BETTER, WORSE, NEUTRAL = COLOURS[0], COLOURS[5], "#666"


def _percent(value: float) -> str:
    return f"{value * 100:+.1f}%"


def lift_chart_svg(results: dict[str, Any]) -> SafeString:
    """One row per metric and non-control variant: the relative lift (dot), its interval
    at the confidence level (thick) and its always-valid sequential interval (thin), around
    a line at no change; blue when it is a significant improvement, vermilion when a
    significant degradation (the metric's direction decides), grey otherwise."""
    rows = [
        (metric, row)
        for metric in results["metrics"]
        for row in metric["variants"]
        if not row["is_control"] and row["lift"] is not None
    ]
    height = 50 + ROW * max(len(rows), 1)
    plot_w = WIDTH - LEFT - RIGHT
    reach = max(
        [
            abs(row[k])
            for _, row in rows
            for k in ("ci_low", "ci_high", "sequential_ci_low", "sequential_ci_high")
        ]
        or [0.1]
    )
    reach = min(max(reach * 1.1, 0.01), 10.0)

    def x(value: float) -> float:
        clipped = max(-reach, min(reach, value))
        return LEFT + plot_w * (clipped + reach) / (2 * reach)

    level = round(results["confidence_level"] * 100)
    parts = [
        f'<svg class="experiment-lift-plot" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
        'font-family="sans-serif" font-size="11">',
        "<title>Relative lift against control, per metric and variant</title>",
        f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="20" y2="{height - 24}" stroke="#999" '
        'stroke-dasharray="3,3"/>',
    ]
    for tick in (-reach, -reach / 2, 0.0, reach / 2, reach):
        parts.append(
            f'<text x="{x(tick):.1f}" y="{height - 8}" text-anchor="middle" fill="#555">'
            f"{_percent(tick)}</text>"
        )
    parts.append(
        f'<text x="{LEFT}" y="12" fill="#555">dot: lift · thick: {level}% interval · thin: '
        "always-valid (sequential) interval</text>"
    )
    if not rows:
        parts.append(
            f'<text x="{LEFT + plot_w / 2:.1f}" y="{height / 2:.1f}" text-anchor="middle" '
            'fill="#555">Not enough data for a lift yet.</text>'
        )
    for index, (metric, row) in enumerate(rows):
        y = 36 + ROW * index
        higher = metric["direction"] == "increase"
        colour = NEUTRAL
        if row["significant"]:
            colour = BETTER if (row["lift"] > 0) == higher else WORSE
        label = escape(f"{metric['name']} · {row['variant']}")
        figures = f"{_percent(row['lift'])} [{_percent(row['ci_low'])}, {_percent(row['ci_high'])}]"
        p = row["p_value_holm"] if row["p_value_holm"] is not None else row["p_value"]
        parts.append(
            f'<text x="{LEFT - 8}" y="{y + 4}" text-anchor="end">{label}</text>'
            f'<line x1="{x(row["sequential_ci_low"]):.1f}" x2="{x(row["sequential_ci_high"]):.1f}" '
            f'y1="{y}" y2="{y}" stroke="{colour}" stroke-width="1.5" opacity="0.6"/>'
            f'<line x1="{x(row["ci_low"]):.1f}" x2="{x(row["ci_high"]):.1f}" y1="{y}" '
            f'y2="{y}" stroke="{colour}" stroke-width="5"/>'
            f'<circle cx="{x(row["lift"]):.1f}" cy="{y}" r="5" fill="#fff" stroke="{colour}" '
            f'stroke-width="2"><title>{label}: lift {escape(figures)}, p (Holm) '
            f"{p:.4f}, chance to beat control {row['chance_to_beat_control']:.1%}</title></circle>"
            f'<text x="{WIDTH - RIGHT + 10}" y="{y + 4}" fill="{colour}">{escape(figures)}</text>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every interpolated text is escaped above


def metric_chart_svg(
    points: list[MetricDay], *, metric: str, start: dt.date, end: dt.date
) -> SafeString:
    """The daily mean of ``metric``'s events per variant from ``start`` to ``end``: a line
    per variant, a dot per day with events (its count in a tooltip)."""
    by_variant: dict[str, list[MetricDay]] = defaultdict(list)
    for point in points:
        if start <= point.day <= end:
            by_variant[point.variant].append(point)
    series = [
        Series(
            name=name,
            legend=f"{name} ({sum(r.count for r in rows)} events)",
            points=[
                Point(
                    day=r.day,
                    value=r.mean,
                    tooltip=f"{r.day:%Y-%m-%d} · {name}: mean {r.mean:.4g} over {r.count} "
                    f"event{'s' if r.count != 1 else ''}",
                )
                for r in rows
            ],
        )
        for name, rows in sorted(by_variant.items())
    ]
    return daily_lines_svg(
        series,
        start=start,
        end=end,
        css_class="experiment-metric-plot",
        title=f"{metric}: daily mean per variant",
        caption=f"{metric}: mean of the day's events (UTC) per variant",
        empty="No events in this period.",
    )
