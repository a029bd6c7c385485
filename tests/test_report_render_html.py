"""Tests of ``egresswatch.report.render_html``: the self-contained HTML rendering (Chromium checks
the drawn page in ``test_report_chromium.py``)."""

from __future__ import annotations

import re

from egresswatch.report import build_report
from egresswatch.report import render_html
from egresswatch.store.memory import MemoryStore

from tests.plugins.report import AFTER_JULY
from tests.plugins.report import JULY_DAILY
from tests.plugins.report import MONTH


def test_html_is_self_contained_and_escaped(july_store: MemoryStore) -> None:
    r = build_report(
        july_store,
        MONTH,
        now=AFTER_JULY,
        organisation='<script>alert("x")</script> & Co',
        verify=False,
    )
    page = render_html(r)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co" in page
    assert "Supplier payments &lt;China office&gt;" in page
    assert "default-src 'none'; style-src 'unsafe-inline'; img-src data:" in page
    assert not re.search(r"""\b(?:src|href)\s*=|@import|url\(""", page, re.I)
    assert page.count("<svg") == 2 and "<style>" in page
    # one rect per (day, app) with hits, carrying the number it draws
    bars = re.findall(r'data-app="([^"]+)" data-day="([^"]+)" data-events="(\d+)"', page)
    assert [(d, a, int(n)) for a, d, n in bars] == JULY_DAILY
    assert "Reviewer" in page and "Signature" in page
