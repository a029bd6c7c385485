"""The HTML report in a real browser: headless Chromium renders it, shows the figures and the chart,
and fetches nothing (the Content-Security-Policy would refuse it, which a canary page proves)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from egresswatch.report import MonthlyReport
from egresswatch.report import build_report
from egresswatch.report import render_html
from egresswatch.store.memory import MemoryStore

from tests.plugins.report import JULY_DAILY
from tests.plugins.report import JULY_TOTALS
from tests.plugins.report import MONTH
from tests.support.chromium import NEEDS_CHROMIUM
from tests.support.chromium import chromium

pytestmark = NEEDS_CHROMIUM


class Tables(HTMLParser):
    """Rows of text per ``<table class=...>`` and the ``data-*`` attributes of SVG rects."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.rects: list[dict[str, str]] = []
        self.svg_ids: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table = a.get("class", "")
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "svg":
            self.svg_ids.append(a.get("id", ""))
        elif tag == "rect" and "data-events" in a:
            self.rects.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def july_report(july_store: MemoryStore) -> MonthlyReport:
    return build_report(
        july_store, MONTH, now=datetime(2026, 8, 2, tzinfo=UTC), organisation="Example <Ltd>"
    )


@pytest.fixture
def html_file(tmp_path: Path, july_report: MonthlyReport) -> Path:
    path = tmp_path / "report.html"
    path.write_text(render_html(july_report), encoding="utf-8")
    return path


def test_rendered_dom_has_the_totals_and_the_chart(tmp_path: Path, html_file: Path) -> None:
    dom = chromium(tmp_path, "--dump-dom", html_file.as_uri()).stdout
    page = Tables()
    page.feed(dom)
    totals = page.tables["totals"]
    assert totals[0] == [
        "app",
        "name",
        "action",
        "events",
        "distinct clients",
        "first seen",
        "last seen",
    ]
    assert [(r[0], r[2], int(r[3]), int(r[4]), r[5], r[6]) for r in totals[1:]] == [
        (t["app"], t["action"], t["events"], t["distinct_clients"], t["first_seen"], t["last_seen"])
        for t in JULY_TOTALS
    ]
    assert page.svg_ids == ["coverage-chart", "daily-chart"]
    assert [(r["data-day"], r["data-app"], int(r["data-events"])) for r in page.rects] == JULY_DAILY
    # escaped data comes back as text, never as markup
    assert "<title>egresswatch compliance report 2026-07 — Example &lt;Ltd&gt;</title>" in dom
    assert page.tables["coverage"][1][:3] == ["proxy-a", "30d 21h 0m 0s", "99.60"]


def test_prints_to_pdf(tmp_path: Path, html_file: Path) -> None:
    pdf = tmp_path / "report.pdf"
    chromium(tmp_path, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", html_file.as_uri())
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) >= 3  # several pages, sign-off on its own


class _Counter(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def canary_server() -> Iterator[tuple[str, list[str]]]:
    handler = type("Handler", (_Counter,), {"hits": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("with_csp", [True, False])
def test_policy_blocks_every_fetch(
    tmp_path: Path, html_file: Path, canary_server: tuple[str, list[str]], with_csp: bool
) -> None:
    """A copy of the report with fetches planted in it: with the report's CSP, Chromium makes none
    of them; without it (control) the same page does hit the server, so the check can fail."""
    base, hits = canary_server
    page = html_file.read_text(encoding="utf-8")
    assert not re.search(r"""\b(?:src|href)\s*=|@import|url\(""", page, re.I)  # nothing to fetch
    canary = (
        f'<link rel="stylesheet" href="{base}/style.css">'
        f'<style>body {{ background-image: url("{base}/bg.png"); }}</style>'
    )
    page = page.replace("</head>", canary + "</head>").replace(
        "<body>", f'<body><img src="{base}/pixel.png" alt="">'
    )
    if not with_csp:
        page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page)
        assert "Content-Security-Policy" not in page
    probe = tmp_path / "canary.html"
    probe.write_text(page, encoding="utf-8")
    chromium(tmp_path, "--dump-dom", probe.as_uri())
    if with_csp:
        assert hits == []
    else:
        assert "/pixel.png" in hits and "/style.css" in hits


# Measures, in the rendered page, every word of every table cell that the layout split across
# lines (a Range over one word with more than one line box). Added to a copy of the report
# without its Content-Security-Policy (which refuses every script, as it should).
_MEASURE = """<script>
document.addEventListener("DOMContentLoaded", () => {
  const broken = [];
  for (const cell of document.querySelectorAll("td, th")) {
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const re = /\\S+/g;
      for (let m = re.exec(node.data); m; m = re.exec(node.data)) {
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        const lines = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
        if (lines.size > 1) broken.push(m[0]);
      }
    }
  }
  document.body.setAttribute("data-broken", JSON.stringify(broken));
});
</script>"""


@pytest.mark.parametrize("width", [1024, 700])
def test_narrow_columns_break_no_word_or_hash(tmp_path: Path, html_file: Path, width: int) -> None:
    """Issue 12, item 7: table cells wrap between words; no word, event id or hash is cut."""
    html = html_file.read_text(encoding="utf-8")
    html = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html)
    assert "Content-Security-Policy" not in html
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
    dom = chromium(
        tmp_path, f"--window-size={width},900", "--virtual-time-budget=5000", "--dump-dom",
        probe.as_uri(),
    ).stdout  # fmt: skip
    m = re.search(r'data-broken="([^"]*)"', dom)
    assert m is not None, "the probe did not run"
    broken = json.loads(m.group(1).replace("&quot;", '"'))
    assert broken == [], f"{len(broken)} word(s) cut across lines, e.g. {broken[:8]}"
