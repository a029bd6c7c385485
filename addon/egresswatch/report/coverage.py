"""Coverage over the month: when each proxy instance was running, from its liveness rows.

Start, heartbeat and stop rows prove an instance was up: consecutive rows less than the gap
threshold apart cover the time between them; a longer silence, a stop or the absence of any row
is a :class:`~.model.Gap`, with the reason we think it happened.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence

from ..events import Event
from ..events import EventKind
from .history import Details
from .model import Coverage
from .model import Gap

__all__ = ["instance_coverage"]


def instance_coverage(
    instance: str,
    events: Sequence[Event],
    details: Details,
    start: float,
    cutoff: float,
    threshold: float,
) -> Coverage:
    """Covered time from liveness rows: consecutive rows less than ``threshold`` apart cover the
    time between them, a ``stop`` ends coverage, and coverage runs to ``cutoff`` when the last row
    before it is recent enough."""
    events = sorted(events, key=lambda e: e.ts)
    intervals: list[tuple[float, float]] = []
    gaps: list[Gap] = []
    prev: Event | None = None
    for e in events:
        if prev is not None and prev.kind != EventKind.STOP:
            if e.ts - prev.ts <= threshold:
                intervals.append((prev.ts, e.ts))
            else:
                gaps.append(Gap(prev.ts, e.ts, "heartbeat-silence"))
        elif prev is not None:
            gaps.append(Gap(prev.ts, e.ts, "stopped"))
        prev = e
    if prev is not None and prev.ts <= cutoff:
        if prev.kind == EventKind.STOP:
            gaps.append(Gap(prev.ts, cutoff, "stopped"))
        elif cutoff - prev.ts <= threshold:
            intervals.append((prev.ts, cutoff))
        else:
            gaps.append(Gap(prev.ts, cutoff, "heartbeat-silence"))

    covered = _clip(intervals, start, cutoff)
    out = [Gap(a, b, g.reason) for g in gaps for a, b in _clip([(g.start, g.end)], start, cutoff)]
    # What is neither covered nor explained by a silence or a stop: the instance was not running
    # (it started on the 3rd, or never wrote a row this month).
    explained = _union(covered + [(g.start, g.end) for g in out])
    out += [Gap(a, b, "not-running") for a, b in _complement(explained, start, cutoff)]
    out.sort(key=lambda g: g.start)

    inside = [e for e in events if start <= e.ts < cutoff]
    versions = sorted(
        {d.egresswatch for e in inside if (d := details.start(e)) is not None and d.egresswatch}
    )
    return Coverage(
        instance=instance,
        first_seen=inside[0].ts if inside else None,
        last_seen=inside[-1].ts if inside else None,
        covered_seconds=sum(b - a for a, b in _union(covered)),
        period_seconds=max(0.0, cutoff - start),
        starts=sum(1 for e in inside if e.kind == EventKind.START),
        stops=sum(1 for e in inside if e.kind == EventKind.STOP),
        heartbeats=sum(1 for e in inside if e.kind == EventKind.HEARTBEAT),
        gaps=tuple(out),
        versions=tuple(versions),
    )


def _clip(spans: Iterable[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    return [(max(a, lo), min(b, hi)) for a, b in spans if min(b, hi) > max(a, lo)]


def _union(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Merge overlapping or touching spans.

    >>> _union([(5, 6), (0, 2), (2, 3)])
    [(0, 3), (5, 6)]
    """
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _complement(
    merged: Sequence[tuple[float, float]], lo: float, hi: float
) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    at = lo
    for a, b in merged:
        if a > at:
            out.append((at, a))
        at = max(at, b)
    if hi > at:
        out.append((at, hi))
    return out
