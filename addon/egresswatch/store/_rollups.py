"""Daily rollups: the aggregate rows every write adds to, and the grouped queries the report and
``egresswatch db summarise`` read from them (one SQL text per backend).

A rollup row is keyed by :data:`~egresswatch.store.ROLLUP_DIMENSIONS` (UTC day, instance, app,
regime, action, department, client, host) and counts events with their first and last time. The
``regime`` of a hit that records the rule that decided it (:func:`rollup_regime`) is that rule:
the regime id, ``app``, ``default`` or ``exception``, so each hit counts once, under the rule that
decided; a hit written before events recorded it keeps its regime list joined by commas.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from typing import Any

from ..events import Event
from ..events import EventKind
from . import EACH_REGIME
from . import ROLLUP_DIMENSIONS
from . import RollupRow
from . import RollupSummary

#: A rollup row's key, in ROLLUP_DIMENSIONS order.
RollupKey = tuple[str, str, str, str, str, str, str, str]


def day_of(ts: float) -> str:
    return _day_name(int(ts // 86400))


@functools.lru_cache(maxsize=64)
def _day_name(day: int) -> str:
    return datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")


def day_range(start: float, end: float) -> tuple[str, str]:
    """First and last (inclusive) UTC day overlapping ``[start, end)``."""
    return day_of(start), day_of(end - 1e-6)


def rollup_regime(regimes: Iterable[str], decided_by: str | None, decided_id: str | None) -> str:
    """The ``regime`` rollup key of one hit: the deciding rule when the event names it (the
    regime id for a regime rule, else the rule's kind), else the sorted regime list.

    >>> rollup_regime(["b", "a"], None, None), rollup_regime(["b", "a"], "regime", "a")
    ('a,b', 'a')
    >>> rollup_regime(["a"], "app", "alipay"), rollup_regime(["a"], "exception", "EXC-1")
    ('app', 'exception')

    An evasion event decided by a policy key (``decided_by`` ``policy``) keys on that key, so
    the report tells its kind apart:

    >>> rollup_regime([], "policy", "alt_svc")
    'alt_svc'
    """
    if decided_by is None:
        return ",".join(sorted(regimes))
    if decided_by in ("regime", "policy") and decided_id:
        return decided_id
    return decided_by


def rollup_deltas(events: Iterable[Event]) -> dict[RollupKey, list[Any]]:
    """Aggregate hit events of one batch: key -> [events, first_seen, last_seen]."""
    out: dict[RollupKey, list[Any]] = {}
    # Per batch: a handful of days and of (regimes, deciding rule) combinations, looked up once.
    days: dict[int, str] = {}
    regimes: dict[tuple[Any, ...], str] = {}
    hit = EventKind.HIT
    for e in events:
        if e.kind != hit:
            continue
        ts = e.ts
        d = int(ts // 86400)
        day = days.get(d)
        if day is None:
            day = days[d] = _day_name(d)
        rkey = (tuple(e.regimes), e.decided_by, e.decided_id)
        regime = regimes.get(rkey)
        if regime is None:
            regime = regimes[rkey] = rollup_regime(*rkey)
        key = (
            day,
            e.instance,
            e.app or "",
            regime,
            str(e.action or ""),
            e.department or "",
            e.client or "",
            e.host or "",
        )
        agg = out.get(key)
        if agg is None:
            out[key] = [1, ts, ts]
        else:
            agg[0] += 1
            if ts < agg[1]:
                agg[1] = ts
            if ts > agg[2]:
                agg[2] = ts
    return out


class Summarising:
    """``EventStore.summarise`` for a backend that implements :meth:`summaries_of`: the grouping
    is checked here, once and the same way for every backend."""

    def summarise(
        self,
        start: float,
        end: float,
        by: Sequence[str],
        *,
        top: int | None = None,
        clients: bool = True,
    ) -> list[RollupSummary]:
        dims = check_dimensions(by)
        if top is not None and (len(dims) != 1 or top < 1):
            raise ValueError("summarise(top=N) takes one dimension and N >= 1")
        return self.summaries_of(dims, day_range(start, end), top, clients)

    def summaries_of(
        self, dims: list[str], days: tuple[str, str], top: int | None, clients: bool
    ) -> list[RollupSummary]:
        """The groups of the rollups of ``days`` (first, last) by ``dims``, already checked."""
        raise NotImplementedError


def check_dimensions(by: Sequence[str]) -> list[str]:
    allowed = (*ROLLUP_DIMENSIONS, EACH_REGIME)
    bad = [b for b in by if b not in allowed]
    if bad or len(set(by)) != len(by) or (EACH_REGIME in by and "regime" in by):
        raise ValueError(f"summarise by {list(by)}: use distinct names from {allowed}")
    return list(by)


# Each regime of a row on its own: SQLite through json_each over the list made JSON, PostgreSQL
# through unnest(string_to_array()). A row without regimes counts once under "".
_SPLIT_SQLITE = (
    "json_each(CASE WHEN regime = '' THEN '[\"\"]' ELSE '[\"' || "
    "replace(replace(replace(regime, '\\', '\\\\'), '\"', '\\\"'), ',', '\",\"') "
    "|| '\"]' END) AS each_regime"
)
_SPLIT_POSTGRES = (
    "unnest(CASE WHEN regime = '' THEN ARRAY[''] ELSE string_to_array(regime, ',') END) "
    "AS each_regime(value)"
)


def summary_sql(by: Sequence[str], mark: str, top: int | None = None, clients: bool = True) -> str:
    """The grouped query; ``mark`` is the driver's placeholder (``?`` SQLite, ``%s`` psycopg).

    Keys are ordered in code-point order on both backends (``COLLATE "C"`` on PostgreSQL), as
    Python sorts them, so a ``top`` cut at a tie picks the same rows everywhere. ``clients=False``
    skips the distinct-client count (0 in the result), the dearest part of a grouping.

    PostgreSQL groups in two hashed steps: first by the keys and the client (and the app, for
    ``top``), then by the keys, where counting clients is counting rows. That avoids sorting the
    month's million rollup rows for ``COUNT(DISTINCT)``, which takes about twice as long.
    """
    dims = list(by)  # checked by Summarising.summarise
    pg = mark != "?"
    cols = [("each_regime.value" if d == EACH_REGIME else d) for d in dims]
    source = "rollups"
    if EACH_REGIME in dims:
        source += f" CROSS JOIN LATERAL {_SPLIT_POSTGRES}" if pg else f", {_SPLIT_SQLITE}"
    where = f"day >= {mark} AND day <= {mark}"
    if top is not None:
        where += f" AND {cols[0]} <> ''"
    if not pg:
        distinct = "COUNT(DISTINCT NULLIF(client, ''))" if clients else "0"
        select = "".join(f"{c}, " for c in cols)
        apps = ", group_concat(DISTINCT app)" if top is not None else ""
        aggregates = f"SUM(events), {distinct}, MIN(first_seen), MAX(last_seen){apps}"
        sql = f"SELECT {select}{aggregates} FROM {source} WHERE {where}"
        if top is not None:
            return f"{sql} GROUP BY {cols[0]} ORDER BY SUM(events) DESC, {cols[0]} LIMIT {int(top)}"
        if cols:
            sql += f" GROUP BY {', '.join(cols)} ORDER BY {', '.join(cols)}"
        return sql
    keys = [f"k{i}" for i in range(len(cols))]
    inner_cols = [f"{c} AS {k}" for c, k in zip(cols, keys, strict=True)]
    inner_group = list(cols)
    if clients:
        inner_cols.append("client AS cl")
        inner_group.append("client")
    if top is not None:
        inner_cols.append("app AS ap")
        inner_group.append("app")
    inner = (
        f"SELECT {''.join(c + ', ' for c in inner_cols)}SUM(events) AS ev, "
        f"MIN(first_seen) AS f, MAX(last_seen) AS l FROM {source} WHERE {where}"
        + (f" GROUP BY {', '.join(inner_group)}" if inner_group else "")
    )
    if not clients:
        distinct = "0"
    elif top is not None:  # several inner rows per client (one per app)
        distinct = "COUNT(DISTINCT NULLIF(cl, ''))"
    else:  # one inner row per (keys, client)
        distinct = "COUNT(NULLIF(cl, ''))"
    apps = ", string_agg(DISTINCT ap, ',')" if top is not None else ""
    select = "".join(f"{k}, " for k in keys)
    sql = f"SELECT {select}SUM(ev), {distinct}, MIN(f), MAX(l){apps} FROM ({inner}) AS g"
    collated = [f'{k} COLLATE "C"' for k in keys]
    if top is not None:
        return f"{sql} GROUP BY {keys[0]} ORDER BY SUM(ev) DESC, {collated[0]} LIMIT {int(top)}"
    if keys:
        sql += f" GROUP BY {', '.join(keys)} ORDER BY {', '.join(collated)}"
    return sql


def summaries(
    rows: Iterable[Sequence[Any]], width: int, top: int | None = None
) -> list[RollupSummary]:
    out = []
    for r in rows:
        if r[width] is None:
            continue
        apps: tuple[str, ...] = ()
        if top is not None:
            # App ids are [a-z0-9-]+: a comma never occurs in one.
            apps = tuple(sorted(set((r[width + 4] or "").split(","))))
        out.append(
            RollupSummary(
                tuple(r[:width]),
                int(r[width]),
                int(r[width + 1]),
                float(r[width + 2]),
                float(r[width + 3]),
                apps,
            )
        )
    return out


def rollup_row(values: Sequence[Any]) -> RollupRow:
    """From ``(day, instance, app, regime, action, department, client, host, events, first, last)``."""
    day = values[0]
    return RollupRow(
        day=day if isinstance(day, str) else day.isoformat(),
        instance=values[1],
        app=values[2],
        regime=values[3],
        action=values[4],
        department=values[5],
        client=values[6],
        host=values[7],
        events=int(values[8]),
        first_seen=float(values[9]),
        last_seen=float(values[10]),
    )
