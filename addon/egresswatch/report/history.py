"""Configuration over the month: which catalogue and policy versions, and which exceptions, were
in force, from the config rows of the period and the last ones before it.

A configuration loaded before the month began is in force from the month's first instant; the
last config row of each kind before the month is found by looking back in widening windows.
Each row's detail is parsed once into its type (:mod:`egresswatch.config_events`); a malformed
one is named in a warning and left out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC
from datetime import date
from datetime import datetime
from typing import Any

from ..config_events import CatalogueLoaded
from ..config_events import ExceptionDetail
from ..config_events import ExceptionTerms
from ..config_events import LifecycleDetail
from ..config_events import MalformedDetail
from ..config_events import PolicyLoaded
from ..config_events import StartDetail
from ..config_events import parse_detail
from ..events import Event
from ..events import EventKind
from ..store import EventStore
from .model import CatalogueVersion
from .model import ExceptionRecord
from .model import PolicyVersion

__all__ = ["Config", "Details", "config_events", "configuration"]

logger = logging.getLogger(__name__)

#: How far back to look for the configuration that was already in force when the month began.
_LOOKBACK_DAYS = (1, 7, 35, 100, 400)


class Details:
    """The typed details of lifecycle rows, each parsed once; looked up by the row itself."""

    def __init__(self) -> None:
        # id() of the event -> (the event, its detail); the event is held so its id stays its own
        self._by_id: dict[int, tuple[Event, LifecycleDetail | None]] = {}

    def of(self, e: Event) -> LifecycleDetail | None:
        hit = self._by_id.get(id(e))
        if hit is None or hit[0] is not e:
            hit = (e, _parse(e))
            self._by_id[id(e)] = hit
        return hit[1]

    def start(self, e: Event) -> StartDetail | None:
        d = self.of(e)
        return d if isinstance(d, StartDetail) else None

    def config(self, e: Event) -> Config | None:
        d = self.of(e)
        return d if isinstance(d, CatalogueLoaded | PolicyLoaded) else None


Config = CatalogueLoaded | PolicyLoaded


def _parse(e: Event) -> LifecycleDetail | None:
    try:
        return parse_detail(e)
    except MalformedDetail as exc:
        logger.warning("egresswatch: report: %s (the report leaves this detail out)", exc)
        return None


def _kind(d: Config | None) -> str | None:
    if d is None:
        return None
    return "catalogue" if isinstance(d, CatalogueLoaded) else "policy"


def config_events(
    store: EventStore,
    lifecycle: Sequence[Event],
    details: Details,
    start: float,
    end: float,
    instances: Sequence[str],
) -> list[tuple[Event, Config]]:
    """Config rows of the period plus, per instance and kind, the last one before the period (the
    configuration already in force when the month began), found by looking back in widening
    windows; each with its typed detail."""
    found = [
        (e, d) for e in lifecycle if (d := details.config(e)) is not None and start <= e.ts < end
    ]
    need = {(i, k) for i in instances for k in ("catalogue", "policy")}
    # An instance whose first row in the period is a config row of that kind loaded it afresh.
    first_kind: dict[tuple[str, str], bool] = {}
    for e in sorted(lifecycle, key=lambda e: e.ts):
        if e.ts < start:
            continue
        for k in ("catalogue", "policy"):
            key = (e.instance, k)
            if key not in first_kind:
                first_kind[key] = e.kind == EventKind.START or _kind(details.config(e)) == k
    need = {key for key in need if not first_kind.get(key, False)}
    before: dict[tuple[str, str], tuple[Event, Config]] = {}
    upper = start
    for days in _LOOKBACK_DAYS:
        if not need:
            break
        lower = start - days * 86400.0
        for e in store.lifecycle(lower, upper):
            d = details.config(e)
            kind = _kind(d)
            if d is None or kind is None or (e.instance, kind) not in need:
                continue
            key = (e.instance, kind)
            if key not in before or before[key][0].ts <= e.ts:
                before[key] = (e, d)
        need -= set(before)
        upper = lower
    return sorted([*before.values(), *found], key=lambda pair: pair[0].ts)


class _Seen:
    """Where and when one catalogue or policy version was seen in force."""

    __slots__ = ("first", "last", "loads", "instances", "detail")

    def __init__(self, ts: float) -> None:
        self.first = self.last = ts
        self.loads = 0
        self.instances: set[str] = set()
        self.detail: Config | None = None


def _expiry(text: str) -> float | None:
    """An exception's expiry: a date means the end of that day (UTC); a datetime is exact."""
    text = text.strip()
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


