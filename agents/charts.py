"""Server-rendered SVG for the admin: an agent's feedback over time (no JavaScript, no CDN)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from agents.selectors import FeedbackDay

WIDTH, HEIGHT = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 44, 170, 16, 40
# Colour-blind-safe (Okabe-Ito); a ninth series reuses the first colour.
COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000"]
NO_VARIANT = "(no variant)"


def feedback_chart_svg(points: list[FeedbackDay], *, start: dt.date, end: dt.date) -> SafeString:
    """Daily mean reward (0 to 1) per variant from ``start`` to ``end`` (inclusive): one line
    per variant, a dot per day with ratings (sized and labelled by their count, its exact
    figures in a tooltip)."""
    span = max((end - start).days, 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(day: dt.date) -> float:
        return LEFT + plot_w * (day - start).days / span

    def y(reward: float) -> float:
        return TOP + plot_h * (1 - reward)

    parts = [
        f'<svg class="agent-feedback-plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" font-family="sans-serif" font-size="11">',
        "<title>Mean feedback reward per day and variant</title>",
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1):
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            f'stroke="#ddd"/><text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" '
            f'fill="#555">{tick:g}</text>'
        )
    for day in sorted({start, start + (end - start) / 2, end}):
        parts.append(
            f'<text x="{x(day):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
            f'fill="#555">{day:%Y-%m-%d}</text>'
        )
    parts.append(
        f'<text x="{LEFT}" y="{HEIGHT - 6}" fill="#555">mean reward (thumbs -1/0/1 = 0/0.5/1, '
        "stars 1-5 = 0-1) by day of rating; dots: number of ratings</text>"
    )
    series: dict[str, list[FeedbackDay]] = defaultdict(list)
    for point in points:
        series[point.variant or NO_VARIANT].append(point)
    if not series:
        parts.append(
            f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" '
            'fill="#555">No feedback in this period.</text>'
        )
    for index, (name, rows) in enumerate(sorted(series.items())):
        colour = COLOURS[index % len(COLOURS)]
        label = escape(name)
        coords = " ".join(f"{x(r.day):.1f},{y(r.mean):.1f}" for r in rows)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        for r in rows:
            radius = 3 + min(r.count, 25) ** 0.5
            parts.append(
                f'<circle cx="{x(r.day):.1f}" cy="{y(r.mean):.1f}" r="{radius:.1f}" '
                f'fill="{colour}"><title>{r.day:%Y-%m-%d} · {label}: mean {r.mean:.3f} over '
                f"{r.count} rating{'s' if r.count != 1 else ''}</title></circle>"
                f'<text x="{x(r.day):.1f}" y="{y(r.mean) - radius - 2:.1f}" text-anchor="middle" '
                f'fill="{colour}" font-size="9">{r.count}</text>'
            )
        total = sum(r.count for r in rows)
        mean = sum(r.mean * r.count for r in rows) / total
        legend_y = TOP + 14 + 16 * index
        parts.append(
            f'<rect x="{WIDTH - RIGHT + 12}" y="{legend_y - 9}" width="10" height="10" '
            f'fill="{colour}"/><text x="{WIDTH - RIGHT + 28}" y="{legend_y}">{label}: '
            f"{mean:.2f} ({total})</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every interpolated text is escaped above
