"""Tests of ``egresswatch.report``: figures checked against the hand-worked synthetic July in
``tests/plugins/report.py``, every renderer, and the report over each real store backend."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC
from datetime import date
from datetime import datetime
from pathlib import Path

import pytest
from egresswatch.catalogue import bundled_dir
from egresswatch.catalogue import load_catalogue
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.report import CSV_FIELDS
from egresswatch.report import MonthlyReport
from egresswatch.report import build_report
from egresswatch.report import iso
from egresswatch.report import month_bounds
from egresswatch.report import previous_month
from egresswatch.report import render
from egresswatch.report import render_csv
from egresswatch.report import render_html
from egresswatch.report import render_json
from egresswatch.report import render_markdown
from egresswatch.report import report_to_dict
from egresswatch.report import write_report
from egresswatch.store import EventStore
from egresswatch.store.memory import MemoryStore

from tests.plugins.report import JULY_COVERED
from tests.plugins.report import JULY_DAILY
from tests.plugins.report import JULY_GAPS
from tests.plugins.report import JULY_SECONDS
from tests.plugins.report import JULY_TOP_CLIENTS
from tests.plugins.report import JULY_TOP_HOSTS
from tests.plugins.report import JULY_TOTALS
from tests.plugins.report import MONTH
from tests.plugins.report import ts

AFTER_JULY = datetime(2026, 8, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalogue():  # type: ignore[no-untyped-def]
    return load_catalogue([bundled_dir()])


@pytest.fixture(scope="module")
def report(july_store: MemoryStore, catalogue) -> MonthlyReport:  # type: ignore[no-untyped-def]
    return build_report(
        july_store, MONTH, now=AFTER_JULY, organisation="Example Ltd", catalogue=catalogue
    )


@pytest.fixture(scope="module")
def data(report: MonthlyReport) -> dict:  # type: ignore[type-arg]
    return json.loads(render_json(report))


# -- period -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("month", "start", "end"),
    [
        ("2026-07", "2026-07-01T00:00:00+00:00", "2026-08-01T00:00:00+00:00"),
        ("2026-12", "2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"),
        ("2028-02", "2028-02-01T00:00:00+00:00", "2028-03-01T00:00:00+00:00"),
    ],
)
def test_month_bounds(month: str, start: str, end: str) -> None:
    a, b = month_bounds(month)
    assert (a.isoformat(), b.isoformat()) == (start, end)


@pytest.mark.parametrize("bad", ["2026-7", "2026-13", "2026-00", "26-07", "2026-07-01", "", "july"])
def test_month_bounds_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        month_bounds(bad)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 8, 1, 0, 0, tzinfo=UTC), "2026-07"),
        (datetime(2026, 7, 31, 23, 59, tzinfo=UTC), "2026-06"),
        (datetime(2027, 1, 3, tzinfo=UTC), "2026-12"),
    ],
)
def test_previous_month(now: datetime, expected: str) -> None:
    assert previous_month(now) == expected


def test_period_and_scope(data: dict) -> None:  # type: ignore[type-arg]
    assert data["month"] == "2026-07"
    assert data["period"] == {
        "start": "2026-07-01T00:00:00Z",
        "end": "2026-08-01T00:00:00Z",
        "end_exclusive": True,
        "partial": False,
    }
    assert data["generated_at"] == "2026-08-02T09:00:00Z"
    assert data["organisation"] == "Example Ltd"
    assert data["instances"] == ["proxy-a", "proxy-b"]
    assert data["client_identity"] == "hash"
    assert data["store"] == "memory://"


# -- findings -----------------------------------------------------------------------------------


def test_totals_are_exact(data: dict) -> None:  # type: ignore[type-arg]
    # Hits at 30 June 23:55 and 1 August 00:00 lie outside the period and are not counted.
    assert data["totals"] == JULY_TOTALS


def test_per_regime_counts_each_regime_of_an_app(data: dict) -> None:  # type: ignore[type-arg]
    rows = {(r["app"], r["regime"], r["action"]): r["events"] for r in data["by_regime"]}
    assert rows == {
        ("tiktok", "us-eo-13942", "blocked"): 7,
        ("tiktok", "us-eo-13942", "monitor"): 7,
        ("tiktok", "us-far-52.204-27", "blocked"): 7,
        ("tiktok", "us-far-52.204-27", "monitor"): 7,
        ("wechat-pay", "us-eo-13943", "blocked"): 1,
        ("wechat-pay", "us-eo-13943", "exempted"): 6,
        ("wechat-pay", "us-eo-13943", "would_block"): 2,
        ("wechat-pay", "us-eo-13971", "blocked"): 1,
        ("wechat-pay", "us-eo-13971", "exempted"): 6,
        ("wechat-pay", "us-eo-13971", "would_block"): 2,
    }
    far = next(
        r
        for r in data["by_regime"]
        if r["regime"] == "us-far-52.204-27" and r["action"] == "monitor"
    )
    assert (far["distinct_clients"], far["first_seen"], far["last_seen"]) == (
        2,
        "2026-07-01T08:00:00Z",
        "2026-07-31T23:59:01Z",
    )


def test_per_department(data: dict) -> None:  # type: ignore[type-arg]
    rows = {
        (r["app"], r["department"], r["action"]): (r["events"], r["distinct_clients"])
        for r in data["by_department"]
    }
    assert rows == {
        ("tiktok", "eng", "blocked"): (3, 1),
        ("tiktok", "eng", "monitor"): (2, 1),
        ("tiktok", "sales", "blocked"): (4, 1),
        ("tiktok", "sales", "monitor"): (5, 1),
        ("wechat-pay", "", "would_block"): (2, 1),
        ("wechat-pay", "finance", "blocked"): (1, 1),
        ("wechat-pay", "finance", "exempted"): (6, 1),
    }


def test_top_clients_and_hosts(data: dict) -> None:  # type: ignore[type-arg]
    assert [(t["key"], t["events"]) for t in data["top_clients"]] == JULY_TOP_CLIENTS
    assert [(t["key"], t["events"]) for t in data["top_hosts"]] == JULY_TOP_HOSTS
    assert data["top_clients"][0]["apps"] == ["tiktok"]
    assert data["top_hosts"][0]["first_seen"] == "2026-07-01T08:00:00Z"


def test_top_n_limits_the_lists(july_store: MemoryStore) -> None:
    r = build_report(july_store, MONTH, now=AFTER_JULY, top_n=2, verify=False)
    assert [t.key for t in r.top_clients] == ["h:aaaa", "h:dddd"]
    assert [t.key for t in r.top_hosts] == ["www.tiktok.com", "pay.weixin.qq.com"]
    with pytest.raises(ValueError, match="top_n"):
        build_report(july_store, MONTH, now=AFTER_JULY, top_n=0)


def test_daily_trend(report: MonthlyReport) -> None:
    assert [(d.day, d.app, d.events) for d in report.daily] == JULY_DAILY
    assert (
        len(report.days) == 31
        and report.days[0] == "2026-07-01"
        and report.days[-1] == "2026-07-31"
    )


def test_apps_and_regime_status_from_the_catalogue(data: dict) -> None:  # type: ignore[type-arg]
    assert {a["id"]: a["name"] for a in data["apps"]} == {
        "tiktok": "TikTok",
        "wechat-pay": "WeChat Pay",
    }
    status = {r["id"]: (r["status"], r["revoked"]) for r in data["regimes"]}
    assert status == {
        "us-eo-13942": ("revoked", "2021-06-09"),
        "us-eo-13943": ("revoked", "2021-06-09"),
        "us-eo-13971": ("revoked", "2021-06-09"),
        "us-far-52.204-27": ("in_force", None),
    }


def test_without_catalogue_regimes_are_unknown(july_store: MemoryStore) -> None:
    r = build_report(july_store, MONTH, now=AFTER_JULY, verify=False)
    assert {x.status for x in r.regimes} == {"unknown"}
    assert dict(r.apps) == {"tiktok": "tiktok", "wechat-pay": "wechat-pay"}


# -- coverage -----------------------------------------------------------------------------------


def test_coverage_figures_and_gaps(data: dict) -> None:  # type: ignore[type-arg]
    cov = {c["instance"]: c for c in data["coverage"]}
    for inst, covered in JULY_COVERED.items():
        assert cov[inst]["covered_seconds"] == covered
        assert cov[inst]["period_seconds"] == JULY_SECONDS
        assert cov[inst]["percent"] == round(100 * covered / JULY_SECONDS, 4)
        assert [(g["start"], g["end"], g["reason"]) for g in cov[inst]["gaps"]] == JULY_GAPS[inst]
    assert cov["proxy-a"]["percent"] == 99.5968
    assert (cov["proxy-a"]["starts"], cov["proxy-a"]["stops"]) == (1, 0)
    assert (cov["proxy-b"]["starts"], cov["proxy-b"]["stops"]) == (1, 1)
    assert cov["proxy-b"]["first_seen"] == "2026-07-10T00:00:00Z"
    assert cov["proxy-b"]["last_seen"] == "2026-07-20T00:00:00Z"
    assert cov["proxy-a"]["versions"] == ["0.1.0"]


def _beats(
    inst: str, times: list[float], kinds: dict[float, EventKind] | None = None
) -> list[Event]:
    kinds = kinds or {}
    return [
        Event(ts=t, kind=kinds.get(t, EventKind.HEARTBEAT), instance=inst, event_id=f"{inst}-{i}")
        for i, t in enumerate(times)
    ]


@pytest.mark.parametrize(
    ("offsets", "covered", "gaps"),
    [
        # beats 150 s apart are still continuous; 151 s apart is a gap
        ([0, 150, 300], 300.0, []),
        ([0, 150, 301], 150.0, [(150.0, 301.0, "heartbeat-silence")]),
    ],
)
def test_gap_threshold_is_two_and_a_half_minutes(
    offsets: list[int], covered: float, gaps: list[tuple[float, float, str]]
) -> None:
    base = ts("2026-03-10T00:00:00")
    store = MemoryStore()
    store.write(_beats("p", [base + o for o in offsets], {base + offsets[-1]: EventKind.STOP}))
    r = build_report(store, "2026-03", now=AFTER_JULY, verify=False)
    (c,) = r.coverage
    assert c.covered_seconds == covered
    found = [(g.start - base, g.end - base, g.reason) for g in c.gaps if g.reason != "not-running"]
    assert found == [(a, b, why) for a, b, why in gaps] + [
        (float(offsets[-1]), 22 * 86400.0, "stopped")
    ]


def test_partial_month_is_judged_up_to_now(july_store: MemoryStore) -> None:
    now = datetime(2026, 7, 11, 0, 0, tzinfo=UTC)
    r = build_report(july_store, MONTH, now=now, verify=False)
    assert r.partial
    cov = {c.instance: c for c in r.coverage}
    assert cov["proxy-a"].period_seconds == 10 * 86400
    assert cov["proxy-a"].covered_seconds == 10 * 86400 - 3 * 3600
    assert cov["proxy-b"].covered_seconds == 86400  # 10 July only
    assert [(iso(g.start), g.reason) for g in cov["proxy-b"].gaps] == [
        ("2026-07-01T00:00:00Z", "not-running")
    ]
    # X1 expires on 16 July 00:00: not yet expired on the 11th.
    assert {x.id: x.expired for x in r.exceptions}["X1"] is False


# -- configuration ------------------------------------------------------------------------------


def test_catalogue_versions_in_force(data: dict) -> None:  # type: ignore[type-arg]
    cats = {c["version"]: c for c in data["catalogues"]}
    assert list(cats) == ["cat-v1", "cat-v2"]
    # cat-v1 was loaded on 30 June (found by looking back) and is in force from the 1st.
    assert cats["cat-v1"]["first_seen"] == "2026-07-01T00:00:00Z"
    assert cats["cat-v1"]["last_seen"] == "2026-07-20T00:00:00Z"  # proxy-b's stop
    assert cats["cat-v1"]["loads"] == 2  # proxy-a's restart and proxy-b's start
    assert cats["cat-v1"]["instances"] == ["proxy-a", "proxy-b"]
    assert cats["cat-v1"]["entries"] == {"tiktok": 40, "wechat-pay": 6}
    assert cats["cat-v2"]["first_seen"] == "2026-07-08T12:00:00Z"
    assert cats["cat-v2"]["last_seen"] == "2026-07-31T23:58:00Z"
    assert (cats["cat-v2"]["loads"], cats["cat-v2"]["instances"]) == (1, ["proxy-a"])
    assert cats["cat-v2"]["entries"] == {"tiktok": 41, "wechat-pay": 7}


def test_policies_in_force(data: dict) -> None:  # type: ignore[type-arg]
    pols = {p["version"]: p for p in data["policies"]}
    assert list(pols) == ["pol-v1", "pol-v2"]
    assert pols["pol-v2"]["first_seen"] == "2026-07-12T09:00:00Z"
    assert pols["pol-v1"]["modes"] == {"tiktok": "block", "wechat-pay": "block"}
    assert pols["pol-v1"]["dry_run"] is False
    assert pols["pol-v1"]["file"] == "/etc/egresswatch/policy.yaml"


def test_exceptions_in_force_granted_expired(data: dict) -> None:  # type: ignore[type-arg]
    flags = {x["id"]: (x["in_force"], x["granted"], x["expired"]) for x in data["exceptions"]}
    assert flags == {
        "X0": (False, False, False),  # expired in June
        "X1": (True, False, True),  # from June, expires at the end of 15 July
        "X2": (True, True, False),  # granted in July, runs to September
        "X3": (True, True, True),  # granted and expired in July (datetime expiry)
    }
    x1 = next(x for x in data["exceptions"] if x["id"] == "X1")
    assert x1["expires_at"] == "2026-07-16T00:00:00Z"
    assert (x1["approver"], x1["ticket"]) == ("cfo@example.org", "FIN-7")
    x3 = next(x for x in data["exceptions"] if x["id"] == "X3")
    assert x3["expires_at"] == "2026-07-20T12:00:00Z"


# -- integrity ----------------------------------------------------------------------------------


def test_integrity_section(data: dict, july_store: MemoryStore) -> None:  # type: ignore[type-arg]
    integ = data["integrity"]
    assert integ["verified"] and integ["ok"] and integ["problems"] == []
    assert integ["checked"] == len(july_store.rows)
    assert [(h["instance"], h["seq"], h["chain_hash"]) for h in integ["chain_heads"]] == [
        (h.instance, h.seq, h.chain_hash) for h in july_store.chain_heads()
    ]


def test_skipped_verification_is_said(july_store: MemoryStore) -> None:
    r = build_report(july_store, MONTH, now=AFTER_JULY, verify=False)
    assert not r.integrity.verified
    assert "Verification: not run" in render_markdown(r)


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


# -- every backend, and after pruning -----------------------------------------------------------


def _comparable(r: MonthlyReport) -> dict:  # type: ignore[type-arg]
    """The report without what names this store and its verification runs (ids, times)."""
    d = report_to_dict(r)
    d.pop("store")
    for run_specific in ("mode", "checked_now", "provenance"):
        d["integrity"].pop(run_specific)  # type: ignore[attr-defined]
    return d


def test_same_report_from_every_backend_and_after_pruning(
    store: EventStore,
    july: list[Event],
    report: MonthlyReport,
    catalogue,  # type: ignore[no-untyped-def]
) -> None:
    store.write(july)
    reference = _comparable(report)
    before = build_report(
        store, MONTH, now=AFTER_JULY, organisation="Example Ltd", catalogue=catalogue
    )
    assert _comparable(before) == reference
    assert report_to_dict(before)["totals"] == JULY_TOTALS

    deleted = store.prune(ts("2026-08-01T00:00:00"))
    assert deleted > 29_000
    assert not any(
        e.kind == EventKind.HIT
        for e in store.iter_events(ts("2026-07-01T00:00:00"), ts("2026-08-01T00:00:00"))
    )
    after = build_report(
        store, MONTH, now=AFTER_JULY, organisation="Example Ltd", catalogue=catalogue
    )
    # Findings come from the rollups, which outlive the raw events; the chain still verifies
    # from the prune checkpoint.
    for section in ("totals", "by_regime", "by_department", "top_clients", "top_hosts", "daily"):
        assert report_to_dict(after)[section] == reference[section], section
    assert after.integrity.ok
    # Coverage and configuration come from the lifecycle rows, which prune moved to the
    # lifecycle archive: the same sections as before, figure for figure.
    for section in ("coverage", "catalogues", "policies", "exceptions", "client_identity",
                    "instances", "lifecycle_rows", "notes"):  # fmt: skip
        assert report_to_dict(after)[section] == reference[section], section
    assert before.lifecycle_rows > 29_000 and after.lifecycle_rows == before.lifecycle_rows
    assert after.lifecycle_note == "" and after.coverage[0].covered_seconds > 0
    # Only the integrity section differs: fewer rows are left to verify after the checkpoint.
    assert _comparable(after)["integrity"]["chain_heads"] == reference["integrity"]["chain_heads"]


def test_app_changing_regimes_counts_each_client_once(store: EventStore) -> None:
    """Three regime lists for one app in a month (a catalogue change): the grouped queries must
    count a client once per row of every table, as a hand count does."""

    def hit(day: int, client: str, regimes: tuple[str, ...]) -> Event:
        return Event(
            ts=ts(f"2026-07-{day:02d}T10:00:00"),
            kind=EventKind.HIT,
            instance="p1",
            event_id=f"{day}{client}",
            app="tiktok",
            regimes=regimes,
            action="blocked",
            host="www.tiktok.com",
            client=client,
            department="sales",
        )

    store.write([hit(2, "a", ("r1",)), hit(3, "a", ("r1", "r2")), hit(4, "b", ("r2",))])
    d = report_to_dict(build_report(store, MONTH, now=AFTER_JULY, verify=False))
    assert [(t["app"], t["action"], t["events"], t["distinct_clients"]) for t in d["totals"]] == [
        ("tiktok", "blocked", 3, 2)
    ]
    assert [(r["regime"], r["events"], r["distinct_clients"]) for r in d["by_regime"]] == [
        ("r1", 2, 1),
        ("r2", 2, 2),
    ]
    assert d["by_regime"][1]["first_seen"] == "2026-07-03T10:00:00Z"
    assert [(x["department"], x["events"], x["distinct_clients"]) for x in d["by_department"]] == [
        ("sales", 3, 2)
    ]
    assert [(c["key"], c["events"]) for c in d["top_clients"]] == [("a", 2), ("b", 1)]


# -- renderers ----------------------------------------------------------------------------------


def test_json_has_every_section(data: dict) -> None:  # type: ignore[type-arg]
    assert set(data) >= {
        "totals",
        "coverage",
        "catalogues",
        "policies",
        "exceptions",
        "by_regime",
        "by_department",
        "top_clients",
        "top_hosts",
        "daily",
        "regimes",
        "integrity",
        "method",
    }
    assert {
        "DNS over HTTPS / DNS over TLS",
        "Certificate pinning",
        "Apps installed but not used",
    } <= {b["name"] for b in data["method"]["blind_spots"]}
    assert any("14034" in t for t in data["method"]["legal"])


def test_csv_is_tidy_and_parses(report: MonthlyReport) -> None:
    text = render_csv(report)
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


def test_markdown_has_the_sections(report: MonthlyReport) -> None:
    md = render_markdown(report)
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
    broken = render_markdown(dataclasses.replace(report, organisation="A\rB\nC|D"))
    assert "\r" not in broken
    assert "# egresswatch compliance report 2026-07: A B C\\|D\n" in broken


def test_an_exception_for_apps_and_regimes_names_both_in_every_table(
    report: MonthlyReport,
) -> None:
    both = dataclasses.replace(
        report.exceptions[0], apps=("tiktok",), regimes=("us-far-52-204-27",)
    )
    r = dataclasses.replace(report, exceptions=(both,))
    assert f"| {both.id} | tiktok, us-far-52-204-27 |" in render_markdown(r)
    assert f"<td>{both.id}</td><td>tiktok, us-far-52-204-27</td>" in render_html(r)


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


def test_empty_month_renders_everywhere() -> None:
    store = MemoryStore()
    r = build_report(store, "2026-02", now=AFTER_JULY)
    assert r.totals == () and r.coverage == () and r.integrity.ok
    for fmt in ("html", "md", "csv", "json"):
        assert render(r, fmt)
    assert json.loads(render_json(r))["totals"] == []
    with pytest.raises(ValueError, match="unknown report format"):
        render(r, "pdf")


def test_write_report_writes_a_checkable_sha256(tmp_path: Path, report: MonthlyReport) -> None:
    out = tmp_path / "july.html"
    digest = write_report(render_html(report), out)
    assert digest == hashlib.sha256(out.read_bytes()).hexdigest()
    assert (tmp_path / "july.html.sha256").read_text() == f"{digest}  july.html\n"


def test_store_password_is_not_printed() -> None:
    class Wrapped(MemoryStore):
        pass

    store = Wrapped("postgresql://egw:s3cret@db.example:5432/egresswatch")
    r = build_report(store, "2026-07", now=AFTER_JULY, verify=False)
    assert "s3cret" not in r.store and r.store == "postgresql://egw:***@db.example:5432/egresswatch"


def test_regime_status_is_taken_at_the_end_of_the_period(catalogue) -> None:  # type: ignore[no-untyped-def]
    # EO 13971 was revoked on 9 June 2021: in force for a May 2021 report, revoked for June's.
    regime = catalogue.regimes["us-eo-13971"]
    assert regime.status(date(2021, 5, 31)) == "in_force"
    store = MemoryStore()
    base = ts("2021-05-10T00:00:00")
    store.write(
        [
            Event(
                ts=base,
                kind=EventKind.HIT,
                instance="p",
                event_id="1",
                app="wechat-pay",
                regimes=("us-eo-13971",),
                action="monitor",
            ),
            Event(
                ts=base + 30 * 86400,
                kind=EventKind.HIT,
                instance="p",
                event_id="2",
                app="wechat-pay",
                regimes=("us-eo-13971",),
                action="monitor",
            ),
        ]
    )
    may = build_report(store, "2021-05", now=AFTER_JULY, catalogue=catalogue, verify=False)
    june = build_report(store, "2021-06", now=AFTER_JULY, catalogue=catalogue, verify=False)
    assert [x.status for x in may.regimes] == ["in_force"]
    assert [x.status for x in june.regimes] == ["revoked"]


@pytest.fixture
def far_east_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's local time zone is UTC+14 for the test."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_east_local_time")
def test_a_naive_now_is_utc_not_local_time() -> None:
    naive = datetime(2026, 8, 1, 5, 0)  # read as local time (UTC+14): 31 July 15:00 UTC
    assert previous_month(naive) == previous_month(naive.replace(tzinfo=UTC)) == "2026-07"
    r = build_report(MemoryStore(), "2026-07", now=naive, verify=False)
    assert r.generated_at == ts("2026-08-01T05:00:00") and not r.partial


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
