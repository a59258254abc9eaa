"""Server-rendered SVG for the admin's results page (no JavaScript, no CDN): each variant's
lift against control with its intervals, and a metric's daily mean per variant."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from experiments.selectors import MetricDay

WIDTH = 760
LEFT, RIGHT = 210, 190
ROW = 30
# Colour-blind-safe (Okabe-Ito): better, worse, not significant; series colours.
BETTER, WORSE, NEUTRAL = "#0072B2", "#D55E00", "#666"
COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000"]


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


TIME_HEIGHT = 260
TOP, BOTTOM, TIME_LEFT, TIME_RIGHT = 16, 40, 60, 170


def metric_chart_svg(
    points: list[MetricDay], *, metric: str, start: dt.date, end: dt.date
) -> SafeString:
    """The daily mean of ``metric``'s events per variant from ``start`` to ``end``: a line
    per variant, a dot per day with events (its count in a tooltip)."""
    span = max((end - start).days, 1)
    plot_w = WIDTH - TIME_LEFT - TIME_RIGHT
    plot_h = TIME_HEIGHT - TOP - BOTTOM
    values = [p.mean for p in points] or [0.0, 1.0]
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 1, high + 1
    pad = (high - low) * 0.1
    low, high = low - pad, high + pad

    def x(day: dt.date) -> float:
        return TIME_LEFT + plot_w * (day - start).days / span

    def y(value: float) -> float:
        return TOP + plot_h * (1 - (value - low) / (high - low))

    parts = [
        f'<svg class="experiment-metric-plot" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {TIME_HEIGHT}" width="{WIDTH}" height="{TIME_HEIGHT}" '
        'role="img" font-family="sans-serif" font-size="11">',
        f"<title>{escape(metric)}: daily mean per variant</title>",
    ]
    for step in range(5):
        value = low + (high - low) * step / 4
        parts.append(
            f'<line x1="{TIME_LEFT}" x2="{TIME_LEFT + plot_w}" y1="{y(value):.1f}" '
            f'y2="{y(value):.1f}" stroke="#ddd"/><text x="{TIME_LEFT - 6}" '
            f'y="{y(value) + 4:.1f}" text-anchor="end" fill="#555">{value:.3g}</text>'
        )
    for day in sorted({start, start + (end - start) / 2, end}):
        parts.append(
            f'<text x="{x(day):.1f}" y="{TIME_HEIGHT - BOTTOM + 16}" text-anchor="middle" '
            f'fill="#555">{day:%Y-%m-%d}</text>'
        )
    parts.append(
        f'<text x="{TIME_LEFT}" y="{TIME_HEIGHT - 6}" fill="#555">{escape(metric)}: mean of the '
        "day's events (UTC) per variant</text>"
    )
    series: dict[str, list[MetricDay]] = defaultdict(list)
    for point in points:
        if start <= point.day <= end:
            series[point.variant].append(point)
    if not series:
        parts.append(
            f'<text x="{TIME_LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}" '
            'text-anchor="middle" fill="#555">No events in this period.</text>'
        )
    for index, (name, rows) in enumerate(sorted(series.items())):
        colour = COLOURS[index % len(COLOURS)]
        label = escape(name)
        coords = " ".join(f"{x(r.day):.1f},{y(r.mean):.1f}" for r in rows)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        for r in rows:
            parts.append(
                f'<circle cx="{x(r.day):.1f}" cy="{y(r.mean):.1f}" r="3.5" fill="{colour}">'
                f"<title>{r.day:%Y-%m-%d} · {label}: mean {r.mean:.4g} over {r.count} "
                f"event{'s' if r.count != 1 else ''}</title></circle>"
            )
        total = sum(r.count for r in rows)
        legend_y = TOP + 14 + 16 * index
        parts.append(
            f'<rect x="{WIDTH - TIME_RIGHT + 12}" y="{legend_y - 9}" width="10" height="10" '
            f'fill="{colour}"/><text x="{WIDTH - TIME_RIGHT + 28}" y="{legend_y}">{label} '
            f"({total} events)</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every interpolated text is escaped above
