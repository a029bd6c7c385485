"""The two charts of the HTML report, as inline SVG (no script, no network): events per day and
app as stacked bars, and coverage per instance as a timeline."""

from __future__ import annotations

from .model import MonthlyReport
from .tables import daily_matrix
from .text import esc as _e
from .text import iso
from .text import pct

__all__ = ["svg_coverage_chart", "svg_daily_chart"]

_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def _nice_max(v: int) -> int:
    if v <= 0:
        return 1
    mag: int = pow(10, len(str(v)) - 1)
    for step in (1, 2, 5, 10):
        if v <= step * mag:
            return step * mag
    return 10 * mag


def svg_daily_chart(r: MonthlyReport) -> str:
    """Stacked bars: events per day, one colour per app."""
    apps = [a for a, _ in r.apps]
    matrix = daily_matrix(r)
    width, height, left, bottom, top = 900, 260, 48, 28, 12
    plot_w, plot_h = width - left - 10, height - bottom - top
    ymax = _nice_max(max((sum(v) for v in matrix.values()), default=0))
    n = max(1, len(r.days))
    slot = plot_w / n
    bar = max(1.0, slot * 0.8)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="daily-chart" role="img" '
        f'aria-labelledby="daily-chart-title" viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        f'<title id="daily-chart-title">Events per day and app, {_e(r.month)}</title>',
    ]
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" class="grid"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{int(ymax * frac)}</text>'
        )
    for i, day in enumerate(r.days):
        x = left + i * slot + (slot - bar) / 2
        y = top + plot_h
        for j, app in enumerate(apps):
            v = matrix[day][j]
            if not v:
                continue
            h = plot_h * v / ymax
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{_PALETTE[j % len(_PALETTE)]}" data-app="{_e(app)}" data-day="{_e(day)}" '
                f'data-events="{v}"><title>{_e(day)} {_e(app)}: {v}</title></rect>'
            )
        if i % 2 == 0 or n <= 16:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - 10}" text-anchor="middle" class="axis">'
                f"{int(day[-2:])}</text>"
            )
    parts.append("</svg>")
    legend = "".join(
        f'<span class="key"><span class="swatch" style="background:{_PALETTE[j % len(_PALETTE)]}"></span>'
        f"{_e(a)}</span>"
        for j, a in enumerate(apps)
    )
    return "".join(parts) + f'<p class="legend">{legend}</p>'


def svg_coverage_chart(r: MonthlyReport) -> str:
    """One timeline bar per instance: covered in green, gaps in red."""
    width, row_h, left = 900, 22, 150
    height = 10 + row_h * max(1, len(r.coverage)) + 10
    span = max(1.0, r.period_end - r.period_start)
    plot_w = width - left - 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="coverage-chart" role="img" '
        f'aria-labelledby="coverage-chart-title" viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        f'<title id="coverage-chart-title">Coverage per instance, {_e(r.month)}</title>',
    ]
    for k, c in enumerate(r.coverage):
        y = 10 + k * row_h
        parts.append(
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" class="axis">{_e(c.instance)}</text>'
        )
        covered_w = plot_w * c.period_seconds / span
        parts.append(
            f'<rect x="{left}" y="{y + 3}" width="{covered_w:.1f}" height="{row_h - 8}" class="up">'
            f"<title>{_e(c.instance)}: {pct(c.percent)}% covered</title></rect>"
        )
        for g in c.gaps:
            gx = left + plot_w * (g.start - r.period_start) / span
            gw = max(1.0, plot_w * g.seconds / span)
            parts.append(
                f'<rect x="{gx:.1f}" y="{y + 3}" width="{gw:.1f}" height="{row_h - 8}" class="gap">'
                f"<title>{_e(iso(g.start))} – {_e(iso(g.end))}: {_e(g.reason)}</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)
