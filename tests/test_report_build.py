"""Tests of ``egresswatch.report.build``: the figures of ``build_report`` checked against the hand-worked
synthetic July in ``tests/plugins/report.py``, over every store backend and after pruning."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC
from datetime import date
from datetime import datetime

import pytest
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.report import MonthlyReport
from egresswatch.report import build_report
from egresswatch.report import month_bounds
from egresswatch.report import previous_month
from egresswatch.report import render_markdown
from egresswatch.report import report_to_dict
from egresswatch.store import EventStore
from egresswatch.store.memory import MemoryStore

from tests.plugins.report import AFTER_JULY
from tests.plugins.report import JULY_DAILY
from tests.plugins.report import JULY_TOP_CLIENTS
from tests.plugins.report import JULY_TOP_HOSTS
from tests.plugins.report import JULY_TOTALS
from tests.plugins.report import MONTH
from tests.plugins.report import ts


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


def test_period_and_scope(json_of_july: dict) -> None:  # type: ignore[type-arg]
    assert json_of_july["month"] == "2026-07"
    assert json_of_july["period"] == {
        "start": "2026-07-01T00:00:00Z",
        "end": "2026-08-01T00:00:00Z",
        "end_exclusive": True,
        "partial": False,
    }
    assert json_of_july["generated_at"] == "2026-08-02T09:00:00Z"
    assert json_of_july["organisation"] == "Example Ltd"
    assert json_of_july["instances"] == ["proxy-a", "proxy-b"]
    assert json_of_july["client_identity"] == "hash"
    assert json_of_july["store"] == "memory://"


def test_totals_are_exact(json_of_july: dict) -> None:  # type: ignore[type-arg]
    # Hits at 30 June 23:55 and 1 August 00:00 lie outside the period and are not counted.
    assert json_of_july["totals"] == JULY_TOTALS


def test_per_regime_counts_each_regime_of_an_app(json_of_july: dict) -> None:  # type: ignore[type-arg]
    rows = {(r["app"], r["regime"], r["action"]): r["events"] for r in json_of_july["by_regime"]}
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
        for r in json_of_july["by_regime"]
        if r["regime"] == "us-far-52.204-27" and r["action"] == "monitor"
    )
    assert (far["distinct_clients"], far["first_seen"], far["last_seen"]) == (
        2,
        "2026-07-01T08:00:00Z",
        "2026-07-31T23:59:01Z",
    )


def test_per_department(json_of_july: dict) -> None:  # type: ignore[type-arg]
    rows = {
        (r["app"], r["department"], r["action"]): (r["events"], r["distinct_clients"])
        for r in json_of_july["by_department"]
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


def test_top_clients_and_hosts(json_of_july: dict) -> None:  # type: ignore[type-arg]
    assert [(t["key"], t["events"]) for t in json_of_july["top_clients"]] == JULY_TOP_CLIENTS
    assert [(t["key"], t["events"]) for t in json_of_july["top_hosts"]] == JULY_TOP_HOSTS
    assert json_of_july["top_clients"][0]["apps"] == ["tiktok"]
    assert json_of_july["top_hosts"][0]["first_seen"] == "2026-07-01T08:00:00Z"


def test_top_n_limits_the_lists(july_store: MemoryStore) -> None:
    r = build_report(july_store, MONTH, now=AFTER_JULY, top_n=2, verify=False)
    assert [t.key for t in r.top_clients] == ["h:aaaa", "h:dddd"]
    assert [t.key for t in r.top_hosts] == ["www.tiktok.com", "pay.weixin.qq.com"]
    with pytest.raises(ValueError, match="top_n"):
        build_report(july_store, MONTH, now=AFTER_JULY, top_n=0)


def test_daily_trend(report_of_july: MonthlyReport) -> None:
    assert [(d.day, d.app, d.events) for d in report_of_july.daily] == JULY_DAILY
    assert (
        len(report_of_july.days) == 31
        and report_of_july.days[0] == "2026-07-01"
        and report_of_july.days[-1] == "2026-07-31"
    )


def test_apps_and_regime_status_from_the_catalogue(json_of_july: dict) -> None:  # type: ignore[type-arg]
    assert {a["id"]: a["name"] for a in json_of_july["apps"]} == {
        "tiktok": "TikTok",
        "wechat-pay": "WeChat Pay",
    }
    status = {r["id"]: (r["status"], r["revoked"]) for r in json_of_july["regimes"]}
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


def test_integrity_section(json_of_july: dict, july_store: MemoryStore) -> None:  # type: ignore[type-arg]
    integ = json_of_july["integrity"]
    assert integ["verified"] and integ["ok"] and integ["problems"] == []
    assert integ["checked"] == len(july_store.rows)
    assert [(h["instance"], h["seq"], h["chain_hash"]) for h in integ["chain_heads"]] == [
        (h.instance, h.seq, h.chain_hash) for h in july_store.chain_heads()
    ]


def test_skipped_verification_is_said(july_store: MemoryStore) -> None:
    r = build_report(july_store, MONTH, now=AFTER_JULY, verify=False)
    assert not r.integrity.verified
    assert "Verification: not run" in render_markdown(r)


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
    report_of_july: MonthlyReport,
    bundled_catalogue,  # type: ignore[no-untyped-def]
) -> None:
    store.write(july)
    reference = _comparable(report_of_july)
    before = build_report(
        store, MONTH, now=AFTER_JULY, organisation="Example Ltd", catalogue=bundled_catalogue
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
        store, MONTH, now=AFTER_JULY, organisation="Example Ltd", catalogue=bundled_catalogue
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


def test_regime_status_is_taken_at_the_end_of_the_period(bundled_catalogue) -> None:  # type: ignore[no-untyped-def]
    # EO 13971 was revoked on 9 June 2021: in force for a May 2021 report, revoked for June's.
    regime = bundled_catalogue.regimes["us-eo-13971"]
    assert regime.status(date(2021, 5, 31)) == "in_force"
    store = MemoryStore()
    base = ts("2021-05-10T00:00:00")
    store.write(
        [
            Event(
                ts=base + days * 86400,
                kind=EventKind.HIT,
                instance="p",
                event_id=event_id,
                app="wechat-pay",
                regimes=("us-eo-13971",),
                action="monitor",
            )
            for event_id, days in (("1", 0), ("2", 30))  # May 10th, June 9th
        ]
    )
    may = build_report(store, "2021-05", now=AFTER_JULY, catalogue=bundled_catalogue, verify=False)
    june = build_report(store, "2021-06", now=AFTER_JULY, catalogue=bundled_catalogue, verify=False)
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


def test_thin_catalogue_entries_are_named_with_the_blind_spots(
    report_of_july: MonthlyReport,
) -> None:
    """An app file's ``completeness`` reaches the method section of every format (VMate's does)."""
    (vmate,) = [t for n, t in report_of_july.catalogue_limits if n == "VMate"]
    assert "publicdata.vmate.in" in vmate
    blind = report_to_dict(report_of_july)["method"]["blind_spots"]  # type: ignore[index]
    assert {"name": "Thin catalogue: VMate", "text": vmate} in blind
    assert f"- **Thin catalogue: VMate**: {vmate}" in render_markdown(report_of_july)


def test_no_catalogue_no_catalogue_limits(july_store: MemoryStore) -> None:
    r = build_report(july_store, MONTH, now=AFTER_JULY, verify=False)
    assert r.catalogue_limits == ()


def test_the_daily_trend_of_a_partial_month_stops_at_today() -> None:
    """Issue 12, item 7: days after "now" have no figures yet; they are not shown as zeros."""
    store = MemoryStore()
    store.write(
        [Event(ts=ts("2026-07-03T10:00:00"), kind=EventKind.HIT, instance="p1", event_id="h",
               app="tiktok", action="blocked", host="www.tiktok.com", client="a")]
    )  # fmt: skip
    now = datetime(2026, 7, 10, 12, 0, tzinfo=UTC)
    report = build_report(store, MONTH, now=now, verify=False)
    assert report.partial
    assert (report.days[0], report.days[-1], len(report.days)) == ("2026-07-01", "2026-07-10", 10)
    md = render_markdown(report)
    assert "| 2026-07-10 |" in md and "| 2026-07-11 |" not in md
