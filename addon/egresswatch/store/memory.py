"""``MemoryStore``: the event store in a few lists, with the same semantics as SQLite/PostgreSQL.

For unit tests of other modules (the writer, the report, the addon)::

    >>> from egresswatch.events import Event, EventKind
    >>> s = MemoryStore()
    >>> s.write([Event(ts=0.0, kind=EventKind.HIT, instance="p1", event_id="e1", app="tiktok")])
    >>> s.verify().ok, s.chain_heads()[0].seq
    (True, 1)

Rows are kept as tuples in :data:`~egresswatch.store._codec.COLUMNS` order in ``self.rows`` so
that tests can tamper with them and check that :meth:`verify` notices.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Any

from ..events import Event
from ..events import EventKind
from . import EACH_REGIME
from . import ROLLUP_DIMENSIONS
from . import ChainHead
from . import RollupRow
from . import RollupSummary
from . import StoreStats
from . import StoreUnavailable
from . import VerificationRun
from . import VerifyResult
from . import _chain
from . import _codec
from . import _rollups
from .migrations import MIGRATION_NAMES

_DECIDED_BY = _codec.COLUMNS.index("decided_by")
_DECIDED_ID = _codec.COLUMNS.index("decided_id")

__all__ = ["MemoryStore"]


class MemoryStore(_rollups.Summarising):
    """An in-process store; thread-safe; forgets everything on ``close()``."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.rows: list[tuple[Any, ...]] = []
        self.rollup_table: dict[_rollups.RollupKey, list[Any]] = {}
        self.heads: dict[str, tuple[int, str]] = {}
        self.checkpoints: dict[str, tuple[int, str]] = {}
        self.archive: list[tuple[Any, ...]] = []  # lifecycle rows kept through prune (COLUMNS)
        self.runs: list[VerificationRun] = []  # the verifications table
        self.writes = 0  # committed transactions (tests look at batching)
        self._lock = threading.Lock()
        self.closed = False

    def _check_open(self) -> None:
        if self.closed:
            raise StoreUnavailable("memory store is closed")

    def write(self, events: Sequence[Event]) -> None:
        if not events:
            return
        encoded = _codec.encode(events)
        with self._lock:
            self._check_open()
            rows, heads = _codec.build_rows(encoded, self.heads)
            deltas = _rollups.rollup_deltas(events)
            self.rows.extend(rows)
            self.heads = heads
            for key, (n, first, last) in deltas.items():
                agg = self.rollup_table.get(key)
                if agg is None:
                    self.rollup_table[key] = [n, first, last]
                else:
                    agg[0] += n
                    agg[1] = min(agg[1], first)
                    agg[2] = max(agg[2], last)
            self.writes += 1

    def rollups(self, start: float, end: float) -> list[RollupRow]:
        return self._rollup_rows(_rollups.day_range(start, end))

    def _rollup_rows(self, days: tuple[str, str]) -> list[RollupRow]:
        first, last = days
        with self._lock:
            items = sorted(self.rollup_table.items())
        return [_rollups.rollup_row((*key, *agg)) for key, agg in items if first <= key[0] <= last]

    def summaries_of(
        self, dims: list[str], days: tuple[str, str], top: int | None, clients: bool
    ) -> list[RollupSummary]:
        groups: dict[tuple[str, ...], list[Any]] = {}
        for r in self._rollup_rows(days):
            values = dict(zip(ROLLUP_DIMENSIONS, (r.day, r.instance, r.app, r.regime, r.action,
                                                  r.department, r.client, r.host), strict=True))  # fmt: skip
            splits = r.regime.split(",") if r.regime else [""]
            for one in splits if EACH_REGIME in dims else [""]:
                values[EACH_REGIME] = one
                key = tuple(values[d] for d in dims)
                if top is not None and not key[0]:
                    continue
                g = groups.get(key)
                if g is None:
                    groups[key] = g = [0, set(), r.first_seen, r.last_seen, set()]
                g[0] += r.events
                if r.client:
                    g[1].add(r.client)
                g[2] = min(g[2], r.first_seen)
                g[3] = max(g[3], r.last_seen)
                g[4].add(r.app)
        items = sorted(groups.items())
        if top is not None:
            items = sorted(items, key=lambda kv: -kv[1][0])[:top]
        return [
            RollupSummary(
                k,
                g[0],
                len(g[1]) if clients else 0,
                g[2],
                g[3],
                tuple(sorted(g[4])) if top is not None else (),
            )
            for k, g in items
        ]

    def lifecycle(self, start: float, end: float) -> list[Event]:
        with self._lock:
            rows = [r for r in self.archive if start <= r[3] < end]
            rows += [r for r in self.rows if start <= r[3] < end and r[4] != EventKind.HIT.value]
        rows.sort(key=lambda r: (r[3], r[0], r[1]))
        return [_codec.row_to_event(r) for r in rows]

    def iter_events(self, since: float, until: float) -> Iterator[Event]:
        with self._lock:
            rows = [r for r in self.rows if since <= r[3] < until]
        rows.sort(key=lambda r: (r[3], r[0], r[1]))
        for r in rows:
            yield _codec.row_to_event(r)

    def verify(
        self, instance: str | None = None, *, full: bool = True, record: bool = True
    ) -> VerifyResult:
        started = time.time()
        with self._lock:
            heads = {k: v for k, v in self.heads.items() if instance is None or k == instance}
            checkpoints = dict(self.checkpoints)
            latest = {r.instance: r for r in self.runs}
            starts = _chain.plan(heads, checkpoints, latest, full)
            rows = [
                r
                for r in self.rows
                if (instance is None or r[0] == instance)
                and (r[0] not in starts or starts[r[0]].base is None or r[1] > starts[r[0]].seq)
            ]
            anchors = {
                name: [r[_codec.CHAIN] for r in self.rows if r[0] == name and r[1] == st.seq]
                for name, st in starts.items()
                if st.base is not None
            }
        # Stable sort: rows with the same seq stay in insertion order, as in the databases.
        rows.sort(key=lambda r: (r[0], r[1]))
        result = _chain.verify_stream(rows, heads, checkpoints, instance, starts, anchors)
        runs = _chain.run_records(result, starts, started, time.time())
        if record:
            with self._lock:
                recorded = []
                for run in runs:
                    run = dataclasses.replace(run, id=len(self.runs) + 1)
                    self.runs.append(run)
                    recorded.append(run)
                runs = recorded
        by_id = {r.id: r for r in self.runs}
        return _chain.with_runs(
            result,
            "full" if full else "incremental",
            runs,
            _chain.history(starts, by_id.get),
        )

    def verifications(self, instance: str | None = None) -> list[VerificationRun]:
        with self._lock:
            return [r for r in self.runs if instance is None or r.instance == instance]

    def prune(self, before: float) -> int:
        with self._lock:
            self._check_open()
            deleted = 0
            for name in sorted({r[0] for r in self.rows}):
                mine = [r for r in self.rows if r[0] == name]
                later = [r[1] for r in mine if r[3] >= before]
                cut = (min(later) - 1) if later else max(r[1] for r in mine)
                gone = [r for r in mine if r[1] <= cut]
                if not gone:
                    continue
                last = max(gone, key=lambda r: r[1])
                self.checkpoints[name] = (last[1], last[_codec.CHAIN])
                self.archive += [r for r in gone if r[4] != EventKind.HIT.value]
                ids = {id(r) for r in gone}
                self.rows = [r for r in self.rows if id(r) not in ids]
                deleted += len(gone)
            return deleted

    def chain_hashes_at(self, instance: str, seqs: Sequence[int]) -> dict[int, list[str]]:
        wanted = set(seqs)
        out: dict[int, list[str]] = {}
        with self._lock:
            for r in self.rows:
                if r[0] == instance and r[1] in wanted:
                    out.setdefault(r[1], []).append(r[_codec.CHAIN])
        return out

    def prune_points(self) -> dict[str, tuple[int, str]]:
        with self._lock:
            return dict(self.checkpoints)

    def hit_groups(self) -> tuple[list[tuple[Any, ...]], dict[str, float]]:
        groups: dict[tuple[Any, ...], list[Any]] = {}
        with self._lock:
            for r in self.rows:
                if r[4] != EventKind.HIT.value:
                    continue
                key = (
                    int(r[3] // 86400), r[0], r[7] or "", r[8], r[_DECIDED_BY], r[_DECIDED_ID],
                    r[9] or "", r[14] or "", r[12] or "", r[6] or "",
                )  # fmt: skip
                agg = groups.get(key)
                if agg is None:
                    groups[key] = [1, r[3], r[3]]
                else:
                    agg[0] += 1
                    agg[1] = min(agg[1], r[3])
                    agg[2] = max(agg[2], r[3])
            kept: dict[str, float] = {}
            for r in self.rows:
                cp = self.checkpoints.get(r[0])
                if cp is not None and r[1] == cp[0] + 1:
                    kept[r[0]] = min(kept.get(r[0], r[3]), r[3])
        return [(*k, *v) for k, v in groups.items()], kept

    def chain_heads(self) -> list[ChainHead]:
        with self._lock:
            return [ChainHead(k, *v) for k, v in sorted(self.heads.items())]

    def instances(self) -> list[str]:
        with self._lock:
            return sorted(self.heads)

    def stats(self) -> StoreStats:
        with self._lock:
            return StoreStats(
                schema_version=len(MIGRATION_NAMES),
                rows={
                    "events": len(self.rows),
                    "rollups": len(self.rollup_table),
                    "chain_heads": len(self.heads),
                    "checkpoints": len(self.checkpoints),
                    "verifications": len(self.runs),
                    "lifecycle_archive": len(self.archive),
                },
                bytes=-1,
            )

    def close(self) -> None:
        self.closed = True
