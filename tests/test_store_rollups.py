"""Tests of ``egresswatch.store._rollups``: the per-batch rollup deltas, UTC days and the checks
on grouping names (the grouped SQL itself runs against every backend in
``test_store_backends.py``)."""

from __future__ import annotations

import pytest
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.store import _rollups

DAY = 1_782_864_000.0  # 2026-07-01T00:00:00Z


def _hit(ts: float, **kw: object) -> Event:
    values: dict[str, object] = {"instance": "p1", "app": "tiktok", "action": "blocked"}
    values.update(kw)
    return Event(ts=ts, kind=EventKind.HIT, event_id=f"e{ts}", **values)  # type: ignore[arg-type]


def test_deltas_count_hits_per_key_with_first_and_last_seen() -> None:
    events = [
        _hit(DAY + 50, regimes=("b", "a"), client="c1", host="h", department="sales"),
        _hit(DAY + 10, regimes=("a", "b"), client="c1", host="h", department="sales"),
        _hit(DAY + 30, regimes=("a", "b"), client="c1", host="h", department="sales"),
        _hit(DAY + 86_400, client="c2"),  # the next UTC day, no regimes, no host
        Event(ts=DAY + 5, kind=EventKind.HEARTBEAT, instance="p1", event_id="b"),
    ]
    assert _rollups.rollup_deltas(events) == {
        ("2026-07-01", "p1", "tiktok", "a,b", "blocked", "sales", "c1", "h"): [
            3,
            DAY + 10,
            DAY + 50,
        ],
        ("2026-07-02", "p1", "tiktok", "", "blocked", "", "c2", ""): [
            1,
            DAY + 86_400,
            DAY + 86_400,
        ],
    }


def test_deltas_keep_each_deciding_rule_and_day_apart_within_a_batch() -> None:
    # One regime list under three deciding rules, and one event half a second before midnight:
    # what the writer looks up once per batch must still key each event by its own rule and day.
    regimes = ("us-eo-13971", "au-pspf")
    events = [
        _hit(DAY + 1, regimes=regimes, decided_by="regime", decided_id="au-pspf"),
        _hit(DAY + 2, regimes=regimes, decided_by="app", decided_id="tiktok"),
        _hit(DAY + 3, regimes=regimes),
        _hit(DAY + 4, regimes=regimes, decided_by="regime", decided_id="au-pspf"),
        _hit(DAY - 0.5, regimes=regimes, decided_by="app", decided_id="tiktok"),
    ]
    assert _rollups.rollup_deltas(events) == {
        ("2026-07-01", "p1", "tiktok", "au-pspf", "blocked", "", "", ""): [2, DAY + 1, DAY + 4],
        ("2026-07-01", "p1", "tiktok", "app", "blocked", "", "", ""): [1, DAY + 2, DAY + 2],
        ("2026-07-01", "p1", "tiktok", "au-pspf,us-eo-13971", "blocked", "", "", ""): [
            1,
            DAY + 3,
            DAY + 3,
        ],
        ("2026-06-30", "p1", "tiktok", "app", "blocked", "", "", ""): [1, DAY - 0.5, DAY - 0.5],
    }


@pytest.mark.parametrize(
    ("start", "end", "days"),
    [
        (DAY, DAY + 86_400, ("2026-07-01", "2026-07-01")),  # end exclusive
        (DAY - 1, DAY + 1, ("2026-06-30", "2026-07-01")),
        (DAY, DAY + 31 * 86_400, ("2026-07-01", "2026-07-31")),
    ],
)
def test_day_range_is_inclusive_of_the_days_the_period_touches(
    start: float, end: float, days: tuple[str, str]
) -> None:
    assert _rollups.day_range(start, end) == days


@pytest.mark.parametrize(
    "by",
    [("app", "app"), ("nope",), ("regime", "each_regime"), ("user",)],
)
def test_bad_groupings_are_refused_with_the_allowed_names(by: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match=r"use distinct names from \('day', 'instance'"):
        _rollups.check_dimensions(by)


def test_good_groupings_pass() -> None:
    assert _rollups.check_dimensions(("app", "each_regime", "action")) == [
        "app",
        "each_regime",
        "action",
    ]
