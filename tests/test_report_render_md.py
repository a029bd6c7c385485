"""Tests of ``egresswatch.report.render_md``: the Markdown rendering."""

from __future__ import annotations

import dataclasses

from egresswatch.report import MonthlyReport
from egresswatch.report import render_markdown


def test_markdown_has_the_sections(report_of_july: MonthlyReport) -> None:
    md = render_markdown(report_of_july)
    for heading in (
        "# egresswatch compliance report 2026-07: Example Ltd",
        "## Period and scope",
        "## Coverage",
        "### Gaps",
        "## Catalogue versions in force",
        "## Policies in force",
        "## Exceptions",
        "## Totals per app and action",
        "## Per app and regime",
        "## Per department",
        "## Top clients",
        "## Top hostnames",
        "## Daily trend",
        "## Integrity",
        "## Method and blind spots",
        "### Legal note",
        "## Sign-off",
    ):
        assert f"\n{heading}" in f"\n{md}", heading
    assert "| tiktok | blocked | 7 | 2 | 2026-07-03T09:00:00Z | 2026-07-10T10:00:03Z |" in md
    # markup in data is escaped, not interpreted
    assert "Supplier payments \\<China office\\>" in md
    # a line break in data (CR or LF) cannot end a table row or a heading early
    broken = render_markdown(dataclasses.replace(report_of_july, organisation="A\rB\nC|D"))
    assert "\r" not in broken
    assert "# egresswatch compliance report 2026-07: A B C\\|D\n" in broken
