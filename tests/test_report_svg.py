"""Tests of ``egresswatch.report.svg``: the two inline charts, against the hand-worked July."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from egresswatch.report import MonthlyReport
from egresswatch.report.svg import svg_coverage_chart
from egresswatch.report.svg import svg_daily_chart

from tests.plugins.report import JULY_DAILY
from tests.plugins.report import JULY_GAPS

SVG = "{http://www.w3.org/2000/svg}"


def _svg(text: str) -> ET.Element:
    """The <svg> element of a chart (the daily chart is followed by its HTML legend)."""
    return ET.fromstring(text[: text.index("</svg>") + len("</svg>")])


def test_daily_chart_draws_one_bar_per_day_and_app_with_hits(report_of_july: MonthlyReport) -> None:
    svg = _svg(svg_daily_chart(report_of_july))
    bars = [
        (r.get("data-day"), r.get("data-app"), int(r.get("data-events", "0")))
        for r in svg.iter(f"{SVG}rect")
    ]
    assert bars == JULY_DAILY
    # The y axis tops out at the next 1-2-5 step above the busiest day (6 events -> 10).
    labels = [t.text for t in svg.iter(f"{SVG}text") if t.get("text-anchor") == "end"]
    assert labels == ["0", "5", "10"]
    # The tallest bar (6 of 10) is 60 % of the plot height (260 - 28 - 12 = 220 px).
    heights = {r.get("data-events"): float(r.get("height", "0")) for r in svg.iter(f"{SVG}rect")}
    assert heights["6"] == 132.0


def test_daily_chart_legend_names_each_app_once(report_of_july: MonthlyReport) -> None:
    legend = svg_daily_chart(report_of_july).split("</svg>", 1)[1]
    assert re.findall(r"</span>([^<]+)</span>", legend) == ["tiktok", "wechat-pay"]


def test_coverage_chart_has_a_row_per_instance_and_a_rect_per_gap(
    report_of_july: MonthlyReport,
) -> None:
    svg = _svg(svg_coverage_chart(report_of_july))
    names = [t.text for t in svg.iter(f"{SVG}text")]
    assert names == ["proxy-a", "proxy-b"]
    gaps = [r for r in svg.iter(f"{SVG}rect") if r.get("class") == "gap"]
    assert len(gaps) == sum(len(g) for g in JULY_GAPS.values())
    titles = sorted(r.find(f"{SVG}title").text or "" for r in gaps)  # type: ignore[union-attr]
    assert titles[0] == "2026-07-01T00:00:00Z – 2026-07-10T00:00:00Z: not-running"
    # proxy-b's first gap: 9 of 31 days of the 740 px plot (900 - 150 - 10) = 214.8 px.
    first = next(r for r in gaps if r.find(f"{SVG}title").text == titles[0])  # type: ignore[union-attr]
    assert first.get("width") == "214.8"
