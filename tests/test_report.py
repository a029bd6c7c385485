"""Tests of ``egresswatch.report`` as a whole: what every format says, ``render`` and ``write_report``.

The report package's tests mirror its modules: ``test_report_build.py``, ``test_report_coverage.py``,
``test_report_history.py``, ``test_report_render_{json,csv,md,html}.py``, ``test_report_svg.py``
(and ``test_report_chromium.py`` for the drawn HTML)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from pathlib import Path

import pytest
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.report import MonthlyReport
from egresswatch.report import build_report
from egresswatch.report import render
from egresswatch.report import render_csv
from egresswatch.report import render_html
from egresswatch.report import render_json
from egresswatch.report import render_markdown
from egresswatch.report import write_report
from egresswatch.store import EventStore
from egresswatch.store.memory import MemoryStore

from tests.plugins.report import AFTER_JULY
from tests.plugins.report import MONTH
from tests.plugins.report import ts


def _small_month(store: EventStore) -> None:
    base = ts("2026-07-02T10:00:00")
    store.write(
        [
            Event(ts=base, kind=EventKind.START, instance="p1", event_id="s"),
            *(
                Event(
                    ts=base + i,
                    kind=EventKind.HIT,
                    instance="p1",
                    event_id=f"h{i}",
                    app="tiktok",
                    regimes=("us-far-52.204-27",),
                    action="blocked",
                    host="www.tiktok.com",
                    client="10.0.0.7",
                )
                for i in range(1, 6)
            ),
        ]
    )


def test_tampering_shows_in_every_format(store: EventStore, tamper) -> None:  # type: ignore[no-untyped-def]
    _small_month(store)
    tamper.edit("p1", 3, "host", "www.example.com")
    r = build_report(store, MONTH, now=AFTER_JULY)
    assert r.integrity.verified and not r.integrity.ok
    assert any("p1#3" in p and "edited" in p for p in r.integrity.problems)
    assert "FAILED" in render_markdown(r)
    assert 'class="verdict fail"' in render_html(r)
    assert json.loads(render_json(r))["integrity"]["ok"] is False
    rows = list(csv.DictReader(io.StringIO(render_csv(r))))
    assert {(x["section"], x["metric"], x["value"]) for x in rows} >= {("integrity", "ok", "false")}


def test_an_exception_for_apps_and_regimes_names_both_in_every_table(
    report_of_july: MonthlyReport,
) -> None:
    both = dataclasses.replace(
        report_of_july.exceptions[0], apps=("tiktok",), regimes=("us-far-52-204-27",)
    )
    r = dataclasses.replace(report_of_july, exceptions=(both,))
    assert f"| {both.id} | tiktok, us-far-52-204-27 |" in render_markdown(r)
    assert (
        f'<td class="tok">{both.id}</td><td>tiktok, <span class="tok">us-far-52-204-27</span></td>'
        in render_html(r)
    )


def test_empty_month_renders_everywhere() -> None:
    store = MemoryStore()
    r = build_report(store, "2026-02", now=AFTER_JULY)
    assert r.totals == () and r.coverage == () and r.integrity.ok
    for fmt in ("html", "md", "csv", "json"):
        assert render(r, fmt)
    assert json.loads(render_json(r))["totals"] == []
    with pytest.raises(ValueError, match="unknown report format"):
        render(r, "pdf")


def test_write_report_writes_a_checkable_sha256(
    tmp_path: Path, report_of_july: MonthlyReport
) -> None:
    out = tmp_path / "july.html"
    digest = write_report(render_html(report_of_july), out)
    assert digest == hashlib.sha256(out.read_bytes()).hexdigest()
    assert (tmp_path / "july.html.sha256").read_text() == f"{digest}  july.html\n"


def test_store_password_is_not_printed() -> None:
    class Wrapped(MemoryStore):
        pass

    store = Wrapped("postgresql://egw:s3cret@db.example:5432/egresswatch")
    r = build_report(store, "2026-07", now=AFTER_JULY, verify=False)
    assert "s3cret" not in r.store and r.store == "postgresql://egw:***@db.example:5432/egresswatch"


def test_docstring_examples() -> None:
    import doctest
    import importlib
    import pkgutil

    import egresswatch.report

    attempted = failed = 0
    for info in pkgutil.iter_modules(egresswatch.report.__path__, "egresswatch.report."):
        result = doctest.testmod(importlib.import_module(info.name))
        attempted, failed = attempted + result.attempted, failed + result.failed
    assert attempted >= 5 and failed == 0
