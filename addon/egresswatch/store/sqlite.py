"""The embedded event store: stdlib ``sqlite3``, WAL, ``synchronous=NORMAL``.

One write connection (used by the writer thread); reads that stream (``iter_events``,
``verify``) open their own read-only connection, which WAL lets run beside the writer. A process
that is killed loses nothing it committed (WAL with ``synchronous=NORMAL`` only risks the last
transactions on a power cut / OS crash).

URLs: ``sqlite:///abs/path/events.db`` (absolute), ``sqlite:relative/events.db``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import cast

from ..events import Event
from . import ChainHead
from . import RollupRow
from . import RollupSummary
from . import SchemaTooNew
from . import StoreError
from . import StoreStats
from . import StoreUnavailable
from . import VerificationRun
from . import VerifyResult
from . import _codec
from . import migrations

__all__ = ["SQLiteStore", "sqlite_path"]

logger = logging.getLogger(__name__)

_INSERT = (
    f"INSERT INTO events ({_codec.COLUMN_SQL}) VALUES ({', '.join('?' * len(_codec.COLUMNS))})"
)
_UPSERT_ROLLUP = """
INSERT INTO rollups (day, instance, app, regime, action, department, client, host,
                     events, first_seen, last_seen)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (day, instance, app, regime, action, department, client, host) DO UPDATE SET
    events = events + excluded.events,
    first_seen = min(first_seen, excluded.first_seen),
    last_seen = max(last_seen, excluded.last_seen)
"""
_UPSERT_HEAD = """
INSERT INTO chain_heads (instance, seq, chain_hash) VALUES (?, ?, ?)
ON CONFLICT (instance) DO UPDATE SET seq = excluded.seq, chain_hash = excluded.chain_hash
"""
_SELECT = f"SELECT {_codec.COLUMN_SQL} FROM events"
_LIFECYCLE = (
    f"SELECT {_codec.COLUMN_SQL} FROM events WHERE ts >= ? AND ts < ? AND kind != 'hit' "
    f"UNION ALL SELECT {_codec.ARCHIVE_AS_EVENTS_SQL} FROM lifecycle_archive "
    "WHERE ts >= ? AND ts < ? ORDER BY 4, 1, 2"
)
_ARCHIVE = (
    f"INSERT INTO lifecycle_archive ({_codec.ARCHIVE_COLUMN_SQL}, archived_at) "
    f"SELECT {_codec.ARCHIVE_COLUMN_SQL}, ? FROM events "
    "WHERE instance = ? AND seq <= ? AND kind != 'hit'"
)
_RECORD = (
    f"INSERT INTO verifications ({_codec.VERIFICATION_SQL}) "
    f"VALUES ({', '.join('?' * len(_codec.VERIFICATION_COLUMNS))})"
)


def sqlite_path(url: str) -> str:
    """``sqlite:///a/b.db`` -> ``/a/b.db``; ``sqlite:rel.db`` -> ``rel.db``.

    >>> sqlite_path("sqlite:///var/lib/egresswatch/events.db")
    '/var/lib/egresswatch/events.db'
    """
    if not url.lower().startswith("sqlite:"):
        raise ValueError(f"not a sqlite URL: {url!r}")
    rest = url[len("sqlite:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    rest = rest.split("?", 1)[0]
    if not rest:
        raise ValueError(f"sqlite URL names no file: {url!r}")
    return rest


def _store_errors[F: Callable[..., Any]](fn: F) -> F:
    """Turn driver errors into :class:`StoreError` (callers handle one exception family)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except sqlite3.Error as e:
            raise StoreError(f"{fn.__name__} failed: {e}") from e

    return cast(F, wrapper)


