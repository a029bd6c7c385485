"""The monthly compliance report: exact figures from the event store, rendered for people and tools.

:func:`build_report` reads only the store's daily rollups, its lifecycle rows (start, stop,
heartbeat, config) and its chain verification, never the raw hit events, so a report works after
the month's raw events were pruned and stays fast over millions of events. The result is a tree of
frozen dataclasses (:class:`MonthlyReport`) that the renderers turn into one self-contained HTML
file, Markdown, one tidy CSV or JSON::

    report = build_report(store, "2026-07", now=datetime.now(UTC), organisation="Example Ltd")
    html = render_html(report)

Times are Unix seconds (UTC) in the dataclasses and ISO 8601 with ``Z`` in every rendering. The
period is ``[first day 00:00 UTC, first day of the next month 00:00 UTC)``.

Modules (each imports only those above it):

- :mod:`.text`: values as text (times, lengths, percentages, HTML escaping)
- :mod:`.model`: the dataclasses, the blind spots and legal caveats
- :mod:`.coverage`, :mod:`.history`: coverage and configuration over the month, from lifecycle rows
- :mod:`.build`: :func:`build_report`, the store queries
- :mod:`.tables`: the tables shared by Markdown and HTML; :mod:`.svg`: the HTML's charts
- :mod:`.render_json`, :mod:`.render_csv`, :mod:`.render_md`, :mod:`.render_html`
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from .build import build_report
from .build import month_bounds
from .build import previous_month
from .model import MonthlyReport
from .render_csv import CSV_FIELDS
from .render_csv import csv_cell
from .render_csv import render_csv
from .render_html import render_html
from .render_json import render_json
from .render_json import report_to_dict
from .render_md import render_markdown
from .text import iso

__all__ = [
    "CSV_FIELDS",
    "FORMATS",
    "MonthlyReport",
    "build_report",
    "csv_cell",
    "iso",
    "month_bounds",
    "previous_month",
    "render",
    "render_csv",
    "render_html",
    "render_json",
    "render_markdown",
    "report_to_dict",
    "write_report",
]

Renderer = Callable[[MonthlyReport], str]

_RENDERERS: dict[str, Renderer] = {
    "html": render_html,
    "md": render_markdown,
    "csv": render_csv,
    "json": render_json,
}

#: The output formats, as ``egresswatch report --format`` names them.
FORMATS = tuple(_RENDERERS)


def render(report: MonthlyReport, fmt: str) -> str:
    try:
        renderer = _RENDERERS[fmt]
    except KeyError:
        raise ValueError(f"unknown report format {fmt!r} (use {', '.join(FORMATS)})") from None
    return renderer(report)


def write_report(text: str, path: Path) -> str:
    """Write a rendered report and ``<path>.sha256`` beside it (``sha256sum -c`` format); returns
    the hex digest."""
    data = text.encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    path.write_bytes(data)
    Path(f"{path}.sha256").write_text(f"{digest}  {path.name}\n", encoding="utf-8")
    return digest
