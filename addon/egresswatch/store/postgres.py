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

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
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

try:
    import psycopg
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None  # type: ignore[assignment]

__all__ = ["PostgresStore"]

logger = logging.getLogger(__name__)

LOCK_CLASS = 7391  # advisory-lock namespace of egresswatch (first key of the two-int form)
_COPY = f"COPY events ({_codec.COLUMN_SQL}) FROM STDIN"
_UPSERT_ROLLUP = """
INSERT INTO rollups (day, instance, app, regime, action, department, client, host,
                     events, first_seen, last_seen)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (day, instance, app, regime, action, department, client, host) DO UPDATE SET
    events = rollups.events + excluded.events,
    first_seen = LEAST(rollups.first_seen, excluded.first_seen),
    last_seen = GREATEST(rollups.last_seen, excluded.last_seen)
"""
_UPSERT_HEAD = """
INSERT INTO chain_heads (instance, seq, chain_hash) VALUES (%s, %s, %s)
ON CONFLICT (instance) DO UPDATE SET seq = excluded.seq, chain_hash = excluded.chain_hash
"""
_SELECT = f"SELECT {_codec.COLUMN_SQL} FROM events"
_TABLES = (
    "events",
    "rollups",
    "chain_heads",
    "checkpoints",
    "schema_migrations",
    "verifications",
    "lifecycle_archive",
)
_LIFECYCLE = (
    f"SELECT {_codec.COLUMN_SQL} FROM events WHERE ts >= %s AND ts < %s AND kind <> 'hit' "
    f"UNION ALL SELECT {_codec.ARCHIVE_AS_EVENTS_SQL} FROM lifecycle_archive "
    "WHERE ts >= %s AND ts < %s ORDER BY 4, 1, 2"
)
_ARCHIVE = (
    f"INSERT INTO lifecycle_archive ({_codec.ARCHIVE_COLUMN_SQL}, archived_at) "
    f"SELECT {_codec.ARCHIVE_COLUMN_SQL}, %s FROM events "
    "WHERE instance = %s AND seq <= %s AND kind <> 'hit'"
)
_RECORD_COLUMNS = _codec.VERIFICATION_COLUMNS[1:]  # id from the sequence
_RECORD = (
    f"INSERT INTO verifications ({', '.join(_RECORD_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(_RECORD_COLUMNS))}) RETURNING id"
)
_RUNS = f"SELECT {_codec.VERIFICATION_SQL} FROM verifications"
# Grouping a month of rollups sorts about a million rows: give those sorts memory, per query.
_REPORT_WORK_MEM = "128MB"