class SQLiteStore:
    """The embedded backend. Thread-safe (one lock around the write connection)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self._lock = threading.Lock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except (OSError, sqlite3.Error) as e:
            raise StoreUnavailable(f"cannot open {self.path}: {e}") from e
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA cache_size=-32000")
            self.schema_version = self._migrate()
        except sqlite3.Error as e:
            self._conn.close()
            raise StoreUnavailable(f"cannot open {self.path}: {e}") from e
        except BaseException:
            self._conn.close()
            raise

    def _migrate(self) -> int:
        c = self._conn
        c.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        known = len(migrations.SQLITE)
        while True:
            c.execute("BEGIN IMMEDIATE")
            try:
                (version,) = c.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
                ).fetchone()
                if version > known:
                    raise SchemaTooNew(
                        f"{self.path} has schema version {version}; this egresswatch knows "
                        f"up to {known}: upgrade egresswatch"
                    )
                if version == known:
                    c.execute("COMMIT")
                    return int(version)
                nxt = version + 1
                # Statement by statement: executescript() would COMMIT our transaction first.
                for statement in _statements(migrations.SQLITE[nxt - 1]):
                    c.execute(statement)
                c.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (nxt, migrations.MIGRATION_NAMES[nxt - 1], time.time()),
                )
                c.execute("COMMIT")
                logger.info("%s: applied schema migration %d", self.path, nxt)
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise

    def write(self, events: Sequence[Event]) -> None:
        if not events:
            return
        encoded = _codec.encode(events)
        deltas = _codec.rollup_deltas(events)
        instances = sorted({e.instance for e in events})
        with self._lock:
            c = self._conn
            try:
                c.execute("BEGIN IMMEDIATE")
                try:
                    marks = ",".join("?" * len(instances))
                    heads = {
                        r[0]: (r[1], r[2])
                        for r in c.execute(
                            f"SELECT instance, seq, chain_hash FROM chain_heads WHERE instance IN ({marks})",
                            instances,
                        )
                    }
                    rows, new_heads = _codec.build_rows(encoded, heads)
                    c.executemany(_INSERT, rows)
                    c.executemany(
                        _UPSERT_ROLLUP,
                        [(*k, n, first, last) for k, (n, first, last) in deltas.items()],
                    )
                    c.executemany(_UPSERT_HEAD, [(i, *new_heads[i]) for i in instances])
                    c.execute("COMMIT")
                except BaseException:
                    if c.in_transaction:
                        c.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise StoreError(f"write to {self.path} failed: {e}") from e

    def _reader(self) -> sqlite3.Connection:
        # A separate connection so a long read never holds the write lock (WAL: readers and the
        # writer do not block each other).
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only=1")
        return conn

    @_store_errors
    def rollups(self, start: float, end: float) -> list[RollupRow]:
        first, last = _codec.day_range(start, end)
        with self._lock:
            rows = self._conn.execute(
                "SELECT day, instance, app, regime, action, department, client, host, events, "
                "first_seen, last_seen FROM rollups WHERE day >= ? AND day <= ? "
                "ORDER BY day, instance, app, regime, action, department, client, host",
                (first, last),
            ).fetchall()
        # The columns come back as (str, ..., int, float, float): no per-row conversion needed.
        return [RollupRow(*r) for r in rows]

    @_store_errors
    def summarise(
        self,
        start: float,
        end: float,
        by: Sequence[str],
        *,
        top: int | None = None,
        clients: bool = True,
    ) -> list[RollupSummary]:
        first, last = _codec.day_range(start, end)
        sql = _codec.summary_sql(by, "?", top, clients)
        # A reader connection of its own: a report's grouped scans never hold up the writer.
        conn = self._reader()
        try:
            rows = conn.execute(sql, (first, last)).fetchall()
        finally:
            conn.close()
        return _codec.summaries(rows, len(by), top)

    @_store_errors
    def lifecycle(self, start: float, end: float) -> list[Event]:
        conn = self._reader()
        try:
            rows = conn.execute(_LIFECYCLE, (start, end, start, end)).fetchall()
        finally:
            conn.close()
        return [_codec.row_to_event(r) for r in rows]

    def iter_events(self, since: float, until: float) -> Iterator[Event]:
        conn = self._reader()
        try:
            cur = conn.execute(
                f"{_SELECT} WHERE ts >= ? AND ts < ? ORDER BY ts, instance, seq", (since, until)
            )
            while True:
                batch = cur.fetchmany(1000)
                if not batch:
                    break
                for r in batch:
                    yield _codec.row_to_event(r)
        finally:
            conn.close()

    @_store_errors
    def verify(
        self, instance: str | None = None, *, full: bool = True, record: bool = True
    ) -> VerifyResult:
        started = time.time()
        conn = self._reader()
        try:
            conn.execute("BEGIN")  # one snapshot for heads, checkpoints, runs and rows
            heads = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT * FROM chain_heads")}
            if instance is not None:
                heads = {k: v for k, v in heads.items() if k == instance}
            cps = {
                r[0]: (r[1], r[2])
                for r in conn.execute("SELECT instance, seq, chain_hash FROM checkpoints")
            }
            latest = {} if full else _latest_runs(conn)
            starts = _codec.plan(heads, cps, latest, full)
            anchors: dict[str, list[str]] = {}
            rows: Iterator[Any]
            if full and instance is None:
                rows = _fetch_all(conn.execute(f"{_SELECT} ORDER BY instance, seq, id"))
            elif full:
                rows = _fetch_all(
                    conn.execute(f"{_SELECT} WHERE instance = ? ORDER BY seq, id", (instance,))
                )
            else:
                for name, st in starts.items():
                    if st.base is not None:
                        anchors[name] = [
                            r[0]
                            for r in conn.execute(
                                "SELECT chain_hash FROM events WHERE instance = ? AND seq = ?",
                                (name, st.seq),
                            )
                        ]
                rows = _incremental_rows(conn, starts)
            result = _codec.verify_stream(rows, heads, cps, instance, starts, anchors)
            earlier = _codec.history(starts, lambda i: _run_by_id(conn, i))
        finally:
            conn.close()
        runs = _codec.run_records(result, starts, started, time.time())
        if record:
            runs = self._record(runs)
        return _codec.with_runs(result, "full" if full else "incremental", runs, earlier)

    def _record(self, runs: list[VerificationRun]) -> list[VerificationRun]:
        """Store this run; a store we cannot write to (read-only file) keeps ids ``None``."""
        out = []
        try:
            with self._lock:
                c = self._conn
                c.execute("BEGIN IMMEDIATE")
                try:
                    for run in runs:
                        values = dataclasses.astuple(run)
                        cur = c.execute(_RECORD, values)
                        out.append(dataclasses.replace(run, id=cur.lastrowid))
                    c.execute("COMMIT")
                except BaseException:
                    if c.in_transaction:
                        c.execute("ROLLBACK")
                    raise
        except sqlite3.Error as e:
            logger.warning("%s: could not record the verification run: %s", self.path, e)
            return runs
        return out

    @_store_errors
    def verifications(self, instance: str | None = None) -> list[VerificationRun]:
        conn = self._reader()
        try:
            sql = f"SELECT {_codec.VERIFICATION_SQL} FROM verifications"
            if instance is None:
                rows = conn.execute(f"{sql} ORDER BY id").fetchall()
            else:
                rows = conn.execute(f"{sql} WHERE instance = ? ORDER BY id", (instance,)).fetchall()
        finally:
            conn.close()
        return [_codec.verification_run(r) for r in rows]

    @_store_errors
    def prune(self, before: float) -> int:
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                # The delete trigger lets rows go only while this flag is set, inside this
                # transaction; anything else that deletes is refused.
                c.execute("UPDATE prune_guard SET allowed = 1 WHERE id = 1")
                deleted = 0
                for (inst,) in c.execute("SELECT instance FROM chain_heads").fetchall():
                    row = c.execute(
                        "SELECT MIN(seq) FROM events WHERE instance = ? AND ts >= ?", (inst, before)
                    ).fetchone()
                    if row[0] is not None:
                        cut = row[0] - 1
                    else:
                        cut = c.execute(
                            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE instance = ?", (inst,)
                        ).fetchone()[0]
                    last = c.execute(
                        "SELECT seq, chain_hash FROM events WHERE instance = ? AND seq <= ? "
                        "ORDER BY seq DESC, id DESC LIMIT 1",
                        (inst, cut),
                    ).fetchone()
                    if last is None:
                        continue
                    # Coverage and configuration outlive the raw events (same transaction).
                    c.execute(_ARCHIVE, (time.time(), inst, cut))
                    cur = c.execute(
                        "DELETE FROM events WHERE instance = ? AND seq <= ?", (inst, cut)
                    )
                    deleted += cur.rowcount
                    c.execute(
                        "INSERT INTO checkpoints (instance, seq, chain_hash, pruned_at) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (instance) DO UPDATE SET "
                        "seq = excluded.seq, chain_hash = excluded.chain_hash, "
                        "pruned_at = excluded.pruned_at",
                        (inst, last[0], last[1], time.time()),
                    )
                c.execute("UPDATE prune_guard SET allowed = 0 WHERE id = 1")
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
            return deleted

    @_store_errors
    def chain_heads(self) -> list[ChainHead]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT instance, seq, chain_hash FROM chain_heads ORDER BY instance"
            ).fetchall()
        return [ChainHead(*r) for r in rows]

    def instances(self) -> list[str]:
        return [h.instance for h in self.chain_heads()]

    @_store_errors
    def stats(self) -> StoreStats:
        with self._lock:
            c = self._conn
            rows = {
                t: c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in (
                    "events",
                    "rollups",
                    "chain_heads",
                    "checkpoints",
                    "verifications",
                    "lifecycle_archive",
                )
            }
            (pages,) = c.execute("PRAGMA page_count").fetchone()
            (size,) = c.execute("PRAGMA page_size").fetchone()
        total = pages * size
        wal = Path(self.path + "-wal")
        if wal.exists():
            total += wal.stat().st_size
        return StoreStats(self.schema_version, rows, total)

    def checkpoint_wal(self) -> None:
        """Fold the WAL into the main file (for size measurements and backups)."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _latest_runs(conn: sqlite3.Connection) -> dict[str, VerificationRun]:
    """The latest recorded run of every instance."""
    rows = conn.execute(
        f"SELECT {_codec.VERIFICATION_SQL} FROM verifications WHERE id IN "
        "(SELECT MAX(id) FROM verifications GROUP BY instance)"
    ).fetchall()
    return {r[1]: _codec.verification_run(r) for r in rows}


def _run_by_id(conn: sqlite3.Connection, run_id: int) -> VerificationRun | None:
    row = conn.execute(
        f"SELECT {_codec.VERIFICATION_SQL} FROM verifications WHERE id = ?", (run_id,)
    ).fetchone()
    return None if row is None else _codec.verification_run(row)


def _incremental_rows(conn: sqlite3.Connection, starts: dict[str, _codec.Start]) -> Iterator[Any]:
    """Per instance in name order: rows after the verified head (all rows for a full start)."""
    for name in sorted(starts):
        st = starts[name]
        if st.base is None:
            cur = conn.execute(f"{_SELECT} WHERE instance = ? ORDER BY seq, id", (name,))
        else:
            cur = conn.execute(
                f"{_SELECT} WHERE instance = ? AND seq > ? ORDER BY seq, id", (name, st.seq)
            )
        yield from _fetch_all(cur)


def _fetch_all(cur: sqlite3.Cursor) -> Iterator[Any]:
    while True:
        batch = cur.fetchmany(5000)
        if not batch:
            return
        yield from batch


def _statements(script: str) -> Iterator[str]:
    """Split a script into complete statements (trigger bodies contain ``;``)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        if not buf and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf.strip()
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buf[:60]!r}")
