"""What the two SQL backends share: the SQL both run and the steps of every operation.

:class:`SQLStore` holds a write, a prune, a verification, the grouped report queries and the
small reads once; :class:`~egresswatch.store.sqlite.SQLiteStore` and
:class:`~egresswatch.store.postgres.PostgresStore` supply the dialect:

- ``mark``: the driver's placeholder. Shared SQL is written with ``?`` and turned into ``%s``
  for psycopg by :meth:`SQLStore.q` (no shared statement contains a literal ``?`` or ``%``);
- ``driver_error``: the driver's exception base class, turned into :class:`StoreError`;
- ``upsert_rollup``: the rollup upsert (``min``/``max`` in SQLite, ``LEAST``/``GREATEST`` in
  PostgreSQL), run once per rollup row (PostgreSQL sends a batch's rows as arrays instead:
  ``_upsert_rollups``);
- the hooks below: how a write transaction is opened, how a snapshot for reading is taken, how
  rows are streamed, how events are inserted, how an instance's chain is locked and how the
  append-only trigger is told that a prune is running.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any
from typing import ClassVar
from typing import cast

from ..events import Event
from . import ChainHead
from . import RollupRow
from . import RollupSummary
from . import StoreError
from . import VerificationRun
from . import VerifyResult
from . import _chain
from . import _codec
from . import _rollups

__all__ = ["TABLES", "SQLStore", "translate_errors"]

logger = logging.getLogger(__name__)

#: The tables whose rows ``stats()`` counts.
TABLES = ("events", "rollups", "chain_heads", "checkpoints", "verifications", "lifecycle_archive")

_SELECT = f"SELECT {_codec.COLUMN_SQL} FROM events"
_HEADS = "SELECT instance, seq, chain_hash FROM chain_heads"
_CHECKPOINTS = "SELECT instance, seq, chain_hash FROM checkpoints"
_ROLLUPS = (
    "SELECT day, instance, app, regime, action, department, client, host, events, "
    "first_seen, last_seen FROM rollups WHERE day >= ? AND day <= ? "
    "ORDER BY day, instance, app, regime, action, department, client, host"
)
_LIFECYCLE = (
    f"{_SELECT} WHERE ts >= ? AND ts < ? AND kind <> 'hit' "
    f"UNION ALL SELECT {_codec.ARCHIVE_AS_EVENTS_SQL} FROM lifecycle_archive "
    "WHERE ts >= ? AND ts < ? ORDER BY 4, 1, 2"
)
_UPSERT_HEAD = """
INSERT INTO chain_heads (instance, seq, chain_hash) VALUES (?, ?, ?)
ON CONFLICT (instance) DO UPDATE SET seq = excluded.seq, chain_hash = excluded.chain_hash
"""
_ARCHIVE = (
    f"INSERT INTO lifecycle_archive ({_codec.ARCHIVE_COLUMN_SQL}, archived_at) "
    f"SELECT {_codec.ARCHIVE_COLUMN_SQL}, ? FROM events "
    "WHERE instance = ? AND seq <= ? AND kind <> 'hit'"
)
_CHECKPOINT = (
    "INSERT INTO checkpoints (instance, seq, chain_hash, pruned_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (instance) DO UPDATE SET seq = excluded.seq, "
    "chain_hash = excluded.chain_hash, pruned_at = excluded.pruned_at"
)
_RUNS = f"SELECT {_chain.VERIFICATION_SQL} FROM verifications"
_RECORD_COLUMNS = _chain.VERIFICATION_COLUMNS[1:]  # the id comes from the database
_RECORD = (
    f"INSERT INTO verifications ({', '.join(_RECORD_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_RECORD_COLUMNS))}) RETURNING id"
)


@functools.lru_cache(maxsize=128)
def _dialect(sql: str, mark: str) -> str:
    return sql if mark == "?" else sql.replace("?", mark)


def translate_errors[F: Callable[..., Any]](fn: F) -> F:
    """Turn the driver's errors into :class:`StoreError` (callers handle one exception family)."""

    @functools.wraps(fn)
    def wrapper(self: SQLStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except self.driver_error as e:
            raise StoreError(f"{fn.__name__} failed: {e}") from e

    return cast(F, wrapper)


class SQLStore(_rollups.Summarising):
    """The shared part of the SQL backends. Thread-safe: one lock around the main connection."""

    url: str
    schema_version: int
    mark: ClassVar[str]
    driver_error: ClassVar[type[Exception]]
    upsert_rollup: ClassVar[str]
    #: The UTC day number of ``ts`` (``floor(ts) // 86400``, exact in integers: the same day as
    #: ``_codec.day_of`` for every ts >= 0). SQLite's CAST truncates; PostgreSQL's rounds.
    day_number_sql: ClassVar[str] = "CAST(ts AS INTEGER) / 86400"

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._conn: Any = None

    # -- dialect hooks ----------------------------------------------------------------------

    def _where(self) -> str:
        """The store as named in messages (no password)."""
        raise NotImplementedError

    def _write_tx(self) -> AbstractContextManager[Any]:
        """Hold the lock and a write transaction on the main connection; yields something with
        ``execute``/``executemany``; commits on exit, rolls back on an exception."""
        raise NotImplementedError

    def _snapshot(self) -> AbstractContextManager[Any]:
        """A connection of its own with one read snapshot (a long read never holds the lock)."""
        raise NotImplementedError

    def _stream(self, conn: Any, sql: str, params: Sequence[Any]) -> Iterator[Any]:
        """The rows of a query on a :meth:`_snapshot` connection, fetched in batches."""
        raise NotImplementedError

    def _grouped(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """Run one grouped report query (on a connection of its own)."""
        raise NotImplementedError

    def _insert_events(self, c: Any, rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def _upsert_rollups(self, c: Any, rows: list[tuple[Any, ...]]) -> None:
        """Add a batch's rollup deltas ``(*key, events, first, last)``, one row per key."""
        c.executemany(self.upsert_rollup, rows)

    def _write_failed(self, e: Exception) -> StoreError:
        return StoreError(f"write to {self._where()} failed: {e}")

    def _lock_instance(self, c: Any, instance: str) -> None:
        """Serialise writers of one instance's chain beyond the transaction (if needed)."""

    def _allow_prune(self, c: Any) -> None:
        """Let the append-only trigger pass this transaction's deletes."""
        raise NotImplementedError

    def _end_prune(self, c: Any) -> None:
        """Undo :meth:`_allow_prune` before the commit (if it outlives the transaction)."""

    # -- shared -----------------------------------------------------------------------------

    def q(self, sql: str) -> str:
        """Shared SQL (written with ``?``) in this driver's placeholder."""
        return _dialect(sql, self.mark)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """A short read on the main connection."""
        with self._lock:
            return list(self._conn.execute(self.q(sql), params).fetchall())

    def write(self, events: Sequence[Event]) -> None:
        if not events:
            return
        encoded = _codec.encode(events)
        deltas = _rollups.rollup_deltas(events)
        instances = sorted({e.instance for e in events})
        marks = ", ".join([self.mark] * len(instances))
        try:
            with self._write_tx() as c:
                # Sorted, so two writers of overlapping instance sets never deadlock.
                for inst in instances:
                    self._lock_instance(c, inst)
                heads = {
                    r[0]: (int(r[1]), r[2])
                    for r in c.execute(f"{_HEADS} WHERE instance IN ({marks})", instances)
                }
                rows, new_heads = _codec.build_rows(encoded, heads)
                self._insert_events(c, rows)
                self._upsert_rollups(c, [(*k, *agg) for k, agg in deltas.items()])
                c.executemany(self.q(_UPSERT_HEAD), [(i, *new_heads[i]) for i in instances])
        except self.driver_error as e:
            raise self._write_failed(e) from e

    @translate_errors
    def rollups(self, start: float, end: float) -> list[RollupRow]:
        # The columns come back as (str, ..., int, float, float): no per-row conversion needed.
        return [RollupRow(*r) for r in self._read(_ROLLUPS, _rollups.day_range(start, end))]

    @translate_errors
    def summaries_of(
        self, dims: list[str], days: tuple[str, str], top: int | None, clients: bool
    ) -> list[RollupSummary]:
        sql = _rollups.summary_sql(dims, self.mark, top, clients)
        return _rollups.summaries(self._grouped(sql, days), len(dims), top)

    @translate_errors
    def lifecycle(self, start: float, end: float) -> list[Event]:
        return [_codec.row_to_event(r) for r in self._read(_LIFECYCLE, (start, end, start, end))]

    def iter_events(self, since: float, until: float) -> Iterator[Event]:
        sql = f"{_SELECT} WHERE ts >= ? AND ts < ? ORDER BY ts, instance, seq"
        try:
            with self._snapshot() as conn:
                for r in self._stream(conn, sql, (since, until)):
                    yield _codec.row_to_event(r)
        except self.driver_error as e:
            raise StoreError(f"iter_events failed: {e}") from e

    @translate_errors
    def verify(
        self, instance: str | None = None, *, full: bool = True, record: bool = True
    ) -> VerifyResult:
        started = time.time()
        with self._snapshot() as conn:  # one snapshot for heads, checkpoints, runs and rows
            heads = {r[0]: (int(r[1]), r[2]) for r in conn.execute(_HEADS)}
            if instance is not None:
                heads = {k: v for k, v in heads.items() if k == instance}
            cps = {r[0]: (int(r[1]), r[2]) for r in conn.execute(_CHECKPOINTS)}
            latest = {}
            if not full:
                latest = {
                    r[1]: _chain.verification_run(r)
                    for r in conn.execute(
                        f"{_RUNS} WHERE id IN (SELECT MAX(id) FROM verifications GROUP BY instance)"
                    )
                }
            starts = _chain.plan(heads, cps, latest, full)
            anchors = {
                name: [
                    r[0]
                    for r in conn.execute(
                        self.q("SELECT chain_hash FROM events WHERE instance = ? AND seq = ?"),
                        (name, st.seq),
                    )
                ]
                for name, st in starts.items()
                if st.base is not None
            }
            rows: Iterator[Any]
            if full and instance is None:
                rows = self._stream(conn, f"{_SELECT} ORDER BY instance, seq, id", ())
            elif full:
                sql = f"{_SELECT} WHERE instance = ? ORDER BY seq, id"
                rows = self._stream(conn, sql, (instance,))
            else:
                rows = self._incremental_rows(conn, starts)
            result = _chain.verify_stream(rows, heads, cps, instance, starts, anchors)
            earlier = _chain.history(starts, lambda run_id: self._run_by_id(conn, run_id))
        runs = _chain.run_records(result, starts, started, time.time())
        if record:
            runs = self._record(runs)
        return _chain.with_runs(result, "full" if full else "incremental", runs, earlier)

    def _incremental_rows(self, conn: Any, starts: dict[str, _chain.Start]) -> Iterator[Any]:
        """Per instance in name order: rows after the verified head (all rows for a full start)."""
        for name in sorted(starts):
            st = starts[name]
            if st.base is None:
                yield from self._stream(
                    conn, f"{_SELECT} WHERE instance = ? ORDER BY seq, id", (name,)
                )
            else:
                sql = f"{_SELECT} WHERE instance = ? AND seq > ? ORDER BY seq, id"
                yield from self._stream(conn, sql, (name, st.seq))

    def _run_by_id(self, conn: Any, run_id: int) -> VerificationRun | None:
        row = conn.execute(self.q(f"{_RUNS} WHERE id = ?"), (run_id,)).fetchone()
        return None if row is None else _chain.verification_run(row)

    def _record(self, runs: list[VerificationRun]) -> list[VerificationRun]:
        """Store this run; a store we cannot write to (read-only) keeps ids ``None``."""
        out = []
        try:
            with self._write_tx() as c:
                for run in runs:
                    # fetchall(): SQLite finishes a RETURNING statement only when it is read out.
                    rows = c.execute(self.q(_RECORD), dataclasses.astuple(run)[1:]).fetchall()
                    out.append(dataclasses.replace(run, id=int(rows[0][0])))
        except self.driver_error as e:
            logger.warning("%s: could not record the verification run: %s", self._where(), e)
            return runs
        return out

    @translate_errors
    def verifications(self, instance: str | None = None) -> list[VerificationRun]:
        if instance is None:
            rows = self._read(f"{_RUNS} ORDER BY id")
        else:
            rows = self._read(f"{_RUNS} WHERE instance = ? ORDER BY id", (instance,))
        return [_chain.verification_run(r) for r in rows]

    @translate_errors
    def prune(self, before: float) -> int:
        q = self.q
        deleted = 0
        with self._write_tx() as c:
            self._allow_prune(c)
            for (inst,) in c.execute(
                "SELECT instance FROM chain_heads ORDER BY instance"
            ).fetchall():
                self._lock_instance(c, inst)
                (first_kept,) = c.execute(
                    q("SELECT MIN(seq) FROM events WHERE instance = ? AND ts >= ?"), (inst, before)
                ).fetchone()
                if first_kept is not None:
                    cut = first_kept - 1
                else:
                    (cut,) = c.execute(
                        q("SELECT COALESCE(MAX(seq), 0) FROM events WHERE instance = ?"), (inst,)
                    ).fetchone()
                last = c.execute(
                    q(
                        "SELECT seq, chain_hash FROM events WHERE instance = ? AND seq <= ? "
                        "ORDER BY seq DESC, id DESC LIMIT 1"
                    ),
                    (inst, cut),
                ).fetchone()
                if last is None:
                    continue
                # Coverage and configuration outlive the raw events (same transaction).
                c.execute(q(_ARCHIVE), (time.time(), inst, cut))
                cur = c.execute(
                    q("DELETE FROM events WHERE instance = ? AND seq <= ?"), (inst, cut)
                )
                deleted += cur.rowcount
                c.execute(q(_CHECKPOINT), (inst, last[0], last[1], time.time()))
            self._end_prune(c)
        return deleted

    # -- reads for the checkpoint witness (egresswatch.store.witness) -------------------------

    @translate_errors
    def chain_hashes_at(self, instance: str, seqs: Sequence[int]) -> dict[int, list[str]]:
        """The stored chain hashes of ``instance``'s rows at each of ``seqs`` (absent: none)."""
        out: dict[int, list[str]] = {}
        wanted = sorted(set(seqs))
        for i in range(0, len(wanted), 500):
            part = wanted[i : i + 500]
            sql = (
                "SELECT seq, chain_hash FROM events WHERE instance = ? "
                f"AND seq IN ({', '.join('?' * len(part))}) ORDER BY seq, id"
            )
            for seq, chain in self._read(sql, (instance, *part)):
                out.setdefault(int(seq), []).append(chain)
        return out

    @translate_errors
    def prune_points(self) -> dict[str, tuple[int, str]]:
        """Per instance, the last pruned seq and its chain hash (the ``checkpoints`` table)."""
        return {r[0]: (int(r[1]), r[2]) for r in self._read(_CHECKPOINTS)}

    @translate_errors
    def hit_groups(self) -> tuple[list[tuple[Any, ...]], dict[str, float]]:
        sql = (
            f"SELECT {self.day_number_sql} AS d, instance, COALESCE(app, ''), regimes, "
            "decided_by, decided_id, "
            "COALESCE(action, ''), COALESCE(department, ''), COALESCE(client, ''), "
            "COALESCE(host, ''), COUNT(*), MIN(ts), MAX(ts) FROM events WHERE kind = 'hit' "
            "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10"
        )
        first = (
            "SELECT e.instance, MIN(e.ts) FROM events e JOIN checkpoints c "
            "ON e.instance = c.instance AND e.seq = c.seq + 1 GROUP BY e.instance"
        )
        with self._snapshot() as conn:  # one snapshot for both
            groups = list(self._stream(conn, sql, ()))
            kept = {r[0]: float(r[1]) for r in conn.execute(first)}
        return groups, kept

    @translate_errors
    def chain_heads(self) -> list[ChainHead]:
        return [ChainHead(r[0], int(r[1]), r[2]) for r in self._read(f"{_HEADS} ORDER BY instance")]

    def instances(self) -> list[str]:
        return [h.instance for h in self.chain_heads()]

    def _counts(self) -> dict[str, int]:
        """Rows per table of :data:`TABLES` (call with the lock held)."""
        return {
            t: int(self._conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in TABLES
        }

    def close(self) -> None:
        with self._lock:
            self._conn.close()
