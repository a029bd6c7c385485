"""The event store: the evidence behind every report.

Backends share one protocol, :class:`EventStore`; :func:`open_store` picks one from a URL::

    sqlite:///var/lib/egresswatch/events.db   embedded default (WAL)
    postgresql://user@host/db                 fleet backend (many proxies, one database)
    memory://                                 tests

Every ``write`` is one transaction that appends rows, extends each instance's hash chain and
updates the daily rollups, so reports keep working after raw rows are pruned.

Errors::

    StoreError
     +-- StoreUnavailable      cannot connect / open
     +-- IntegrityError        (verify results are values, not exceptions)
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Protocol

from ..events import Event

__all__ = [
    "ChainHead",
    "EventStore",
    "RollupRow",
    "StoreError",
    "StoreUnavailable",
    "VerifyProblem",
    "VerifyResult",
    "open_store",
]


class StoreError(Exception):
    """Base class for event-store failures."""


class StoreUnavailable(StoreError):
    """The store cannot be opened or reached."""


@dataclass(frozen=True, slots=True)
class RollupRow:
    """Daily aggregate of hit events; ``day`` is an ISO date (UTC)."""

    day: str
    instance: str
    app: str
    regime: str
    action: str
    department: str
    client: str
    host: str
    events: int
    first_seen: float
    last_seen: float


@dataclass(frozen=True, slots=True)
class ChainHead:
    instance: str
    seq: int
    chain_hash: str


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    instance: str
    seq: int | None
    kind: str  # "edited" | "deleted" | "inserted" | "reordered" | "broken"
    message: str

    def __str__(self) -> str:
        where = f"{self.instance}#{self.seq}" if self.seq is not None else self.instance
        return f"{where}: {self.kind}: {self.message}"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    checked: int
    heads: tuple[ChainHead, ...]
    problems: tuple[VerifyProblem, ...] = field(default_factory=tuple)


class EventStore(Protocol):
    url: str

    def write(self, events: Sequence[Event]) -> None:
        """Append events in one transaction (seq, hash chain, rollups)."""

    def rollups(self, start: float, end: float) -> list[RollupRow]:
        """Daily rollups for days in [start, end)."""

    def lifecycle(self, start: float, end: float) -> list[Event]:
        """Non-hit events (start, stop, heartbeat, config) in [start, end), oldest first."""

    def iter_events(self, since: float, until: float) -> Iterator[Event]:
        """All events in [since, until), oldest first, streamed."""

    def verify(self, instance: str | None = None) -> VerifyResult:
        """Recompute every hash chain and name what was edited, deleted, inserted or reordered."""

    def prune(self, before: float) -> int:
        """Delete raw events older than ``before`` (rollups stay); returns rows deleted."""

    def close(self) -> None: ...


def open_store(url: str) -> EventStore:
    """Open the backend named by ``url`` (raises :class:`StoreUnavailable` or ``ValueError``)."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(url)
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        return PostgresStore(url)
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore(url)
    raise ValueError(f"unknown event store URL scheme {scheme!r} (use sqlite://, postgresql:// or memory://)")
