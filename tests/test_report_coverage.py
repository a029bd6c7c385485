"""Tests of ``egresswatch.report.coverage``: covered time and gaps from liveness rows."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime

import pytest
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.report import build_report
from egresswatch.report import iso
from egresswatch.store.memory import MemoryStore

from tests.plugins.report import AFTER_JULY
from tests.plugins.report import JULY_COVERED
from tests.plugins.report import JULY_GAPS
from tests.plugins.report import JULY_SECONDS
from tests.plugins.report import MONTH
from tests.plugins.report import ts


def test_coverage_figures_and_gaps(json_of_july: dict) -> None:  # type: ignore[type-arg]
    cov = {c["instance"]: c for c in json_of_july["coverage"]}
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
