"""Tests of ``egresswatch.report.render_csv``: the tidy CSV and its formula-safe cells."""

from __future__ import annotations

import csv
import io

from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.report import CSV_FIELDS
from egresswatch.report import MonthlyReport
from egresswatch.report import build_report
from egresswatch.report import render_csv
from egresswatch.store.memory import MemoryStore

from tests.plugins.report import AFTER_JULY
from tests.plugins.report import JULY_DAILY
from tests.plugins.report import JULY_TOTALS
from tests.plugins.report import MONTH
from tests.plugins.report import ts


def test_csv_is_tidy_and_parses(report_of_july: MonthlyReport) -> None:
    text = render_csv(report_of_july)
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_FIELDS
    assert all(len(r) == len(CSV_FIELDS) for r in rows)
    records = list(csv.DictReader(io.StringIO(text)))
    got = {
        (r["app"], r["action"], r["metric"]): r["value"] for r in records if r["section"] == "total"
    }
    for t in JULY_TOTALS:
        key = (t["app"], t["action"])
        assert got[(*key, "events")] == str(t["events"])
        assert got[(*key, "distinct_clients")] == str(t["distinct_clients"])
        assert got[(*key, "first_seen")] == t["first_seen"]
    gaps = [r for r in records if r["section"] == "gap" and r["metric"] == "reason"]
    assert [(r["instance"], r["value"]) for r in gaps] == [
        ("proxy-a", "heartbeat-silence"),
        ("proxy-b", "not-running"),
        ("proxy-b", "stopped"),
    ]
    cov = {
        r["instance"]: r["value"]
        for r in records
        if r["section"] == "coverage" and r["metric"] == "percent"
    }
    assert cov == {"proxy-a": "99.60", "proxy-b": "32.26"}
    daily = [(r["key"], r["app"], int(r["value"])) for r in records if r["section"] == "daily"]
    assert daily == JULY_DAILY


def test_csv_cells_never_start_a_formula() -> None:
    # Values from the store and the command line that a spreadsheet would evaluate.
    store = MemoryStore()
    store.write(
        [
            Event(
                ts=ts("2026-07-05T10:00:00"),
                kind=EventKind.HIT,
                instance="p1",
                event_id="1",
                app="tiktok",
                action="blocked",
                host='=HYPERLINK("http://evil.example")',
                department="+cmd|' /C calc'!A0",
                client="@SUM(1+1)",
            )
        ]
    )
    r = build_report(store, MONTH, now=AFTER_JULY, organisation="-2+3", verify=False)
    records = list(csv.DictReader(io.StringIO(render_csv(r))))
    cells = [v for rec in records for v in rec.values()]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert {(x["section"], x["metric"], x["value"]) for x in records} >= {
        ("period", "organisation", "'-2+3"),
        ("top_host", "events", "1"),
    }
    assert [x["key"] for x in records if x["section"] == "top_host"][0] == (
        '\'=HYPERLINK("http://evil.example")'
    )
    assert [x["department"] for x in records if x["section"] == "department"][0] == (
        "'+cmd|' /C calc'!A0"
    )
