"""Building the report from a store: :func:`build_report` (and the month arithmetic it needs).

It reads only the store's daily rollups (grouped in the database), its lifecycle rows (start,
stop, heartbeat, config) and its chain verification, never the raw hit events, so a report works
after the month's raw events were pruned and stays fast over millions of events.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from datetime import UTC
from datetime import date
from datetime import datetime
from datetime import timedelta

from .. import __version__
from ..catalogue import bundled_dir
from ..catalogue_model import CatalogueError
from ..categories import Categories
from ..categories import category_dirs
from ..categories import load_categories
from ..events import Event
from ..store import EACH_REGIME
from ..store import EventStore
from ..store import RollupSummary
from ..store import VerifyResult
from ..store import redact_url
from ..timeutil import as_utc
from .coverage import instance_coverage
from .evasion import Summary
from .evasion import candidates_of
from .evasion import evasion_rows
from .history import Details
from .history import config_events
from .history import configuration
from .model import GAP_THRESHOLD_SECONDS
from .model import CatalogueLike
from .model import DailyRow
from .model import DepartmentRow
from .model import Findings
from .model import Integrity
from .model import MonthlyReport
from .model import RegimeInfo
from .model import RegimeRow
from .model import TopRow
from .model import Total
from .model import VerifiedRange

__all__ = ["build_report", "month_bounds", "previous_month"]

#: Grouped queries of one report in flight at once (each on its own database connection).
_QUERY_THREADS = 3


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


def previous_month(now: datetime) -> str:
    """The calendar month before ``now`` (UTC), as ``YYYY-MM``.

    >>> previous_month(datetime(2026, 1, 15, tzinfo=UTC))
    '2025-12'
    """
    first = as_utc(now).replace(day=1)
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
    now_ts = as_utc(now).timestamp()
    cutoff = min(end, max(start, now_ts))  # coverage and expiries are judged up to here

    # The grouped scans run side by side (the databases work without Python's lock), and beside
    # reading the lifecycle rows.
    with ThreadPoolExecutor(max_workers=_QUERY_THREADS, thread_name_prefix="report") as pool:
        pending = _start_findings(pool, store, start, end, top_n)
        lifecycle = store.lifecycle(start - gap_threshold, end + gap_threshold)
        findings, seen_by, evasion = _findings(pending, store, start, end)
    in_period = [e for e in lifecycle if start <= e.ts < end]

    instances = sorted({e.instance for e in in_period} | set(seen_by))
    per_instance: defaultdict[str, list[Event]] = defaultdict(list)
    for e in lifecycle:
        per_instance[e.instance].append(e)
    details = Details()
    coverage = tuple(
        instance_coverage(inst, per_instance[inst], details, start, cutoff, gap_threshold)
        for inst in instances
    )
    configs = config_events(store, lifecycle, details, start, end, instances)
    catalogues, policies, exceptions = configuration(configs, in_period, start, end, cutoff)

    totals, by_regime = findings.totals, findings.by_regime  # for the apps and regimes seen
    days = tuple(
        (start_dt + timedelta(days=i)).date().isoformat()
        for i in range(_days_shown((end_dt - start_dt).days, start, end, now_ts))
    )
    app_ids = sorted({t.app for t in totals})
    names = {a: _app_name(catalogue, a) for a in app_ids}
    # The rule kinds a hit can be counted under besides a regime id (the deciding rule).
    regimes_seen = sorted({r.regime for r in by_regime if r.regime and r.regime not in RULE_KINDS})
    last_day = (end_dt - timedelta(days=1)).date()
    regimes = tuple(_regime_info(catalogue, rid, last_day) for rid in regimes_seen)

    return MonthlyReport(
        **{f.name: getattr(findings, f.name) for f in fields(Findings)},
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
            in_period, details, bool(totals), lambda: store.summarise(start, end, ("client",))
        ),
        coverage=coverage,
        catalogues=catalogues,
        policies=policies,
        exceptions=exceptions,
        days=days,
        apps=tuple((a, names[a]) for a in app_ids),
        regimes=regimes,
        integrity=_integrity(store.verify(full=full_verify) if verify else None),
        top_n=top_n,
        lifecycle_rows=len(in_period),
        evasion=evasion_rows(evasion, _categories()),
        candidates=candidates_of(in_period),
        catalogue_limits=_catalogue_limits(catalogue),
    )


def _catalogue_limits(catalogue: CatalogueLike | None) -> tuple[tuple[str, str], ...]:
    """Apps whose catalogue entry says how incomplete it is (``completeness:``), by name."""
    if catalogue is None:
        return ()
    apps = sorted(catalogue.apps.values(), key=lambda a: a.name)
    return tuple(
        (a.name, text) for a in apps if (text := str(getattr(a, "completeness", "") or ""))
    )


def _categories() -> Categories:
    """The bundled categories (encrypted-DNS resolvers, ECH front ends), empty if unreadable."""
    try:
        return load_categories(category_dirs([bundled_dir()]))
    except (CatalogueError, OSError):
        return Categories()


def _app_name(catalogue: CatalogueLike | None, app: str) -> str:
    if catalogue is not None:
        found = catalogue.apps.get(app)
        if found is not None:
            return found.name
    return app


def _days_shown(full: int, start: float, end: float, now: float) -> int:
    """Days of the daily trend: the whole month once it is over; of a partial month, up to and
    including today (the days after it have no figures yet, not zero figures).

    >>> _days_shown(31, 0.0, 31 * 86400.0, 9.5 * 86400), _days_shown(31, 0.0, 31 * 86400.0, 1e9)
    (10, 31)
    """
    if now >= end:
        return full
    if now < start:
        return 0
    return min(full, int((now - start) // 86400) + 1)


#: The ``regime`` of a rollup row that names the deciding rule's kind rather than a regime.
RULE_KINDS = frozenset({"app", "default", "exception"})


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
    lifecycle: Iterable[Event],
    details: Details,
    any_hits: bool,
    clients_of: Callable[[], list[RollupSummary]],
) -> str:
    modes = {d.client_identity for e in lifecycle if (d := details.start(e)) and d.client_identity}
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
        # evasion events (no app): read by report/evasion.py
        "evasion": (("app", "regime", "host", "action"), None, True),
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
) -> tuple[Findings, tuple[str, ...], tuple[Summary, ...]]:
    """Every findings table from queries grouped in the database (a few hundred rows in all),
    the instances seen in the daily rollups, and the evasion groups (encrypted DNS, hidden ECH).

    Distinct clients are counted by the database over the month's rollup rows of each group,
    never by adding daily (or per-regime-list) figures.
    """
    # Evasion events (encrypted DNS, hidden ECH) have no app: not in the apps' tables.
    by_list = [s for s in pending["lists"].result() if s.key[0]]
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
            if s.key[0]
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
            if s.key[0]
        ]
    departments = [
        DepartmentRow(s.key[0], s.key[1], s.key[2], s.events, s.distinct_clients)
        for s in pending["departments"].result()
        if s.key[0]
    ]
    daily: defaultdict[tuple[str, str], int] = defaultdict(int)
    instances: set[str] = set()
    for s in pending["daily"].result():
        if not s.key[2]:
            continue
        daily[(s.key[0], s.key[2])] += s.events
        instances.add(s.key[1])

    def top(name: str) -> tuple[TopRow, ...]:
        return tuple(
            TopRow(str(s.key[0]), s.events, s.apps, s.first_seen, s.last_seen)
            for s in pending[name].result()
        )

    tables = Findings(
        totals=tuple(sorted(totals, key=lambda t: (t.app, t.action))),
        by_regime=tuple(sorted(regimes, key=lambda r: (r.app, r.regime, r.action))),
        by_department=tuple(sorted(departments, key=lambda d: (d.app, d.department, d.action))),
        top_clients=top("clients"),
        top_hosts=top("hosts"),
        daily=tuple(DailyRow(day, app, n) for (day, app), n in sorted(daily.items())),
    )
    evasion = tuple(
        (
            s.key[0],
            s.key[1],
            s.key[2],
            s.key[3],
            s.events,
            s.distinct_clients,
            s.first_seen,
            s.last_seen,
        )
        for s in pending["evasion"].result()
        if not s.key[0]
    )
    return tables, tuple(sorted(instances)), evasion


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
        heads=tuple(sorted(result.heads, key=lambda h: h.instance)),
        problems=tuple(str(p) for p in result.problems),
        mode=result.mode,
        checked_now=result.checked,
        provenance=tuple(sorted(ranges, key=lambda r: (r.instance, r.from_seq, not r.now))),
    )