def _store_errors[F: Callable[..., Any]](fn: F) -> F:
    """Turn driver errors into :class:`StoreError` (callers handle one exception family)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except psycopg.Error as e:
            raise StoreError(f"{fn.__name__} failed: {e}") from e

    return cast(F, wrapper)


class PostgresStore:
    """The fleet backend. Thread-safe (one lock around the connection)."""

    def __init__(self, url: str) -> None:
        if psycopg is None:
            raise StoreUnavailable(
                "PostgreSQL store needs psycopg: pip install 'egresswatch[postgres]'"
            )
        self.url = url
        self._lock = threading.Lock()
        self._conn = self._connect()
        try:
            self.schema_version = self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def _connect(self) -> Any:
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as e:
            raise StoreUnavailable(f"cannot connect to {_redact(self.url)}: {e}") from e

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
                        f"{_redact(self.url)} has schema version {version}; this egresswatch "
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
            logger.info("%s: applied schema migration %d", _redact(self.url), nxt)

    def write(self, events: Sequence[Event]) -> None:
        if not events:
            return
        encoded = _codec.encode(events)
        deltas = _codec.rollup_deltas(events)
        instances = sorted({e.instance for e in events})
        with self._lock:
            try:
                with self._conn.transaction(), self._conn.cursor() as cur:
                    for inst in instances:
                        cur.execute(
                            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, inst)
                        )
                    cur.execute(
                        "SELECT instance, seq, chain_hash FROM chain_heads WHERE instance = ANY(%s)",
                        (instances,),
                    )
                    heads = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
                    rows, new_heads = _codec.build_rows(encoded, heads)
                    with cur.copy(_COPY) as copy:
                        for r in rows:
                            copy.write_row(r)
                    cur.executemany(
                        _UPSERT_ROLLUP,
                        [(*k, n, first, last) for k, (n, first, last) in deltas.items()],
                    )
                    cur.executemany(_UPSERT_HEAD, [(i, *new_heads[i]) for i in instances])
            except psycopg.Error as e:
                if self._conn.closed or self._conn.broken:
                    raise StoreUnavailable(f"connection lost: {e}") from e
                raise StoreError(f"write failed: {e}") from e

    @_store_errors
    def rollups(self, start: float, end: float) -> list[RollupRow]:
        first, last = _codec.day_range(start, end)
        with self._lock:
            rows = self._conn.execute(
                "SELECT day, instance, app, regime, action, department, client, host, events, "
                "first_seen, last_seen FROM rollups WHERE day >= %s AND day <= %s "
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
        sql = _codec.summary_sql(by, "%s", top, clients)
        # A connection of its own, so a report's grouped scans run side by side.
        conn = self._connect()
        try:
            with conn.transaction():
                conn.execute(f"SET LOCAL work_mem = '{_REPORT_WORK_MEM}'")
                rows = conn.execute(sql, (first, last)).fetchall()
        finally:
            conn.close()
        return _codec.summaries(rows, len(by), top)

    @_store_errors
    def lifecycle(self, start: float, end: float) -> list[Event]:
        with self._lock:
            rows = self._conn.execute(_LIFECYCLE, (start, end, start, end)).fetchall()
        return [_codec.row_to_event(r) for r in rows]

    def _stream(self, sql: str, params: Sequence[Any], snapshot: bool = False) -> Iterator[Any]:
        """Rows through a server-side cursor on a connection of its own."""
        conn = self._connect()
        try:
            if snapshot:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.transaction(), conn.cursor(name="egresswatch_stream") as cur:
                cur.itersize = 2000
                cur.execute(sql, params)
                yield from cur
        finally:
            conn.close()

    def iter_events(self, since: float, until: float) -> Iterator[Event]:
        for r in self._stream(
            f"{_SELECT} WHERE ts >= %s AND ts < %s ORDER BY ts, instance, seq", (since, until)
        ):
            yield _codec.row_to_event(r)

    @_store_errors
    def verify(
        self, instance: str | None = None, *, full: bool = True, record: bool = True
    ) -> VerifyResult:
        started = time.time()
        conn = self._connect()
        try:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.transaction():  # one snapshot for heads, checkpoints, runs and rows
                heads = {
                    r[0]: (int(r[1]), r[2])
                    for r in conn.execute("SELECT instance, seq, chain_hash FROM chain_heads")
                }
                if instance is not None:
                    heads = {k: v for k, v in heads.items() if k == instance}
                cps = {
                    r[0]: (int(r[1]), r[2])
                    for r in conn.execute("SELECT instance, seq, chain_hash FROM checkpoints")
                }
                latest = {}
                if not full:
                    latest = {
                        r[1]: _codec.verification_run(r)
                        for r in conn.execute(
                            f"{_RUNS} WHERE id IN "
                            "(SELECT MAX(id) FROM verifications GROUP BY instance)"
                        )
                    }
                starts = _codec.plan(heads, cps, latest, full)
                anchors: dict[str, list[str]] = {}
                for name, st in starts.items():
                    if st.base is not None:
                        anchors[name] = [
                            r[0]
                            for r in conn.execute(
                                "SELECT chain_hash FROM events WHERE instance = %s AND seq = %s",
                                (name, st.seq),
                            )
                        ]
                with conn.cursor(name="egresswatch_verify") as cur:
                    cur.itersize = 5000
                    if full and instance is None:
                        cur.execute(f"{_SELECT} ORDER BY instance, seq, id")
                    elif full:
                        cur.execute(f"{_SELECT} WHERE instance = %s ORDER BY seq, id", (instance,))
                    else:
                        # Per instance, rows after the verified head (or all of them).
                        lower = {
                            n: (st.seq if st.base is not None else -1) for n, st in starts.items()
                        }
                        names = sorted(lower)
                        cur.execute(
                            f"{_SELECT} JOIN unnest(%s::text[], %s::bigint[]) AS s(i, lo) "
                            "ON instance = s.i AND seq > s.lo ORDER BY instance, seq, id",
                            (names, [lower[n] for n in names]),
                        )
                    result = _codec.verify_stream(cur, heads, cps, instance, starts, anchors)

                def lookup(run_id: int) -> VerificationRun | None:
                    row = conn.execute(f"{_RUNS} WHERE id = %s", (run_id,)).fetchone()
                    return None if row is None else _codec.verification_run(row)

                earlier = _codec.history(starts, lookup)
        finally:
            conn.close()
        runs = _codec.run_records(result, starts, started, time.time())
        if record:
            runs = self._record(runs)
        return _codec.with_runs(result, "full" if full else "incremental", runs, earlier)

    def _record(self, runs: list[VerificationRun]) -> list[VerificationRun]:
        """Store this run; a store we cannot write to (read-only role) keeps ids ``None``."""
        out = []
        try:
            with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
                for run in runs:
                    cur.execute(_RECORD, dataclasses.astuple(run)[1:])
                    (run_id,) = cur.fetchone()
                    out.append(dataclasses.replace(run, id=int(run_id)))
        except psycopg.Error as e:
            logger.warning("%s: could not record the verification run: %s", _redact(self.url), e)
            return runs
        return out

    @_store_errors
    def verifications(self, instance: str | None = None) -> list[VerificationRun]:
        with self._lock:
            if instance is None:
                rows = self._conn.execute(f"{_RUNS} ORDER BY id").fetchall()
            else:
                rows = self._conn.execute(
                    f"{_RUNS} WHERE instance = %s ORDER BY id", (instance,)
                ).fetchall()
        return [_codec.verification_run(r) for r in rows]

    @_store_errors
    def prune(self, before: float) -> int:
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute("SET LOCAL egresswatch.prune = 'on'")
            deleted = 0
            for (inst,) in cur.execute(
                "SELECT instance FROM chain_heads ORDER BY instance"
            ).fetchall():
                cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, inst))
                (first_kept,) = cur.execute(
                    "SELECT MIN(seq) FROM events WHERE instance = %s AND ts >= %s", (inst, before)
                ).fetchone()
                if first_kept is not None:
                    cut = first_kept - 1
                else:
                    (cut,) = cur.execute(
                        "SELECT COALESCE(MAX(seq), 0) FROM events WHERE instance = %s", (inst,)
                    ).fetchone()
                last = cur.execute(
                    "SELECT seq, chain_hash FROM events WHERE instance = %s AND seq <= %s "
                    "ORDER BY seq DESC, id DESC LIMIT 1",
                    (inst, cut),
                ).fetchone()
                if last is None:
                    continue
                # Coverage and configuration outlive the raw events (same transaction).
                cur.execute(_ARCHIVE, (time.time(), inst, cut))
                cur.execute("DELETE FROM events WHERE instance = %s AND seq <= %s", (inst, cut))
                deleted += cur.rowcount
                cur.execute(
                    "INSERT INTO checkpoints (instance, seq, chain_hash, pruned_at) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (instance) DO UPDATE SET "
                    "seq = excluded.seq, chain_hash = excluded.chain_hash, "
                    "pruned_at = excluded.pruned_at",
                    (inst, last[0], last[1], time.time()),
                )
            return deleted

    @_store_errors
    def chain_heads(self) -> list[ChainHead]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT instance, seq, chain_hash FROM chain_heads ORDER BY instance"
            ).fetchall()
        return [ChainHead(r[0], int(r[1]), r[2]) for r in rows]

    def instances(self) -> list[str]:
        return [h.instance for h in self.chain_heads()]

    @_store_errors
    def stats(self) -> StoreStats:
        with self._lock:
            c = self._conn
            rows = {
                t: int(c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                for t in _TABLES
                if t != "schema_migrations"
            }
            (size,) = c.execute(
                "SELECT " + " + ".join(f"pg_total_relation_size('{t}')" for t in _TABLES)
            ).fetchone()
        return StoreStats(self.schema_version, rows, int(size))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _redact(url: str) -> str:
    """The URL without a password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    user = cred.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"