def configuration(
    config_events: Sequence[tuple[Event, Config]],
    in_period: Sequence[Event],
    start: float,
    end: float,
    cutoff: float,
) -> tuple[tuple[CatalogueVersion, ...], tuple[PolicyVersion, ...], tuple[ExceptionRecord, ...]]:
    seen: dict[tuple[str, str], _Seen] = {}

    def note(kind: str, version: str, ts: float, inst: str, load: bool, d: Config | None) -> None:
        if not version:
            return
        t = max(ts, start)  # a configuration loaded before the month is in force from its start
        row = seen.setdefault((kind, version), _Seen(t))
        row.first, row.last = min(t, row.first), max(t, row.last)
        row.loads += int(load)
        row.instances.add(inst)
        if row.detail is None and d is not None:
            row.detail = d

    exc_first: dict[str, float] = {}
    exc_data: dict[str, ExceptionDetail] = {}
    for e, d in config_events:
        if isinstance(d, CatalogueLoaded):
            note("catalogue", d.version or e.catalogue_version, e.ts, e.instance, e.ts >= start, d)
            continue
        note("policy", d.version or e.policy_version, e.ts, e.instance, e.ts >= start, d)
        for x in d.exceptions:
            exc_first[x.id] = min(exc_first.get(x.id, e.ts), e.ts)
            exc_data[x.id] = x
    # Heartbeats and starts that carry versions prove those versions were in force then.
    for e in in_period:
        if e.kind == EventKind.CONFIG:
            continue
        note("catalogue", e.catalogue_version, e.ts, e.instance, False, None)
        note("policy", e.policy_version, e.ts, e.instance, False, None)

    catalogues: list[CatalogueVersion] = []
    policies: list[PolicyVersion] = []
    for (kind, version), row in seen.items():
        common: dict[str, Any] = {
            "version": version,
            "first_seen": row.first,
            "last_seen": row.last,
            "loads": row.loads,
            "instances": tuple(sorted(row.instances)),
        }
        if kind == "catalogue":
            c = row.detail if isinstance(row.detail, CatalogueLoaded) else CatalogueLoaded()
            catalogues.append(CatalogueVersion(**common, files=c.files, entries=c.entries))
        else:
            p = row.detail if isinstance(row.detail, PolicyLoaded) else PolicyLoaded()
            policies.append(
                PolicyVersion(
                    **common,
                    file=p.file or "",
                    default=p.default,
                    dry_run=p.dry_run,
                    modes=p.modes,
                    evasion=p.evasion,
                )
            )
    catalogues.sort(key=lambda c: (c.first_seen, c.version))
    policies.sort(key=lambda p: (p.first_seen, p.version))
    return tuple(catalogues), tuple(policies), _exceptions(exc_first, exc_data, start, end, cutoff)


def _exceptions(
    first_seen: Mapping[str, float],
    data: Mapping[str, ExceptionDetail],
    start: float,
    end: float,
    cutoff: float,
) -> tuple[ExceptionRecord, ...]:
    out: list[ExceptionRecord] = []
    for xid, x in data.items():
        expires_at = _expiry(x.expires)
        first = first_seen[xid]
        out.append(
            ExceptionRecord(
                **{f.name: getattr(x, f.name) for f in fields(ExceptionTerms)},
                ticket=x.ticket or "",
                expires=x.expires,
                expires_at=expires_at,
                first_seen=first,
                in_force=first < cutoff and (expires_at is None or expires_at > start),
                granted=start <= first < end,
                expired=expires_at is not None and start <= expires_at <= cutoff,
            )
        )
    out.sort(key=lambda x: x.id)
    return tuple(out)
