"""Configuration over the month: which catalogue and policy versions, and which exceptions, were
in force, from the config rows of the period and the last ones before it.

A configuration loaded before the month began is in force from the month's first instant; the
last config row of each kind before the month is found by looking back in widening windows.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from datetime import UTC
from datetime import date
from datetime import datetime

from ..events import Event
from ..events import EventKind
from ..store import EventStore
from .model import CatalogueVersion
from .model import ExceptionRecord
from .model import PolicyVersion

__all__ = ["config_events", "configuration"]

logger = logging.getLogger(__name__)

#: How far back to look for the configuration that was already in force when the month began.
_LOOKBACK_DAYS = (1, 7, 35, 100, 400)


def _config_kind(e: Event) -> str | None:
    if e.kind != EventKind.CONFIG or e.detail is None:
        return None
    kind = e.detail.get("kind")
    return kind if isinstance(kind, str) else None


def config_events(
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


def configuration(
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
