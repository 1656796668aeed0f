"""Plots as inline SVG strings, drawn in Python: the HTML report stays one file with no scripts,
no fonts and nothing fetched from a CDN, so it opens offline and can be attached to a ticket."""

from __future__ import annotations

import math
from html import escape
from typing import Any

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        return [10.0**e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
    step = 10 ** math.floor(math.log10(max(hi - lo, 1e-9)))
    if (hi - lo) / step < 4:
        step /= 2
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 2)]


def scatter(series: dict[str, list[dict[str, Any]]], xlabel: str, ylabel: str, width: int = 720,
            height: int = 420, title: str = "") -> str:  # fmt: skip
    """Points {x, y, size, label} per series; x on a log axis; marker area proportional to size."""
    points = [p for ps in series.values() for p in ps if p["x"] and p["x"] > 0 and p["y"] is not None]
    if not points:
        return (
            f'<svg class="plot pareto" width="{width}" height="60"><text x="10" y="30">no data</text></svg>'
        )
    left, right, top, bottom = 70, 160, 30, 50
    xs: list[float] = [p["x"] for p in points]
    ys: list[float] = [p["y"] for p in points]
    x0, x1 = min(xs) / 1.5, max(xs) * 1.5
    y0, y1 = min(ys), max(ys)
    pad = max((y1 - y0) * 0.15, 0.5)
    y0, y1 = y0 - pad, y1 + pad
    smax = max(p["size"] for p in points) or 1

    def px(x: float) -> float:
        return left + (math.log10(x) - math.log10(x0)) / (math.log10(x1) - math.log10(x0)) * (
            width - left - right
        )

    def py(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * (height - top - bottom)

    out = [f'<svg class="plot pareto" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">']  # fmt: skip
    out.append(f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>')
    for t in _ticks(x0, x1, True):
        if x0 <= t <= x1:
            out.append(f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{height - bottom}" stroke="#eee"/>'
                       f'<text x="{px(t):.1f}" y="{height - bottom + 14}" text-anchor="middle">{t:g}</text>')  # fmt: skip
    for t in _ticks(y0, y1, False):
        if y0 <= t <= y1:
            out.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{width - right}" y2="{py(t):.1f}" stroke="#eee"/>'
                       f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{t:.4g}</text>')  # fmt: skip
    out.append(f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
               'fill="none" stroke="#888"/>')  # fmt: skip
    out.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 12}" text-anchor="middle">{escape(xlabel)}</text>'
    )
    out.append(f'<text transform="translate(16 {(top + height - bottom) / 2}) rotate(-90)" '
               f'text-anchor="middle">{escape(ylabel)}</text>')  # fmt: skip
    for i, (name, ps) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        out.append(f'<g class="series" data-series="{escape(name)}">')
        for p in ps:
            if not p["x"] or p["x"] <= 0 or p["y"] is None:
                continue
            r = 4 + 14 * math.sqrt(p["size"] / smax)
            out.append(f'<circle class="point" cx="{px(p["x"]):.1f}" cy="{py(p["y"]):.1f}" r="{r:.1f}" '
                       f'fill="{color}" fill-opacity="0.45" stroke="{color}"><title>{escape(p["label"])}: '
                       f'{p["x"]:.3g} ms, {p["y"]:.4g}</title></circle>')  # fmt: skip
        out.append("</g>")
        ly = top + 14 + 18 * i
        out.append(f'<circle cx="{width - right + 16}" cy="{ly - 4}" r="5" fill="{color}"/>'
                   f'<text x="{width - right + 26}" y="{ly}">{escape(name)}</text>')  # fmt: skip
    out.append("</svg>")
    return "".join(out)


def bars(rows: list[tuple[str, float]], unit: str = "ms", width: int = 720, title: str = "",
         longest_first: bool = True) -> str:  # fmt: skip
    """Horizontal bars, one per (label, value), longest first (else in the given order)."""
    rows = sorted(rows, key=lambda r: -r[1]) if longest_first else list(rows)
    bar_h, left, top = 16, 260, 26
    height = top + bar_h * len(rows) + 24
    vmax = max((v for _, v in rows), default=1) or 1
    out = [
        f'<svg class="plot bars" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'  # fmt: skip
        f'<text x="4" y="16" font-size="13">{escape(title)}</text>'
    ]
    for i, (label, value) in enumerate(rows):
        y = top + i * bar_h
        w = (width - left - 80) * value / vmax
        short = label if len(label) <= 42 else "..." + label[-39:]
        out.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end"><title>{escape(label)}</title>'
                   f'{escape(short)}</text><rect class="bar" x="{left}" y="{y + 2}" width="{w:.1f}" '
                   f'height="{bar_h - 4}" fill="#1f77b4"/><text x="{left + w + 4:.1f}" y="{y + 12}">'
                   f'{value:.3g} {unit}</text>')  # fmt: skip
    out.append("</svg>")
    return "".join(out)
