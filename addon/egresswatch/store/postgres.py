"""The fleet event store: PostgreSQL through psycopg 3 (``pip install egresswatch[postgres]``).

Many proxy instances write to one database, each with its own hash chain. A write takes
``pg_advisory_xact_lock(7391, hashtext(instance))`` for every instance in the batch (sorted, so
two writers never deadlock), reads the chain head, COPYs the rows, upserts rollups and the head,
and commits: instances never wait for each other, and two processes that (wrongly) share an
instance name still get a gap-free chain.

Append-only: a trigger refuses UPDATE, DELETE and TRUNCATE on ``events`` unless the transaction
ran ``SET LOCAL egresswatch.prune = 'on'`` (only :meth:`PostgresStore.prune` does). A superuser
can still disable triggers: the hash chain is what detects that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

from . import SchemaTooNew
from . import StoreError
from . import StoreStats
from . import StoreUnavailable
from . import _codec
from . import migrations
from . import redact_url
from ._sql import TABLES
from ._sql import SQLStore
from ._sql import translate_errors

try:
    import psycopg
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None  # type: ignore[assignment]

__all__ = ["PostgresStore"]

logger = logging.getLogger(__name__)

LOCK_CLASS = 7391  # advisory-lock namespace of egresswatch (first key of the two-int form)
_COPY = f"COPY events ({_codec.COLUMN_SQL}) FROM STDIN"
# Grouping a month of rollups sorts about a million rows: give those sorts memory, per query.
_REPORT_WORK_MEM = "128MB"


class PostgresStore(SQLStore):
    """The fleet backend. Thread-safe (one lock around the connection)."""

    mark = "%s"
    driver_error = psycopg.Error if psycopg is not None else Exception
    upsert_rollup = """
INSERT INTO rollups (day, instance, app, regime, action, department, client, host,
                     events, first_seen, last_seen)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (day, instance, app, regime, action, department, client, host) DO UPDATE SET
    events = rollups.events + excluded.events,
    first_seen = LEAST(rollups.first_seen, excluded.first_seen),
    last_seen = GREATEST(rollups.last_seen, excluded.last_seen)
"""

    #: A batch's rollup deltas in one statement: one array per column, unnested into rows.
    #: Against one INSERT per row (``executemany``, pipelined) it saves the per-statement work on
    #: both sides: about 10 % of the writer's CPU per event and of the server's (``bench/``).
    #: The rows are distinct keys (aggregated per batch), as ON CONFLICT DO UPDATE requires.
    upsert_rollups_unnest = """
INSERT INTO rollups (day, instance, app, regime, action, department, client, host,
                     events, first_seen, last_seen)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
                     %s::text[], %s::text[], %s::bigint[], %s::float8[], %s::float8[])
ON CONFLICT (day, instance, app, regime, action, department, client, host) DO UPDATE SET
    events = rollups.events + excluded.events,
    first_seen = LEAST(rollups.first_seen, excluded.first_seen),
    last_seen = GREATEST(rollups.last_seen, excluded.last_seen)
"""

    day_number_sql = "CAST(floor(ts) AS BIGINT) / 86400"

    def __init__(self, url: str, *, create: bool = True) -> None:
        if psycopg is None:
            raise StoreUnavailable(
                "PostgreSQL store needs psycopg: pip install 'egresswatch[postgres]'"
            )
        super().__init__(url)
        self._conn = self._connect(create)
        try:
            if not create:
                row = self._conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
                if row is None or row[0] is None:
                    raise StoreUnavailable(
                        f"no event store at {redact_url(url)}: the database has no egresswatch "
                        "schema (egresswatch db migrate, or the proxy's first start, creates it)"
                    )
            self.schema_version = self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def _where(self) -> str:
        return redact_url(self.url)

    def _connect(self, create: bool = True) -> Any:
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as e:
            if not create and "does not exist" in str(e):
                raise StoreUnavailable(f"no event store at {redact_url(self.url)}: {e}") from e
            raise StoreUnavailable(f"cannot connect to {redact_url(self.url)}: {e}") from e

    def _migrate(self) -> int:
        known = len(migrations.POSTGRES)
        c = self._conn
        while True:
            with c.transaction():
                # Serialise concurrent first starts of a fleet; then look at the version.
                c.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_CLASS,))
                c.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                    "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
                )
                row = c.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"
                ).fetchone()
                version = int(row[0])
                if version > known:
                    raise SchemaTooNew(
                        f"{redact_url(self.url)} has schema version {version}; this egresswatch "
                        f"knows up to {known}: upgrade egresswatch"
                    )
                if version == known:
                    return version
                nxt = version + 1
                c.execute(migrations.POSTGRES[nxt - 1])
                c.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                    (nxt, migrations.MIGRATION_NAMES[nxt - 1], time.time()),
                )
            logger.info("%s: applied schema migration %d", redact_url(self.url), nxt)

    @contextmanager
    def _write_tx(self) -> Iterator[Any]:
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            yield cur

    def _write_failed(self, e: Exception) -> StoreError:
        if self._conn.closed or self._conn.broken:
            return StoreUnavailable(f"connection lost: {e}")
        return StoreError(f"write failed: {e}")

    def _lock_instance(self, c: Any, instance: str) -> None:
        # Held to the end of the transaction: writers (and prune) of one instance take turns,
        # other instances never wait; every caller locks in instance-name order.
        c.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, instance))

    def _insert_events(self, c: Any, rows: list[tuple[Any, ...]]) -> None:
        with c.copy(_COPY) as copy:
            for r in rows:
                copy.write_row(r)

    def _upsert_rollups(self, c: Any, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            c.execute(
                self.upsert_rollups_unnest, [list(column) for column in zip(*rows, strict=True)]
            )

    def _allow_prune(self, c: Any) -> None:
        # Read by the append-only trigger; SET LOCAL ends with this transaction.
        c.execute("SET LOCAL egresswatch.prune = 'on'")

    @contextmanager
    def _snapshot(self) -> Iterator[Any]:
        conn = self._connect()
        try:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.transaction():
                yield conn
        finally:
            conn.close()

    def _stream(self, conn: Any, sql: str, params: Sequence[Any]) -> Iterator[Any]:
        # A server-side cursor: memory stays flat however many rows.
        with conn.cursor(name="egresswatch_stream") as cur:
            cur.itersize = 5000
            cur.execute(self.q(sql), params)
            yield from cur

    def _grouped(self, sql: str, params: Sequence[Any]) -> list[Any]:
        # A connection of its own, so a report's grouped scans run side by side.
        conn = self._connect()
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL work_mem = '{_REPORT_WORK_MEM}'")
                return list(conn.execute(sql, params).fetchall())
        finally:
            conn.close()

    @translate_errors
    def stats(self) -> StoreStats:
        with self._lock:
            rows = self._counts()
            tables = (*TABLES, "schema_migrations")
            (size,) = self._conn.execute(
                "SELECT " + " + ".join(f"pg_total_relation_size('{t}')" for t in tables)
            ).fetchone()
        return StoreStats(self.schema_version, rows, int(size))
