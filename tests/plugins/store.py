"""pytest fixtures: event stores (owned by the store area; loaded from conftest.py).

- ``store_url``: parametrized over ``sqlite``, ``postgres`` and ``memory``; the URL of a fresh,
  empty store (``memory://`` for the memory backend). Any test that takes ``store`` or
  ``store_url`` runs once per backend.
- ``store``: the opened :class:`~egresswatch.store.EventStore` (closed afterwards). For the memory
  backend this is the one ``MemoryStore`` of the test (``open_store("memory://")`` would give a
  new, empty one: use ``store`` rather than reopening the URL).
- ``sql_store_url`` / ``sql_store``: the same for sqlite and postgres only (persistence, SQL).
- ``sqlite_store``: a fresh SQLite store only, for tests that need one fast backend.
- ``tamper``: a :class:`Tamper` for ``store`` that edits rows behind the append-only triggers.
- ``make_event``: a factory of hit events with sensible defaults.
- :func:`stored_events`: every row of a store, by URL.
- :func:`unguarded_sql`: plain SQL on a store, its append-only triggers out of the way.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any

import pytest
from egresswatch.events import Action
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.events import Signal
from egresswatch.store import EventStore
from egresswatch.store import open_store
from egresswatch.store._codec import COLUMNS
from egresswatch.store.memory import MemoryStore
from egresswatch.store.sqlite import sqlite_path

BACKENDS = ("sqlite", "postgres", "memory")


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'events.db'}"
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return "memory://"


@pytest.fixture(params=("sqlite", "postgres"))
def sql_store_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """Like ``store_url`` for the two persistent (SQL) backends only."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'events.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def sql_store(sql_store_url: str) -> Iterator[EventStore]:
    s = open_store(sql_store_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def store(store_url: str) -> Iterator[EventStore]:
    s = open_store(store_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def sqlite_store(tmp_path: Any) -> Iterator[EventStore]:
    s = open_store(f"sqlite://{tmp_path / 'events.db'}")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def make_event() -> Callable[..., Event]:
    counter = iter(range(1, 10**9))

    def make(**kw: Any) -> Event:
        n = next(counter)
        values: dict[str, Any] = {
            "ts": 1_785_000_000.0 + n,  # 2026-07-25
            "kind": EventKind.HIT,
            "instance": "proxy-1",
            "event_id": f"ev{n:06d}",
            "signal": Signal.SNI,
            "host": "www.tiktok.com",
            "app": "tiktok",
            "regimes": ("us-far-52-204-27",),
            "action": Action.BLOCKED,
            "rule": "tiktok.com",
            "client": "10.0.0.7",
            "department": "sales",
            "catalogue_version": "c" * 64,
            "policy_version": "p" * 64,
        }
        values.update(kw)
        return Event(**values)

    return make


def stored_events(url: str) -> list[Event]:
    """Every row of the store at ``url``, oldest first (opened and closed for this)."""
    store = open_store(url)
    try:
        return list(store.iter_events(0.0, time.time() + 3600))
    finally:
        store.close()


#: The append-only triggers :func:`unguarded_sql` takes out of the way on SQLite.
GUARD_TRIGGERS = (
    "events_no_update",
    "events_no_delete",
    "verifications_no_update",
    "verifications_no_delete",
)


def unguarded_sql(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run ``sql`` on the store at ``url`` as an attacker with the database would: triggers out
    of the way (SQLite: dropped; PostgreSQL: a superuser's ``session_replication_role =
    replica``). ``?`` marks parameters on both."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(sqlite_path(url), isolation_level=None)
        try:
            for t in GUARD_TRIGGERS:
                conn.execute(f"DROP TRIGGER IF EXISTS {t}")
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # triggers off (superuser)
        cur = conn.execute(sql.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []


class Tamper:
    """Change stored events directly, bypassing the append-only triggers, as an attacker would."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.url = store.url

    # -- raw access -----------------------------------------------------------------------

    def _sql(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return unguarded_sql(self.url, sql, params)

    @property
    def _memory(self) -> MemoryStore:
        assert isinstance(self.store, MemoryStore)
        return self.store

    def _is_memory(self) -> bool:
        return isinstance(self.store, MemoryStore)

    # -- attacks --------------------------------------------------------------------------

    def edit(self, instance: str, seq: int, column: str, value: Any) -> None:
        if self._is_memory():
            i = COLUMNS.index(column)
            m = self._memory
            m.rows = [
                (*r[:i], value, *r[i + 1 :]) if r[0] == instance and r[1] == seq else r
                for r in m.rows
            ]
            return
        self._sql(
            f'UPDATE events SET "{column}" = ? WHERE instance = ? AND seq = ?',
            (value, instance, seq),
        )

    def delete(self, instance: str, seq: int) -> None:
        if self._is_memory():
            m = self._memory
            m.rows = [r for r in m.rows if not (r[0] == instance and r[1] == seq)]
            return
        self._sql("DELETE FROM events WHERE instance = ? AND seq = ?", (instance, seq))

    def row(self, instance: str, seq: int) -> tuple[Any, ...]:
        if self._is_memory():
            return next(r for r in self._memory.rows if r[0] == instance and r[1] == seq)
        cols = ", ".join(f'"{c}"' for c in COLUMNS)
        return self._sql(
            f"SELECT {cols} FROM events WHERE instance = ? AND seq = ?", (instance, seq)
        )[0]

    def insert(self, values: tuple[Any, ...]) -> None:
        if self._is_memory():
            self._memory.rows.append(values)
            return
        cols = ", ".join(f'"{c}"' for c in COLUMNS)
        marks = ", ".join("?" * len(COLUMNS))
        self._sql(f"INSERT INTO events ({cols}) VALUES ({marks})", values)

    def insert_copy(self, instance: str, seq: int, **changes: Any) -> None:
        """Insert a second row at ``seq``: a copy of the real one with ``changes``."""
        values = dict(zip(COLUMNS, self.row(instance, seq), strict=True))
        values.update(changes)
        self.insert(tuple(values[c] for c in COLUMNS))

    def set_head(self, instance: str, seq: int, chain_hash: str) -> None:
        """Rewrite the recorded chain head (to hide rows cut from the tail)."""
        if self._is_memory():
            self._memory.heads[instance] = (seq, chain_hash)
            return
        self._sql(
            "UPDATE chain_heads SET seq = ?, chain_hash = ? WHERE instance = ?",
            (seq, chain_hash, instance),
        )

    def swap(self, instance: str, a: int, b: int) -> None:
        """Exchange the positions of two events (their seq), keeping everything else."""
        if self._is_memory():
            m = self._memory
            swapped = []
            for r in m.rows:
                if r[0] == instance and r[1] in (a, b):
                    r = (r[0], b if r[1] == a else a, *r[2:])
                swapped.append(r)
            m.rows = swapped
            return
        self._sql(
            "UPDATE events SET seq = CASE WHEN seq = ? THEN ? ELSE ? END "
            "WHERE instance = ? AND seq IN (?, ?)",
            (a, b, a, instance, a, b),
        )


@pytest.fixture
def tamper(store: EventStore) -> Tamper:
    return Tamper(store)
