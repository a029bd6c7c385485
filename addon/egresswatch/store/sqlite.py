"""The embedded event store: stdlib ``sqlite3``, WAL, ``synchronous=NORMAL``.

One write connection (used by the writer thread); reads that stream (``iter_events``,
``verify``) open their own read-only connection, which WAL lets run beside the writer. A process
that is killed loses nothing it committed (WAL with ``synchronous=NORMAL`` only risks the last
transactions on a power cut / OS crash).

URLs: ``sqlite:///abs/path/events.db`` (absolute), ``sqlite:relative/events.db``.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import SchemaTooNew
from . import StoreStats
from . import StoreUnavailable
from . import _codec
from . import migrations
from ._sql import SQLStore
from ._sql import translate_errors

__all__ = ["SQLiteStore", "sqlite_path"]

logger = logging.getLogger(__name__)

_INSERT = (
    f"INSERT INTO events ({_codec.COLUMN_SQL}) VALUES ({', '.join('?' * len(_codec.COLUMNS))})"
)


_HAS_SCHEMA = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"


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


class SQLiteStore(SQLStore):
    """The embedded backend. Thread-safe (one lock around the write connection)."""

    mark = "?"
    driver_error = sqlite3.Error
    upsert_rollup = """
INSERT INTO rollups (day, instance, app, regime, action, department, client, host,
                     events, first_seen, last_seen)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (day, instance, app, regime, action, department, client, host) DO UPDATE SET
    events = events + excluded.events,
    first_seen = min(first_seen, excluded.first_seen),
    last_seen = max(last_seen, excluded.last_seen)
"""

    def __init__(self, url: str, *, create: bool = True) -> None:
        super().__init__(url)
        self.path = sqlite_path(url)
        if not create and (self.path == ":memory:" or not Path(self.path).is_file()):
            raise StoreUnavailable(
                f"no event store at {self.path}: the file does not exist "
                "(a mistyped --data-dir or --store?)"
            )
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            if not create and not self._conn.execute(_HAS_SCHEMA).fetchone():
                self._conn.close()
                raise StoreUnavailable(
                    f"no event store at {self.path}: the file is not an egresswatch database "
                    "(no schema_migrations table)"
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

    def _where(self) -> str:
        return self.path

    def _migrate(self) -> int:
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        known = len(migrations.SQLITE)
        while True:
            with self._write_tx() as c:
                (version,) = c.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
                ).fetchone()
                if version > known:
                    raise SchemaTooNew(
                        f"{self.path} has schema version {version}; this egresswatch knows "
                        f"up to {known}: upgrade egresswatch"
                    )
                if version == known:
                    return int(version)
                nxt = version + 1
                # Statement by statement: executescript() would COMMIT our transaction first.
                for statement in _statements(migrations.SQLITE[nxt - 1]):
                    c.execute(statement)
                c.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (nxt, migrations.MIGRATION_NAMES[nxt - 1], time.time()),
                )
            logger.info("%s: applied schema migration %d", self.path, nxt)

    @contextmanager
    def _write_tx(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE: the write lock is taken before the chain heads are read, so two
        # processes writing the same file never hand out one seq twice.
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise

    def _reader(self) -> sqlite3.Connection:
        # A separate connection so a long read never holds the write lock (WAL: readers and the
        # writer do not block each other).
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only=1")
        return conn

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        conn = self._reader()
        try:
            conn.execute("BEGIN")  # deferred: the snapshot is taken at the first read
            yield conn
        finally:
            conn.close()

    def _stream(self, conn: Any, sql: str, params: Sequence[Any]) -> Iterator[Any]:
        cur = conn.execute(sql, params)
        while batch := cur.fetchmany(5000):
            yield from batch

    def _grouped(self, sql: str, params: Sequence[Any]) -> list[Any]:
        # A reader connection of its own: a report's grouped scans never hold up the writer.
        conn = self._reader()
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def _insert_events(self, c: Any, rows: list[tuple[Any, ...]]) -> None:
        c.executemany(_INSERT, rows)

    def _allow_prune(self, c: Any) -> None:
        # The delete trigger lets rows go only while this flag is set, inside this transaction
        # (reset before the commit, so no other connection ever sees it set).
        c.execute("UPDATE prune_guard SET allowed = 1 WHERE id = 1")

    def _end_prune(self, c: Any) -> None:
        c.execute("UPDATE prune_guard SET allowed = 0 WHERE id = 1")

    @translate_errors
    def stats(self) -> StoreStats:
        with self._lock:
            rows = self._counts()
            (pages,) = self._conn.execute("PRAGMA page_count").fetchone()
            (size,) = self._conn.execute("PRAGMA page_size").fetchone()
        total = pages * size
        wal = Path(self.path + "-wal")
        if wal.exists():
            total += wal.stat().st_size
        return StoreStats(self.schema_version, rows, total)

    def checkpoint_wal(self) -> None:
        """Fold the WAL into the main file (for size measurements and backups)."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


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
