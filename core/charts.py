"""Server-rendered SVG plots for the admin (no JavaScript, no CDN): lines over days and
horizontal (stacked) bars. Callers give plain text; every text is escaped here, and a
point or a bar segment may link to the admin list behind it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH = 760
# Colour-blind-safe (Okabe-Ito); a ninth series reuses the first colour.
COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000"]
GRID, MUTED = "#ddd", "#555"


@dataclass(frozen=True)
class Point:
    day: dt.date
    value: float
    tooltip: str
    href: str | None = None
    label: str | None = None  # a small figure drawn above the dot
    radius: float = 3.5


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[Point]
    legend: str  # the legend's text for this series
    colour: str | None = None  # default: the palette, in series order


def _link(href: str | None, body: str) -> str:
    return f'<a href="{escape(href)}">{body}</a>' if href else body


def _open(css_class: str, title: str, height: int) -> list[str]:
    return [
        f'<svg class="{escape(css_class)}" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
        'font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
    ]


def daily_lines_svg(
    series: Sequence[Series],
    *,
    start: dt.date,
    end: dt.date,
    css_class: str,
    title: str,
    caption: str,
    empty: str = "Nothing in this period.",
    y_range: tuple[float, float] | None = None,
    y_format: Callable[[float], str] = lambda value: f"{value:.3g}",
    height: int = 260,
    left: int = 60,
    right: int = 170,
) -> SafeString:
    """A line per series over the days ``start`` to ``end`` (inclusive), a dot per point;
    the y axis spans ``y_range``, else the points' values padded by a tenth (not below
    zero when none is negative)."""
    top, bottom = 16, 40
    span = max((end - start).days, 1)
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    if y_range is None:
        values = [p.value for s in series for p in s.points] or [0.0, 1.0]
        low, high = min(values), max(values)
        if high == low:
            low, high = low - 1, high + 1
        pad = (high - low) * 0.1
        # Counts, tokens and costs never go below zero: neither does their axis.
        floor = 0.0 if min(values) >= 0 else float("-inf")
        low, high = max(low - pad, floor), high + pad
    else:
        low, high = y_range

    def x(day: dt.date) -> float:
        return left + plot_w * (day - start).days / span

    def y(value: float) -> float:
        return top + plot_h * (1 - (value - low) / (high - low))

    parts = _open(css_class, title, height)
    for step in range(5):
        value = low + (high - low) * step / 4
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            f'stroke="{GRID}"/><text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end" '
            f'fill="{MUTED}">{escape(y_format(value))}</text>'
        )
    for day in sorted({start, start + (end - start) / 2, end}):
        parts.append(
            f'<text x="{x(day):.1f}" y="{height - bottom + 16}" text-anchor="middle" '
            f'fill="{MUTED}">{day:%Y-%m-%d}</text>'
        )
    parts.append(f'<text x="{left}" y="{height - 6}" fill="{MUTED}">{escape(caption)}</text>')
    drawn = [s for s in series if any(start <= p.day <= end for p in s.points)]
    if not drawn:
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" '
            f'text-anchor="middle" fill="{MUTED}">{escape(empty)}</text>'
        )
    for index, line in enumerate(drawn):
        colour = line.colour or COLOURS[index % len(COLOURS)]
        points = [p for p in line.points if start <= p.day <= end]
        coords = " ".join(f"{x(p.day):.1f},{y(p.value):.1f}" for p in points)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        for p in points:
            dot = (
                f'<circle cx="{x(p.day):.1f}" cy="{y(p.value):.1f}" r="{p.radius:.1f}" '
                f'fill="{colour}"><title>{escape(p.tooltip)}</title></circle>'
            )
            if p.label is not None:
                dot += (
                    f'<text x="{x(p.day):.1f}" y="{y(p.value) - p.radius - 2:.1f}" '
                    f'text-anchor="middle" fill="{colour}" font-size="9">{escape(p.label)}</text>'
                )
            parts.append(_link(p.href, dot))
        legend_y = top + 14 + 16 * index
        parts.append(
            f'<rect x="{WIDTH - right + 12}" y="{legend_y - 9}" width="10" height="10" '
            f'fill="{colour}"/><text x="{WIDTH - right + 28}" y="{legend_y}">'
            f"{escape(line.legend)}</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every interpolated text is escaped above


@dataclass(frozen=True)
class Segment:
    value: float
    tooltip: str
    href: str | None = None
    colour: str | None = None  # default: the palette, by the segment's place in its bar


@dataclass(frozen=True)
class Bar:
    label: str
    segments: Sequence[Segment]
    text: str  # the figures printed after the bar
    href: str | None = None  # the label's link


def bars_svg(
    bars: Sequence[Bar],
    *,
    css_class: str,
    title: str,
    caption: str,
    empty: str = "Nothing yet.",
    legend: Sequence[tuple[str, str]] = (),
    scale: float | None = None,
    left: int = 190,
    right: int = 170,
) -> SafeString:
    """A horizontal bar per row, made of its segments side by side (stacked), scaled to
    the longest bar (or to ``scale``); ``legend`` names the segments' colours."""
    row = 24
    top = 12 + (16 if legend else 0)
    height = top + row * max(len(bars), 1) + 26
    plot_w = WIDTH - left - right
    longest = scale or max([sum(s.value for s in b.segments) for b in bars] or [0.0]) or 1.0
    parts = _open(css_class, title, height)
    legend_x = left
    for name, colour in legend:
        parts.append(
            f'<rect x="{legend_x}" y="4" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="13">{escape(name)}</text>'
        )
        legend_x += 24 + 7 * len(name)
    if not bars:
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + row / 2 + 4:.1f}" '
            f'text-anchor="middle" fill="{MUTED}">{escape(empty)}</text>'
        )
    for index, bar in enumerate(bars):
        y = top + row * index
        parts.append(
            _link(
                bar.href,
                f'<text x="{left - 8}" y="{y + row / 2 + 4:.1f}" text-anchor="end">'
                f"{escape(bar.label)}</text>",
            )
        )
        x = float(left)
        for place, segment in enumerate(bar.segments):
            width = plot_w * max(segment.value, 0.0) / longest
            colour = segment.colour or COLOURS[place % len(COLOURS)]
            rect = (
                f'<rect x="{x:.1f}" y="{y + 4}" width="{width:.1f}" height="{row - 8}" '
                f'fill="{colour}"><title>{escape(segment.tooltip)}</title></rect>'
            )
            parts.append(_link(segment.href, rect))
            x += width
        parts.append(
            f'<text x="{x + 6:.1f}" y="{y + row / 2 + 4:.1f}" fill="{MUTED}">'
            f"{escape(bar.text)}</text>"
        )
    parts.append(f'<text x="{left}" y="{height - 8}" fill="{MUTED}">{escape(caption)}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # every interpolated text is escaped above
