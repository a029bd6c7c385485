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
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC
from datetime import date
from datetime import datetime
from datetime import timedelta
from importlib import resources
from pathlib import Path
from string import Template
from typing import Protocol

from . import __version__
from .events import Event
from .events import EventKind
from .store import EACH_REGIME
from .store import EventStore
from .store import RollupSummary
from .store import VerifyResult
from .store import redact_url

__all__ = [
    "BLIND_SPOTS",
    "CatalogueVersion",
    "ChainHeadInfo",
    "Coverage",
    "DailyRow",
    "DepartmentRow",
    "ExceptionRecord",
    "FORMATS",
    "GAP_THRESHOLD_SECONDS",
    "Gap",
    "Integrity",
    "LEGAL_CAVEATS",
    "MonthlyReport",
    "PolicyVersion",
    "RegimeInfo",
    "RegimeRow",
    "TopRow",
    "Total",
    "VerifiedRange",
    "build_report",
    "csv_cell",
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

logger = logging.getLogger(__name__)

#: Heartbeat silence longer than this is a coverage gap (the addon beats once a minute).
GAP_THRESHOLD_SECONDS = 150.0

#: Grouped queries of one report in flight at once (each on its own database connection).
_QUERY_THREADS = 3

#: How far back to look for the configuration that was already in force when the month began.
_LOOKBACK_DAYS = (1, 7, 35, 100, 400)

FORMATS = ("html", "md", "csv", "json")

BLIND_SPOTS: tuple[tuple[str, str], ...] = (
    (
        "DNS over HTTPS / DNS over TLS",
        "Clients that resolve names through an encrypted resolver are not seen in dns mode; their "
        "connections are still seen by name (CONNECT, SNI) when they go through the proxy.",
    ),
    (
        "Encrypted Client Hello (ECH)",
        "With ECH the real server name is encrypted; only the outer (public) name is visible, so "
        "the app may go unattributed unless the connection also names it another way.",
    ),
    (
        "Certificate pinning",
        "Apps that pin certificates fail when traffic is decrypted; in the default metadata-only "
        "mode they are still counted, but a block page cannot be shown to them.",
    ),
    (
        "QUIC / HTTP/3 not proxied",
        "UDP traffic that bypasses the proxy (no transparent or WireGuard mode) is invisible; "
        "blocking QUIC where it is proxied makes clients fall back to TCP, where they are seen.",
    ),
    (
        "Apps installed but not used",
        "A proxy sees use on the network, never presence on a device. Evidence of absence needs "
        "an MDM or software inventory.",
    ),
    (
        "Off-network and unproxied devices",
        "Devices on mobile data, home networks or any egress path that does not pass a proxy "
        "instance are not covered; see the coverage section for proxy downtime.",
    ),
    (
        "Tail truncation of the event log",
        "The per-instance hash chain detects edited, deleted, inserted and reordered rows, but "
        "not the removal of the newest rows (or a full rewrite) by someone who controls the "
        "database, unless the chain head was recorded elsewhere: keep this report's chain heads "
        "(and its SHA-256) outside the database.",
    ),
)

LEGAL_CAVEATS: tuple[str, ...] = (
    "Executive Order 13971 (5 January 2021; Alipay, CamScanner, QQ Wallet, SHAREit, Tencent QQ, "
    "VMate, WeChat Pay, WPS Office) was revoked by Executive Order 14034 on 9 June 2021 "
    "(86 FR 31423). Apps listed under it are an organisation-designated list originally named "
    "in EO 13971, not a current legal ban.",
    "FAR 52.204-27 (Prohibition on a ByteDance Covered Application) is in force for federal "
    "contractors; proxy evidence shows use on managed networks, not absence on devices.",
    "Counts in this report are exact counts of recorded events; Prometheus figures for the same "
    "period are monitoring estimates only.",
)


class RegimeLike(Protocol):
    """What the report needs of a catalogue regime (``egresswatch.catalogue.Regime``)."""

    @property
    def id(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def revoked(self) -> date | None: ...
    @property
    def citation(self) -> str: ...
    def status(self, on: date) -> str: ...


class AppLike(Protocol):
    """What the report needs of a catalogue app (``egresswatch.catalogue.App``)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...


class CatalogueLike(Protocol):
    """What the report needs of ``egresswatch.catalogue.Catalogue`` (names and regime status)."""

    @property
    def apps(self) -> Mapping[str, AppLike]: ...
    @property
    def regimes(self) -> Mapping[str, RegimeLike]: ...


# --------------------------------------------------------------------------------------------
# The report as data


@dataclass(frozen=True, slots=True)
class Gap:
    """A stretch of the period an instance did not cover; ``reason`` says why we think so."""

    start: float
    end: float
    reason: str  # "heartbeat-silence" | "stopped" | "not-running"

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Coverage:
    instance: str
    first_seen: float | None
    last_seen: float | None
    covered_seconds: float
    period_seconds: float
    starts: int
    stops: int
    heartbeats: int
    gaps: tuple[Gap, ...]
    versions: tuple[str, ...]  # egresswatch versions from start events

    @property
    def percent(self) -> float:
        if self.period_seconds <= 0:
            return 0.0
        return 100.0 * self.covered_seconds / self.period_seconds


@dataclass(frozen=True, slots=True)
class CatalogueVersion:
    version: str
    first_seen: float
    last_seen: float
    loads: int  # config events in the period (0: loaded before the month, still in force)
    instances: tuple[str, ...]
    files: tuple[str, ...]
    entries: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    version: str
    first_seen: float
    last_seen: float
    loads: int
    instances: tuple[str, ...]
    file: str
    default: str
    dry_run: bool | None
    modes: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ExceptionRecord:
    id: str
    apps: tuple[str, ...]
    regimes: tuple[str, ...]
    clients: tuple[str, ...]
    users: tuple[str, ...]
    reason: str
    approver: str
    ticket: str
    expires: str  # as written in the policy
    expires_at: float | None  # end of the expiry date (UTC) or the exact datetime
    first_seen: float  # first config event listing it
    in_force: bool  # in force at some time during the period
    granted: bool  # first listed during the period
    expired: bool  # expired during the period


@dataclass(frozen=True, slots=True)
class Total:
    app: str
    action: str
    events: int
    distinct_clients: int
    first_seen: float
    last_seen: float


@dataclass(frozen=True, slots=True)
class RegimeRow:
    app: str
    regime: str
    action: str
    events: int
    distinct_clients: int
    first_seen: float
    last_seen: float


@dataclass(frozen=True, slots=True)
class DepartmentRow:
    app: str
    department: str
    action: str
    events: int
    distinct_clients: int


@dataclass(frozen=True, slots=True)
class TopRow:
    key: str  # a client identity or a hostname
    events: int
    apps: tuple[str, ...]
    first_seen: float
    last_seen: float


@dataclass(frozen=True, slots=True)
class DailyRow:
    day: str
    app: str
    events: int


@dataclass(frozen=True, slots=True)
class ChainHeadInfo:
    instance: str
    seq: int
    chain_hash: str


@dataclass(frozen=True, slots=True)
class VerifiedRange:
    """Rows ``from_seq..to_seq`` of ``instance`` were verified by run ``run_id`` at ``at``:
    ``mode`` ``"full"`` (from the first row or the prune checkpoint) or ``"incremental"``
    (continuing from the run before); ``now`` when by the run this report made."""

    instance: str
    from_seq: int
    to_seq: int
    mode: str
    run_id: int | None
    at: float
    now: bool

    def describe(self) -> str:
        how = "in full" if self.mode == "full" else "incrementally"
        run = f"run #{self.run_id}" if self.run_id is not None else "run not recorded"
        when = "now" if self.now else f"at {iso(self.at)}"
        if self.to_seq < self.from_seq:
            return f"no rows after #{self.to_seq} (checked {how} {when}, {run})"
        return f"rows {self.from_seq}..{self.to_seq} verified {how} {when} ({run})"


@dataclass(frozen=True, slots=True)
class Integrity:
    verified: bool  # False when verification was skipped
    ok: bool
    # Rows read by this verification and the earlier runs it builds on (all of the chain's rows
    # since the first row or the prune checkpoint, when nothing was tampered with).
    checked: int
    heads: tuple[ChainHeadInfo, ...]
    problems: tuple[str, ...]
    mode: str = ""  # "full" | "incremental" ("" when not verified)
    checked_now: int = 0  # rows recomputed while building this report
    provenance: tuple[VerifiedRange, ...] = ()  # per instance, oldest first

    def provenance_lines(self) -> tuple[str, ...]:
        """One line per instance: which rows were verified when, and the chain head."""
        out = []
        for h in self.heads:
            parts = [r.describe() for r in self.provenance if r.instance == h.instance]
            out.append(
                f"{h.instance}: {'; '.join(parts) or 'no rows'}; chain head #{h.seq} {h.chain_hash}"
            )
        return tuple(out)


@dataclass(frozen=True, slots=True)
class RegimeInfo:
    id: str
    title: str
    status: str  # at the end of the period: in_force | revoked | not_yet_effective | unknown
    revoked: str | None
    citation: str


@dataclass(frozen=True, slots=True)
class MonthlyReport:
    month: str
    period_start: float
    period_end: float
    generated_at: float
    partial: bool  # generated before the period ended
    organisation: str | None
    egresswatch_version: str
    store: str
    instances: tuple[str, ...]
    client_identity: str  # address | hash | none | mixed | unknown
    coverage: tuple[Coverage, ...]
    catalogues: tuple[CatalogueVersion, ...]
    policies: tuple[PolicyVersion, ...]
    exceptions: tuple[ExceptionRecord, ...]
    totals: tuple[Total, ...]
    by_regime: tuple[RegimeRow, ...]
    by_department: tuple[DepartmentRow, ...]
    top_clients: tuple[TopRow, ...]
    top_hosts: tuple[TopRow, ...]
    daily: tuple[DailyRow, ...]
    days: tuple[str, ...]
    apps: tuple[tuple[str, str], ...]  # (id, display name) of every app with hits
    regimes: tuple[RegimeInfo, ...]
    integrity: Integrity
    top_n: int
    # start/stop/heartbeat/config rows in the period (0: pruned or never written)
    lifecycle_rows: int

    @property
    def lifecycle_note(self) -> str:
        """Why coverage and configuration may be empty although there are findings."""
        if self.lifecycle_rows or not self.totals:
            return ""
        return (
            "No start, stop, heartbeat or config rows were found for this period (raw events "
            "pruned by a version without the lifecycle archive, or never written): coverage and "
            "configuration cannot be reported; the findings come from the daily rollups and are "
            "complete."
        )


# --------------------------------------------------------------------------------------------
# Building


_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """``"2026-07"`` -> (2026-07-01 00:00 UTC, 2026-08-01 00:00 UTC); ValueError otherwise.

    >>> [d.isoformat() for d in month_bounds("2026-12")]
    ['2026-12-01T00:00:00+00:00', '2027-01-01T00:00:00+00:00']
    """
    m = _MONTH.match(month)
    if not m:
        raise ValueError(f"month must be YYYY-MM, not {month!r}")
    year, mon = int(m.group(1)), int(m.group(2))
    start = datetime(year, mon, 1, tzinfo=UTC)
    end = (
        datetime(year + 1, 1, 1, tzinfo=UTC)
        if mon == 12
        else datetime(year, mon + 1, 1, tzinfo=UTC)
    )
    return start, end


def _utc(dt: datetime) -> datetime:
    """``dt`` in UTC; a naive datetime is taken as UTC (as everywhere in egresswatch), never as
    the machine's local time."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def previous_month(now: datetime) -> str:
    """The calendar month before ``now`` (UTC), as ``YYYY-MM``.

    >>> previous_month(datetime(2026, 1, 15, tzinfo=UTC))
    '2025-12'
    """
    first = _utc(now).replace(day=1)
    last = first - timedelta(days=1)
    return f"{last.year:04d}-{last.month:02d}"


def build_report(
    store: EventStore,
    month: str,
    *,
    now: datetime,
    top_n: int = 10,
    organisation: str | None = None,
    catalogue: CatalogueLike | None = None,
    verify: bool = True,
    full_verify: bool = False,
    gap_threshold: float = GAP_THRESHOLD_SECONDS,
) -> MonthlyReport:
    """Build the report for ``month`` (``YYYY-MM``) from grouped rollups, lifecycle rows and
    verify().

    Every table is grouped in the database (``store.summarise``), so the report reads a few
    hundred rows whatever the month's volume. Verification is incremental by default (rows after
    the last successful run's head, continuity checked from its chain hash; the report says which
    rows were verified when); ``full_verify=True`` recomputes every chain from the start.
    """
    if top_n < 1:
        raise ValueError("top_n must be at least 1")
    start_dt, end_dt = month_bounds(month)
    start, end = start_dt.timestamp(), end_dt.timestamp()
    now_ts = _utc(now).timestamp()
    cutoff = min(end, max(start, now_ts))  # coverage and expiries are judged up to here

    # The grouped scans run side by side (the databases work without Python's lock), and beside
    # reading the lifecycle rows.
    with ThreadPoolExecutor(max_workers=_QUERY_THREADS, thread_name_prefix="report") as pool:
        pending = _start_findings(pool, store, start, end, top_n)
        lifecycle = store.lifecycle(start - gap_threshold, end + gap_threshold)
        findings = _findings(pending, store, start, end)
    in_period = [e for e in lifecycle if start <= e.ts < end]

    instances = sorted({e.instance for e in in_period} | set(findings.instances))
    per_instance: defaultdict[str, list[Event]] = defaultdict(list)
    for e in lifecycle:
        per_instance[e.instance].append(e)
    coverage = tuple(
        _coverage(inst, per_instance[inst], start, cutoff, gap_threshold) for inst in instances
    )
    config_events = _config_events(store, lifecycle, start, end, instances)
    catalogues, policies, exceptions = _configuration(config_events, in_period, start, end, cutoff)

    totals, by_regime = findings.totals, findings.by_regime
    days = tuple(
        (start_dt + timedelta(days=i)).date().isoformat() for i in range((end_dt - start_dt).days)
    )
    app_ids = sorted({t.app for t in totals})
    names = {a: _app_name(catalogue, a) for a in app_ids}
    regimes_seen = sorted({r.regime for r in by_regime if r.regime})
    last_day = (end_dt - timedelta(days=1)).date()
    regimes = tuple(_regime_info(catalogue, rid, last_day) for rid in regimes_seen)

    return MonthlyReport(
        month=month,
        period_start=start,
        period_end=end,
        generated_at=now_ts,
        partial=now_ts < end,
        organisation=organisation,
        egresswatch_version=__version__,
        store=redact_url(getattr(store, "url", "")),
        instances=tuple(instances),
        client_identity=_client_identity(
            in_period, bool(totals), lambda: store.summarise(start, end, ("client",))
        ),
        coverage=coverage,
        catalogues=catalogues,
        policies=policies,
        exceptions=exceptions,
        totals=totals,
        by_regime=by_regime,
        by_department=findings.by_department,
        top_clients=findings.top_clients,
        top_hosts=findings.top_hosts,
        daily=findings.daily,
        days=days,
        apps=tuple((a, names[a]) for a in app_ids),
        regimes=regimes,
        integrity=_integrity(store.verify(full=full_verify) if verify else None),
        top_n=top_n,
        lifecycle_rows=len(in_period),
    )


def _app_name(catalogue: CatalogueLike | None, app: str) -> str:
    if catalogue is not None:
        found = catalogue.apps.get(app)
        if found is not None:
            return found.name
    return app


def _regime_info(catalogue: CatalogueLike | None, rid: str, on: date) -> RegimeInfo:
    regime = catalogue.regimes.get(rid) if catalogue is not None else None
    if regime is None:
        return RegimeInfo(id=rid, title="", status="unknown", revoked=None, citation="")
    revoked = regime.revoked.isoformat() if regime.revoked is not None else None
    return RegimeInfo(
        id=rid,
        title=regime.title,
        status=regime.status(on),
        revoked=revoked,
        citation=regime.citation,
    )


def _client_identity(
    lifecycle: Iterable[Event], any_hits: bool, clients_of: Callable[[], list[RollupSummary]]
) -> str:
    modes = set()
    for e in lifecycle:
        if e.kind == EventKind.START and e.detail is not None:
            mode = e.detail.get("client_identity")
            if isinstance(mode, str) and mode:
                modes.add(mode)
    if len(modes) == 1:
        return modes.pop()
    if modes:
        return "mixed"
    if not any_hits:
        return "unknown"
    # Only when no start event says: one grouped query for the month's client identities.
    clients = {str(c.key[0]) for c in clients_of() if c.key[0]}
    if not clients:
        return "none"
    if all(c.startswith("h:") for c in clients):
        return "hash"
    return "address" if not any(c.startswith("h:") for c in clients) else "mixed"


def _coverage(
    instance: str, events: Sequence[Event], start: float, cutoff: float, threshold: float
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
        {
            str(e.detail.get("egresswatch"))
            for e in inside
            if e.kind == EventKind.START and e.detail is not None and e.detail.get("egresswatch")
        }
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


def _config_kind(e: Event) -> str | None:
    if e.kind != EventKind.CONFIG or e.detail is None:
        return None
    kind = e.detail.get("kind")
    return kind if isinstance(kind, str) else None


def _config_events(
    store: EventStore,
    lifecycle: Sequence[Event],
    start: float,
    end: float,
    instances: Sequence[str],
) -> list[Event]:
    """Config rows of the period plus, per instance and kind, the last one before the period (the
    configuration already in force when the month began), found by looking back in widening
    windows."""
    found = [e for e in lifecycle if _config_kind(e) is not None and start <= e.ts < end]
    need = {(i, k) for i in instances for k in ("catalogue", "policy")}
    # An instance whose first row in the period is a config row of that kind loaded it afresh.
    first_kind: dict[tuple[str, str], bool] = {}
    for e in sorted(lifecycle, key=lambda e: e.ts):
        if e.ts < start:
            continue
        for k in ("catalogue", "policy"):
            key = (e.instance, k)
            if key not in first_kind:
                first_kind[key] = e.kind == EventKind.START or _config_kind(e) == k
    need = {key for key in need if not first_kind.get(key, False)}
    before: dict[tuple[str, str], Event] = {}
    upper = start
    for days in _LOOKBACK_DAYS:
        if not need:
            break
        lower = start - days * 86400.0
        for e in store.lifecycle(lower, upper):
            kind = _config_kind(e)
            if kind is None or (e.instance, kind) not in need:
                continue
            key = (e.instance, kind)
            if key not in before or before[key].ts <= e.ts:
                before[key] = e
        need -= set(before)
        upper = lower
    return sorted([*before.values(), *found], key=lambda e: e.ts)


def _str(value: object) -> str:
    return "" if value is None else str(value)


def _strs(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable):
        return tuple(str(v) for v in value)
    return ()


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError):
        return 0


class _Seen:
    """Where and when one catalogue or policy version was seen in force."""

    __slots__ = ("first", "last", "loads", "instances", "detail")

    def __init__(self, ts: float) -> None:
        self.first = self.last = ts
        self.loads = 0
        self.instances: set[str] = set()
        self.detail: Mapping[str, object] | None = None


def _expiry(value: object) -> float | None:
    """An exception's expiry: a date means the end of that day (UTC); a datetime is exact."""
    text = _str(value).strip()
    if not text:
        return None
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() + 86400.0
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        logger.warning("egresswatch: report: unreadable exception expiry %r", text)
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _configuration(
    config_events: Sequence[Event],
    in_period: Sequence[Event],
    start: float,
    end: float,
    cutoff: float,
) -> tuple[tuple[CatalogueVersion, ...], tuple[PolicyVersion, ...], tuple[ExceptionRecord, ...]]:
    seen: dict[tuple[str, str], _Seen] = {}

    def note(kind: str, version: str, ts: float, inst: str, load: bool, detail: object) -> None:
        if not version:
            return
        t = max(ts, start)  # a configuration loaded before the month is in force from its start
        row = seen.setdefault((kind, version), _Seen(t))
        row.first, row.last = min(t, row.first), max(t, row.last)
        row.loads += int(load)
        row.instances.add(inst)
        if row.detail is None and isinstance(detail, Mapping):
            row.detail = detail

    exc_first: dict[str, float] = {}
    exc_data: dict[str, Mapping[str, object]] = {}
    for e in config_events:
        assert e.detail is not None
        kind = _config_kind(e) or ""
        version = _str(e.detail.get("version")) or (
            e.catalogue_version if kind == "catalogue" else e.policy_version
        )
        note(kind, version, e.ts, e.instance, e.ts >= start, e.detail)
        if kind == "policy":
            listed = e.detail.get("exceptions")
            for x in listed if isinstance(listed, list | tuple) else ():
                if isinstance(x, Mapping) and x.get("id"):
                    xid = str(x["id"])
                    exc_first[xid] = min(exc_first.get(xid, e.ts), e.ts)
                    exc_data[xid] = x
    # Heartbeats and starts that carry versions prove those versions were in force then.
    for e in in_period:
        if e.kind == EventKind.CONFIG:
            continue
        note("catalogue", e.catalogue_version, e.ts, e.instance, False, None)
        note("policy", e.policy_version, e.ts, e.instance, False, None)

    catalogues: list[CatalogueVersion] = []
    policies: list[PolicyVersion] = []
    for (kind, version), row in seen.items():
        d: Mapping[str, object] = row.detail or {}
        first, last, insts = row.first, row.last, tuple(sorted(row.instances))
        if kind == "catalogue":
            entries = d.get("entries")
            catalogues.append(
                CatalogueVersion(
                    version=version,
                    first_seen=first,
                    last_seen=last,
                    loads=row.loads,
                    instances=insts,
                    files=_strs(d.get("files")),
                    entries=tuple(sorted((str(k), _int(v)) for k, v in entries.items()))
                    if isinstance(entries, Mapping)
                    else (),
                )
            )
        elif kind == "policy":
            modes = d.get("modes")
            dry = d.get("dry_run")
            policies.append(
                PolicyVersion(
                    version=version,
                    first_seen=first,
                    last_seen=last,
                    loads=row.loads,
                    instances=insts,
                    file=_str(d.get("file")),
                    default=_str(d.get("default")),
                    dry_run=dry if isinstance(dry, bool) else None,
                    modes=tuple(sorted((str(k), str(v)) for k, v in modes.items()))
                    if isinstance(modes, Mapping)
                    else (),
                )
            )
    catalogues.sort(key=lambda c: (c.first_seen, c.version))
    policies.sort(key=lambda p: (p.first_seen, p.version))

    exceptions: list[ExceptionRecord] = []
    for xid, x in exc_data.items():
        expires_at = _expiry(x.get("expires"))
        first = exc_first[xid]
        exceptions.append(
            ExceptionRecord(
                id=xid,
                apps=_strs(x.get("apps")),
                regimes=_strs(x.get("regimes")),
                clients=_strs(x.get("clients")),
                users=_strs(x.get("users")),
                reason=_str(x.get("reason")),
                approver=_str(x.get("approver")),
                ticket=_str(x.get("ticket")),
                expires=_str(x.get("expires")),
                expires_at=expires_at,
                first_seen=first,
                in_force=first < cutoff and (expires_at is None or expires_at > start),
                granted=start <= first < end,
                expired=expires_at is not None and start <= expires_at <= cutoff,
            )
        )
    exceptions.sort(key=lambda x: x.id)
    return tuple(catalogues), tuple(policies), tuple(exceptions)


@dataclass(frozen=True, slots=True)
class _Findings:
    totals: tuple[Total, ...]
    by_regime: tuple[RegimeRow, ...]
    by_department: tuple[DepartmentRow, ...]
    top_clients: tuple[TopRow, ...]
    top_hosts: tuple[TopRow, ...]
    daily: tuple[DailyRow, ...]
    instances: tuple[str, ...]


def _start_findings(
    pool: ThreadPoolExecutor, store: EventStore, start: float, end: float, top_n: int
) -> dict[str, Future[list[RollupSummary]]]:
    """Submit the grouped queries every report needs."""
    # name: (by, top, count distinct clients)
    queries: dict[str, tuple[tuple[str, ...], int | None, bool]] = {
        # (app, regime list, action): the totals and the per-regime table at once, when every
        # (app, action) was seen under one regime list this month (the usual case).
        "lists": (("app", "regime", "action"), None, True),
        "departments": (("app", "department", "action"), None, True),
        "daily": (("day", "instance", "app"), None, False),
        "clients": (("client",), top_n, False),
        "hosts": (("host",), top_n, False),
    }
    return {
        name: pool.submit(store.summarise, start, end, by, top=top, clients=clients)
        for name, (by, top, clients) in queries.items()
    }


def _findings(
    pending: Mapping[str, Future[list[RollupSummary]]],
    store: EventStore,
    start: float,
    end: float,
) -> _Findings:
    """Every findings table from queries grouped in the database (a few hundred rows in all).

    Distinct clients are counted by the database over the month's rollup rows of each group,
    never by adding daily (or per-regime-list) figures.
    """
    by_list = pending["lists"].result()
    lists: defaultdict[tuple[str, str], list[RollupSummary]] = defaultdict(list)
    for s in by_list:
        lists[(s.key[0], s.key[2])].append(s)

    def split(regime: str) -> list[str]:
        return regime.split(",") if regime else [""]

    simple = all(
        len(v) == 1 and len(set(split(v[0].key[1]))) == len(split(v[0].key[1]))
        for v in lists.values()
    )
    if simple:
        totals = [
            Total(app, action, s.events, s.distinct_clients, s.first_seen, s.last_seen)
            for (app, action), (s,) in lists.items()
        ]
        regimes = [
            RegimeRow(app, one, action, s.events, s.distinct_clients, s.first_seen, s.last_seen)
            for (app, action), (s,) in lists.items()
            for one in split(s.key[1])
        ]
    else:
        # An app changed regimes during the month: a client seen under both lists must count
        # once, so group by app and action, and by each single regime, in the database.
        totals = [
            Total(s.key[0], s.key[1], s.events, s.distinct_clients, s.first_seen, s.last_seen)
            for s in store.summarise(start, end, ("app", "action"))
        ]
        regimes = [
            RegimeRow(
                s.key[0],
                s.key[1],
                s.key[2],
                s.events,
                s.distinct_clients,
                s.first_seen,
                s.last_seen,
            )
            for s in store.summarise(start, end, ("app", EACH_REGIME, "action"))
        ]
    departments = [
        DepartmentRow(s.key[0], s.key[1], s.key[2], s.events, s.distinct_clients)
        for s in pending["departments"].result()
    ]
    daily: defaultdict[tuple[str, str], int] = defaultdict(int)
    instances: set[str] = set()
    for s in pending["daily"].result():
        daily[(s.key[0], s.key[2])] += s.events
        instances.add(s.key[1])

    def top(name: str) -> tuple[TopRow, ...]:
        return tuple(
            TopRow(str(s.key[0]), s.events, s.apps, s.first_seen, s.last_seen)
            for s in pending[name].result()
        )

    return _Findings(
        totals=tuple(sorted(totals, key=lambda t: (t.app, t.action))),
        by_regime=tuple(sorted(regimes, key=lambda r: (r.app, r.regime, r.action))),
        by_department=tuple(sorted(departments, key=lambda d: (d.app, d.department, d.action))),
        top_clients=top("clients"),
        top_hosts=top("hosts"),
        daily=tuple(DailyRow(day, app, n) for (day, app), n in sorted(daily.items())),
        instances=tuple(sorted(instances)),
    )


def _integrity(result: VerifyResult | None) -> Integrity:
    if result is None:
        return Integrity(verified=False, ok=False, checked=0, heads=(), problems=())
    ranges = [
        VerifiedRange(r.instance, r.from_seq, r.to_seq, r.mode, r.id, r.finished_at, False)
        for r in result.history
    ]
    ranges += [
        VerifiedRange(r.instance, r.from_seq, r.to_seq, r.mode, r.id, r.finished_at, True)
        for r in result.runs
    ]
    return Integrity(
        verified=True,
        ok=result.ok,
        checked=result.checked + sum(r.checked for r in result.history),
        heads=tuple(
            ChainHeadInfo(h.instance, h.seq, h.chain_hash)
            for h in sorted(result.heads, key=lambda h: h.instance)
        ),
        problems=tuple(str(p) for p in result.problems),
        mode=result.mode,
        checked_now=result.checked,
        provenance=tuple(sorted(ranges, key=lambda r: (r.instance, r.from_seq, not r.now))),
    )


# --------------------------------------------------------------------------------------------
# Rendering helpers


def iso(ts: float | None) -> str:
    """Unix seconds -> ISO 8601 UTC with ``Z`` (milliseconds only when there are any).

    >>> iso(0), iso(1.5), iso(None)
    ('1970-01-01T00:00:00Z', '1970-01-01T00:00:01.500Z', '')
    """
    if ts is None:
        return ""
    dt = datetime.fromtimestamp(ts, UTC)
    spec = "seconds" if dt.microsecond == 0 else "milliseconds"
    return dt.isoformat(timespec=spec).replace("+00:00", "Z")


def _duration(seconds: float) -> str:
    """A readable length of time.

    >>> _duration(93784.0), _duration(59.6)
    ('1d 2h 3m 4s', '1m 0s')
    """
    s = int(round(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    parts = [f"{d}d"] if d else []
    if d or h:
        parts.append(f"{h}h")
    if d or h or m:
        parts.append(f"{m}m")
    parts.append(f"{s}s")
    return " ".join(parts)


def _pct(value: float) -> str:
    return f"{value:.2f}"


def report_to_dict(report: MonthlyReport) -> dict[str, object]:
    """The JSON form: top-level ``totals`` (app, action, events, distinct_clients, first_seen,
    last_seen) plus every other section."""
    return {
        "report": "egresswatch monthly compliance report",
        "month": report.month,
        "period": {
            "start": iso(report.period_start),
            "end": iso(report.period_end),
            "end_exclusive": True,
            "partial": report.partial,
        },
        "generated_at": iso(report.generated_at),
        "organisation": report.organisation,
        "egresswatch_version": report.egresswatch_version,
        "store": report.store,
        "instances": list(report.instances),
        "lifecycle_rows": report.lifecycle_rows,
        "notes": [n for n in (report.lifecycle_note,) if n],
        "client_identity": report.client_identity,
        "totals": [
            {
                "app": t.app,
                "action": t.action,
                "events": t.events,
                "distinct_clients": t.distinct_clients,
                "first_seen": iso(t.first_seen),
                "last_seen": iso(t.last_seen),
            }
            for t in report.totals
        ],
        "coverage": [
            {
                "instance": c.instance,
                "first_seen": iso(c.first_seen),
                "last_seen": iso(c.last_seen),
                "covered_seconds": round(c.covered_seconds, 3),
                "period_seconds": round(c.period_seconds, 3),
                "percent": round(c.percent, 4),
                "starts": c.starts,
                "stops": c.stops,
                "heartbeats": c.heartbeats,
                "versions": list(c.versions),
                "gaps": [
                    {
                        "start": iso(g.start),
                        "end": iso(g.end),
                        "seconds": round(g.seconds, 3),
                        "reason": g.reason,
                    }
                    for g in c.gaps
                ],
            }
            for c in report.coverage
        ],
        "catalogues": [
            {
                "version": c.version,
                "first_seen": iso(c.first_seen),
                "last_seen": iso(c.last_seen),
                "loads": c.loads,
                "instances": list(c.instances),
                "files": list(c.files),
                "entries": dict(c.entries),
            }
            for c in report.catalogues
        ],
        "policies": [
            {
                "version": p.version,
                "first_seen": iso(p.first_seen),
                "last_seen": iso(p.last_seen),
                "loads": p.loads,
                "instances": list(p.instances),
                "file": p.file,
                "default": p.default,
                "dry_run": p.dry_run,
                "modes": dict(p.modes),
            }
            for p in report.policies
        ],
        "exceptions": [
            {
                "id": x.id,
                "apps": list(x.apps),
                "regimes": list(x.regimes),
                "clients": list(x.clients),
                "users": list(x.users),
                "reason": x.reason,
                "approver": x.approver,
                "ticket": x.ticket,
                "expires": x.expires,
                "expires_at": iso(x.expires_at),
                "first_seen": iso(x.first_seen),
                "in_force": x.in_force,
                "granted": x.granted,
                "expired": x.expired,
            }
            for x in report.exceptions
        ],
        "by_regime": [
            {
                "app": r.app,
                "regime": r.regime,
                "action": r.action,
                "events": r.events,
                "distinct_clients": r.distinct_clients,
                "first_seen": iso(r.first_seen),
                "last_seen": iso(r.last_seen),
            }
            for r in report.by_regime
        ],
        "by_department": [
            {
                "app": d.app,
                "department": d.department,
                "action": d.action,
                "events": d.events,
                "distinct_clients": d.distinct_clients,
            }
            for d in report.by_department
        ],
        "top_clients": [_top_dict(t) for t in report.top_clients],
        "top_hosts": [_top_dict(t) for t in report.top_hosts],
        "daily": [{"day": d.day, "app": d.app, "events": d.events} for d in report.daily],
        "apps": [{"id": a, "name": n} for a, n in report.apps],
        "regimes": [
            {
                "id": r.id,
                "title": r.title,
                "status": r.status,
                "revoked": r.revoked,
                "citation": r.citation,
            }
            for r in report.regimes
        ],
        "integrity": {
            "verified": report.integrity.verified,
            "ok": report.integrity.ok,
            "checked": report.integrity.checked,
            "chain_heads": [
                {"instance": h.instance, "seq": h.seq, "chain_hash": h.chain_hash}
                for h in report.integrity.heads
            ],
            "problems": list(report.integrity.problems),
            "mode": report.integrity.mode,
            "checked_now": report.integrity.checked_now,
            "provenance": [
                {
                    "instance": v.instance,
                    "from_seq": v.from_seq,
                    "to_seq": v.to_seq,
                    "mode": v.mode,
                    "run_id": v.run_id,
                    "verified_at": iso(v.at),
                    "this_report": v.now,
                }
                for v in report.integrity.provenance
            ],
        },
        "method": {
            "blind_spots": [{"name": n, "text": t} for n, t in BLIND_SPOTS],
            "legal": list(LEGAL_CAVEATS),
        },
    }


def _top_dict(t: TopRow) -> dict[str, object]:
    return {
        "key": t.key,
        "events": t.events,
        "apps": list(t.apps),
        "first_seen": iso(t.first_seen),
        "last_seen": iso(t.last_seen),
    }


def render_json(report: MonthlyReport) -> str:
    return json.dumps(report_to_dict(report), indent=2, ensure_ascii=False) + "\n"


CSV_FIELDS = (
    "section",
    "instance",
    "app",
    "regime",
    "action",
    "department",
    "key",
    "metric",
    "value",
)


# A cell a spreadsheet would read as a formula (or DDE command) when it starts with one of these.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A value as CSV text that spreadsheets show as text, never evaluate.

    Text starting with ``= + - @``, a tab or a carriage return (a hostname, an organisation or
    an approver name from the store or the command line) gets a leading ``'``; numbers stay as
    they are.

    >>> csv_cell("=cmd|' /C calc'!A0"), csv_cell("@SUM(A1)"), csv_cell(-3), csv_cell(True)
    ("'=cmd|' /C calc'!A0", "'@SUM(A1)", '-3', 'true')
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    return f"'{text}" if text.startswith(_FORMULA_START) else text


def render_csv(report: MonthlyReport) -> str:
    """One tidy CSV: each row is one value, located by ``section`` and the dimension columns.

    Every cell goes through :func:`csv_cell` (spreadsheet formula injection is neutralised).
    """
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\r\n")
    w.writeheader()

    def row(section: str, metric: str, value: object, **dims: str) -> None:
        out = {f: "" for f in CSV_FIELDS}
        out.update((k, csv_cell(v)) for k, v in dims.items())
        out["section"], out["metric"] = section, metric
        out["value"] = csv_cell(value)
        w.writerow(out)

    row("period", "month", report.month)
    row("period", "start", iso(report.period_start))
    row("period", "end", iso(report.period_end))
    row("period", "generated_at", iso(report.generated_at))
    row("period", "partial", report.partial)
    row("period", "organisation", report.organisation or "")
    row("period", "egresswatch_version", report.egresswatch_version)
    row("period", "client_identity", report.client_identity)
    row("period", "lifecycle_rows", report.lifecycle_rows)
    for c in report.coverage:
        i = c.instance
        row("coverage", "percent", _pct(c.percent), instance=i)
        row("coverage", "covered_seconds", round(c.covered_seconds, 3), instance=i)
        row("coverage", "period_seconds", round(c.period_seconds, 3), instance=i)
        row("coverage", "starts", c.starts, instance=i)
        row("coverage", "stops", c.stops, instance=i)
        row("coverage", "heartbeats", c.heartbeats, instance=i)
        row("coverage", "gaps", len(c.gaps), instance=i)
        for g in c.gaps:
            key = f"{iso(g.start)}/{iso(g.end)}"
            row("gap", "seconds", round(g.seconds, 3), instance=i, key=key)
            row("gap", "reason", g.reason, instance=i, key=key)
    for cv in report.catalogues:
        row("catalogue", "first_seen", iso(cv.first_seen), key=cv.version)
        row("catalogue", "last_seen", iso(cv.last_seen), key=cv.version)
        row("catalogue", "loads", cv.loads, key=cv.version)
        for app, n in cv.entries:
            row("catalogue", "entries", n, key=cv.version, app=app)
    for p in report.policies:
        row("policy", "first_seen", iso(p.first_seen), key=p.version)
        row("policy", "last_seen", iso(p.last_seen), key=p.version)
        row("policy", "loads", p.loads, key=p.version)
        row("policy", "default", p.default, key=p.version)
        row("policy", "dry_run", p.dry_run, key=p.version)
        for app, mode in p.modes:
            row("policy", "mode", mode, key=p.version, app=app)
    for x in report.exceptions:
        for metric, value in (
            ("apps", " ".join(x.apps)),
            ("regimes", " ".join(x.regimes)),
            ("clients", " ".join(x.clients)),
            ("users", " ".join(x.users)),
            ("reason", x.reason),
            ("approver", x.approver),
            ("ticket", x.ticket),
            ("expires_at", iso(x.expires_at)),
            ("first_seen", iso(x.first_seen)),
            ("in_force", x.in_force),
            ("granted", x.granted),
            ("expired", x.expired),
        ):
            row("exception", metric, value, key=x.id)
    for t in report.totals:
        d = {"app": t.app, "action": t.action}
        row("total", "events", t.events, **d)
        row("total", "distinct_clients", t.distinct_clients, **d)
        row("total", "first_seen", iso(t.first_seen), **d)
        row("total", "last_seen", iso(t.last_seen), **d)
    for r in report.by_regime:
        d = {"app": r.app, "regime": r.regime, "action": r.action}
        row("regime", "events", r.events, **d)
        row("regime", "distinct_clients", r.distinct_clients, **d)
        row("regime", "first_seen", iso(r.first_seen), **d)
        row("regime", "last_seen", iso(r.last_seen), **d)
    for dep in report.by_department:
        d = {"app": dep.app, "department": dep.department, "action": dep.action}
        row("department", "events", dep.events, **d)
        row("department", "distinct_clients", dep.distinct_clients, **d)
    for section, tops in (("top_client", report.top_clients), ("top_host", report.top_hosts)):
        for rank, top in enumerate(tops, 1):
            row(section, "events", top.events, key=top.key)
            row(section, "rank", rank, key=top.key)
            row(section, "apps", " ".join(top.apps), key=top.key)
    for dr in report.daily:
        row("daily", "events", dr.events, app=dr.app, key=dr.day)
    for ri in report.regimes:
        row("regime_status", "status", ri.status, regime=ri.id)
        row("regime_status", "revoked", ri.revoked or "", regime=ri.id)
    integ = report.integrity
    row("integrity", "verified", integ.verified)
    row("integrity", "ok", integ.ok)
    row("integrity", "checked", integ.checked)
    row("integrity", "mode", integ.mode)
    row("integrity", "checked_now", integ.checked_now)
    for v in integ.provenance:
        row("integrity_provenance", "rows", f"{v.from_seq}..{v.to_seq}", instance=v.instance,
            key=f"run {v.run_id}" if v.run_id is not None else "run not recorded")  # fmt: skip
        row("integrity_provenance", "mode", v.mode, instance=v.instance, key=f"run {v.run_id}")
        row("integrity_provenance", "verified_at", "now" if v.now else iso(v.at),
            instance=v.instance, key=f"run {v.run_id}")  # fmt: skip
    for h in integ.heads:
        row("chain_head", "seq", h.seq, instance=h.instance)
        row("chain_head", "chain_hash", h.chain_hash, instance=h.instance)
    for n, problem in enumerate(integ.problems, 1):
        row("integrity_problem", "problem", problem, key=str(n))
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Markdown


def _md(value: object) -> str:
    """Escape a value for a Markdown table cell."""
    text = "" if value is None else str(value)
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return re.sub(r"([`*_\[\]<>#])", r"\\\1", text)


def _md_table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    body = ["| " + " | ".join(_md(c) for c in r) + " |" for r in rows]
    return [*out, *body] if body else [*out, "| " + " | ".join(["–"] * len(head)) + " |"]


Table = tuple[list[str], list[tuple[object, ...]]]


def _tables(r: MonthlyReport, *, brief: bool) -> dict[str, Table]:
    """The report's tables (head, rows), shared by the Markdown and the HTML rendering.

    ``brief`` (Markdown, read as text): versions cut to 16 hex digits, no column for the app's
    name or the number of catalogue files, so that the tables stay narrow.
    """
    vhead = "version" if brief else "version (SHA-256)"

    def version(v: str) -> str:
        return v[:16] if brief else v

    names = dict(r.apps)
    return {
        "coverage": (
            ["instance", "covered", "%", "starts", "stops", "gaps", "first seen", "last seen"],
            [
                (
                    c.instance,
                    _duration(c.covered_seconds),
                    _pct(c.percent),
                    c.starts,
                    c.stops,
                    len(c.gaps),
                    iso(c.first_seen),
                    iso(c.last_seen),
                )
                for c in r.coverage
            ],
        ),
        "gaps": (
            ["instance", "from", "to", "length", "reason"],
            [
                (c.instance, iso(g.start), iso(g.end), _duration(g.seconds), g.reason)
                for c in r.coverage
                for g in c.gaps
            ],
        ),
        "catalogues": (
            [vhead, "first seen", "last seen", "loads", "instances", "entries"]
            + ([] if brief else ["files"]),
            [
                (
                    version(c.version),
                    iso(c.first_seen),
                    iso(c.last_seen),
                    c.loads,
                    ", ".join(c.instances),
                    sum(n for _, n in c.entries),
                    *(() if brief else (len(c.files),)),
                )
                for c in r.catalogues
            ],
        ),
        "policies": (
            [vhead, "file", "first seen", "last seen", "loads", "default", "dry run", "modes"],
            [
                (
                    version(p.version),
                    p.file,
                    iso(p.first_seen),
                    iso(p.last_seen),
                    p.loads,
                    p.default,
                    "" if p.dry_run is None else ("yes" if p.dry_run else "no"),
                    ", ".join(f"{a}={m}" for a, m in p.modes),
                )
                for p in r.policies
            ],
        ),
        "exceptions": (
            [
                "id",
                "apps / regimes",
                "clients / users",
                "reason",
                "approver",
                "ticket",
                "expires",
                "status",
            ],
            [
                (
                    x.id,
                    ", ".join((*x.apps, *x.regimes)),
                    ", ".join((*x.clients, *x.users)),
                    x.reason,
                    x.approver,
                    x.ticket,
                    iso(x.expires_at) or x.expires,
                    _exception_status(x),
                )
                for x in r.exceptions
            ],
        ),
        "totals": (
            [
                "app",
                *([] if brief else ["name"]),
                "action",
                "events",
                "distinct clients",
                "first seen",
                "last seen",
            ],  # fmt: skip
            [
                (
                    t.app,
                    *(() if brief else (names.get(t.app, t.app),)),
                    t.action,
                    t.events,
                    t.distinct_clients,
                    iso(t.first_seen),
                    iso(t.last_seen),
                )
                for t in r.totals
            ],
        ),
        "by-regime": (
            ["app", "regime", "action", "events", "distinct clients", "first seen", "last seen"],
            [
                (
                    x.app,
                    x.regime or "(none)",
                    x.action,
                    x.events,
                    x.distinct_clients,
                    iso(x.first_seen),
                    iso(x.last_seen),
                )
                for x in r.by_regime
            ],
        ),
        "by-department": (
            ["app", "department", "action", "events", "distinct clients"],
            [
                (d.app, d.department or "(none)", d.action, d.events, d.distinct_clients)
                for d in r.by_department
            ],
        ),
        "top-clients": (
            ["client", "events", "apps", "first seen", "last seen"],
            [
                (t.key, t.events, ", ".join(t.apps), iso(t.first_seen), iso(t.last_seen))
                for t in r.top_clients
            ],
        ),
        "top-hosts": (
            ["hostname", "events", "apps", "first seen", "last seen"],
            [
                (t.key, t.events, ", ".join(t.apps), iso(t.first_seen), iso(t.last_seen))
                for t in r.top_hosts
            ],
        ),
        "regimes": (
            ["regime", "title", "status at period end", "revoked", "citation"],
            [(x.id, x.title, x.status, x.revoked or "", x.citation) for x in r.regimes],
        ),
        "heads": (
            ["instance", "seq", "chain head (SHA-256)"],
            [(h.instance, h.seq, h.chain_hash) for h in r.integrity.heads],
        ),
    }


def render_markdown(report: MonthlyReport) -> str:
    r = report
    L: list[str] = []
    title = f"egresswatch compliance report {r.month}"
    if r.organisation:
        title += f": {r.organisation}"
    L += [f"# {_md(title)}", ""]
    L += ["## Period and scope", ""]
    L += [
        f"- Period: {iso(r.period_start)} to {iso(r.period_end)} (end exclusive, UTC)"
        + (" — **partial: generated before the period ended**" if r.partial else ""),
        f"- Generated: {iso(r.generated_at)} by egresswatch {_md(r.egresswatch_version)}",
        f"- Store: {_md(r.store)}",
        f"- Instances: {_md(', '.join(r.instances)) or 'none'}",
        f"- Client identity: {_md(r.client_identity)}",
        "",
    ]
    if r.lifecycle_note:
        L += [f"> **Note:** {_md(r.lifecycle_note)}", ""]
    t = _tables(r, brief=True)
    L += ["## Coverage", ""]
    L += _md_table(*t["coverage"])
    L += ["", "### Gaps", ""]
    L += _md_table(*t["gaps"])
    L += ["", "## Catalogue versions in force", ""]
    L += _md_table(*t["catalogues"])
    L += ["", "## Policies in force", ""]
    L += _md_table(*t["policies"])
    L += ["", "## Exceptions", ""]
    L += _md_table(*t["exceptions"])
    L += ["", "## Totals per app and action", ""]
    L += _md_table(*t["totals"])
    L += ["", "## Per app and regime", ""]
    L += _md_table(*t["by-regime"])
    L += ["", "## Per department", ""]
    L += _md_table(*t["by-department"])
    L += ["", f"## Top clients (top {r.top_n}; identity: {_md(r.client_identity)})", ""]
    L += _md_table(*t["top-clients"])
    L += ["", f"## Top hostnames (top {r.top_n})", ""]
    L += _md_table(*t["top-hosts"])
    L += ["", "## Daily trend", ""]
    per_day = _daily_matrix(r)
    apps = [a for a, _ in r.apps]
    L += _md_table(["day", *apps, "total"], [(d, *per_day[d], sum(per_day[d])) for d in r.days])
    L += ["", "## Regimes", ""]
    L += _md_table(*t["regimes"])
    L += ["", "## Integrity", ""]
    L += [f"- Verification: {_integrity_line(r.integrity)}"]
    L += [f"- {_md(line)}" for line in r.integrity.provenance_lines()]
    L += [""]
    L += _md_table(*t["heads"])
    if r.integrity.problems:
        L += ["", "Problems:", ""] + [f"- {_md(p)}" for p in r.integrity.problems]
    L += ["", "## Method and blind spots", ""]
    L += [
        "Counts are exact counts of the events recorded in the store (daily rollups), not "
        "Prometheus estimates. Blind spots:",
        "",
    ]
    L += [f"- **{_md(n)}**: {_md(t)}" for n, t in BLIND_SPOTS]
    L += ["", "### Legal note", ""] + [f"- {_md(t)}" for t in LEGAL_CAVEATS]
    L += [
        "",
        "## Sign-off",
        "",
        "Reviewed by: ____________  Role: ____________  Date: ____________",
        "",
    ]
    return "\n".join(L)


def _exception_status(x: ExceptionRecord) -> str:
    flags = [
        name
        for name, on in (("granted", x.granted), ("in force", x.in_force), ("expired", x.expired))
        if on
    ]
    return ", ".join(flags) or "not in force"


def _integrity_line(i: Integrity) -> str:
    if not i.verified:
        return "not run"
    how = (
        f" ({i.mode}: {i.checked_now} recomputed for this report, the rest by the earlier runs "
        "named below)"
        if i.mode == "incremental"
        else " (full)"
        if i.mode
        else ""
    )
    if i.ok:
        return f"OK: {i.checked} events checked{how}, every hash chain intact"
    return f"FAILED: {len(i.problems)} problem(s) in {i.checked} events checked{how}"


def _daily_matrix(r: MonthlyReport) -> dict[str, list[int]]:
    apps = [a for a, _ in r.apps]
    index = {a: i for i, a in enumerate(apps)}
    out = {d: [0] * len(apps) for d in r.days}
    for d in r.daily:
        if d.day in out and d.app in index:
            out[d.day][index[d.app]] += d.events
    return out


# --------------------------------------------------------------------------------------------
# HTML (one self-contained file: inline CSS, inline SVG, no script, no network)

_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _table(head: Sequence[str], rows: Iterable[Sequence[object]], cls: str = "") -> str:
    klass = f' class="{_e(cls)}"' if cls else ""
    out = [f"<table{klass}><thead><tr>"]
    out += [f"<th>{_e(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    n = 0
    for r in rows:
        n += 1
        cells = "".join(
            f'<td class="num">{_e(c)}</td>'
            if isinstance(c, int | float) and not isinstance(c, bool)
            else f"<td>{_e(c)}</td>"
            for c in r
        )
        out.append(f"<tr>{cells}</tr>")
    if not n:
        out.append(f'<tr><td colspan="{len(head)}" class="empty">none</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _nice_max(v: int) -> int:
    if v <= 0:
        return 1
    mag: int = pow(10, len(str(v)) - 1)
    for step in (1, 2, 5, 10):
        if v <= step * mag:
            return step * mag
    return 10 * mag


def svg_daily_chart(r: MonthlyReport) -> str:
    """Stacked bars: events per day, one colour per app."""
    apps = [a for a, _ in r.apps]
    matrix = _daily_matrix(r)
    width, height, left, bottom, top = 900, 260, 48, 28, 12
    plot_w, plot_h = width - left - 10, height - bottom - top
    ymax = _nice_max(max((sum(v) for v in matrix.values()), default=0))
    n = max(1, len(r.days))
    slot = plot_w / n
    bar = max(1.0, slot * 0.8)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="daily-chart" role="img" '
        f'aria-labelledby="daily-chart-title" viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        f'<title id="daily-chart-title">Events per day and app, {_e(r.month)}</title>',
    ]
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" class="grid"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{int(ymax * frac)}</text>'
        )
    for i, day in enumerate(r.days):
        x = left + i * slot + (slot - bar) / 2
        y = top + plot_h
        for j, app in enumerate(apps):
            v = matrix[day][j]
            if not v:
                continue
            h = plot_h * v / ymax
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{_PALETTE[j % len(_PALETTE)]}" data-app="{_e(app)}" data-day="{_e(day)}" '
                f'data-events="{v}"><title>{_e(day)} {_e(app)}: {v}</title></rect>'
            )
        if i % 2 == 0 or n <= 16:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - 10}" text-anchor="middle" class="axis">'
                f"{int(day[-2:])}</text>"
            )
    parts.append("</svg>")
    legend = "".join(
        f'<span class="key"><span class="swatch" style="background:{_PALETTE[j % len(_PALETTE)]}"></span>'
        f"{_e(a)}</span>"
        for j, a in enumerate(apps)
    )
    return "".join(parts) + f'<p class="legend">{legend}</p>'


def svg_coverage_chart(r: MonthlyReport) -> str:
    """One timeline bar per instance: covered in green, gaps in red."""
    width, row_h, left = 900, 22, 150
    height = 10 + row_h * max(1, len(r.coverage)) + 10
    span = max(1.0, r.period_end - r.period_start)
    plot_w = width - left - 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="coverage-chart" role="img" '
        f'aria-labelledby="coverage-chart-title" viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        f'<title id="coverage-chart-title">Coverage per instance, {_e(r.month)}</title>',
    ]
    for k, c in enumerate(r.coverage):
        y = 10 + k * row_h
        parts.append(
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" class="axis">{_e(c.instance)}</text>'
        )
        covered_w = plot_w * c.period_seconds / span
        parts.append(
            f'<rect x="{left}" y="{y + 3}" width="{covered_w:.1f}" height="{row_h - 8}" class="up">'
            f"<title>{_e(c.instance)}: {_pct(c.percent)}% covered</title></rect>"
        )
        for g in c.gaps:
            gx = left + plot_w * (g.start - r.period_start) / span
            gw = max(1.0, plot_w * g.seconds / span)
            parts.append(
                f'<rect x="{gx:.1f}" y="{y + 3}" width="{gw:.1f}" height="{row_h - 8}" class="gap">'
                f"<title>{_e(iso(g.start))} – {_e(iso(g.end))}: {_e(g.reason)}</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _template(name: str) -> str:
    return resources.files("egresswatch").joinpath("templates", name).read_text(encoding="utf-8")


def render_html(report: MonthlyReport) -> str:
    r = report
    title = f"egresswatch compliance report {r.month}" + (
        f" — {r.organisation}" if r.organisation else ""
    )
    scope = _table(
        ["", ""],
        [
            ("Organisation", r.organisation or ""),
            ("Period (UTC, end exclusive)", f"{iso(r.period_start)} – {iso(r.period_end)}"),
            ("Partial", "yes: generated before the period ended" if r.partial else "no"),
            ("Generated", iso(r.generated_at)),
            ("egresswatch", r.egresswatch_version),
            ("Store", r.store),
            ("Instances", ", ".join(r.instances) or "none"),
            ("Client identity", r.client_identity),
        ],
        "kv",
    )
    if r.lifecycle_note:
        scope += f'<p class="note">{_e(r.lifecycle_note)}</p>'

    t = {name: _table(head, rows, name) for name, (head, rows) in _tables(r, brief=False).items()}
    problems = "".join(f"<li>{_e(p)}</li>" for p in r.integrity.problems)
    integrity_class = "ok" if r.integrity.ok else "fail"
    integrity = (
        f'<p class="verdict {integrity_class}">{_e(_integrity_line(r.integrity))}</p>'
        + (
            '<ul class="provenance">'
            + "".join(f"<li>{_e(line)}</li>" for line in r.integrity.provenance_lines())
            + "</ul>"
            if r.integrity.provenance
            else ""
        )
        + t["heads"]
        + (f'<ul class="problems">{problems}</ul>' if problems else "")
    )
    blind = "".join(f"<li><strong>{_e(n)}</strong>: {_e(t)}</li>" for n, t in BLIND_SPOTS)
    legal = "".join(f"<li>{_e(t)}</li>" for t in LEGAL_CAVEATS)
    page = Template(_template("report.html")).substitute(
        css=_template("report.css"),
        title=_e(title),
        month=_e(r.month),
        organisation=_e(r.organisation or ""),
        scope=scope,
        coverage_chart=svg_coverage_chart(r),
        coverage=t["coverage"],
        gaps=t["gaps"],
        catalogues=t["catalogues"],
        policies=t["policies"],
        exceptions=t["exceptions"],
        totals=t["totals"],
        by_regime=t["by-regime"],
        by_department=t["by-department"],
        top_n=_e(r.top_n),
        client_identity=_e(r.client_identity),
        top_clients=t["top-clients"],
        top_hosts=t["top-hosts"],
        daily_chart=svg_daily_chart(r),
        regimes=t["regimes"],
        integrity=integrity,
        blind_spots=blind,
        legal=legal,
        generated=_e(iso(r.generated_at)),
        version=_e(r.egresswatch_version),
    )
    return page


Renderer = Callable[[MonthlyReport], str]

_RENDERERS: dict[str, Renderer] = {
    "html": render_html,
    "md": render_markdown,
    "csv": render_csv,
    "json": render_json,
}


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
