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
     +-- SchemaTooNew          the database was migrated by a newer egresswatch
     +-- InvalidEvent          an event cannot be encoded (not retryable; ``index`` names it)
    (verify results are values, not exceptions: :class:`VerifyResult`)

The schema, hash chain, rollup key and retention are described in ``docs/store.md``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from typing import Protocol

from ..events import Event

__all__ = [
    "BACKENDS",
    "SCHEMES",
    "ChainHead",
    "EACH_REGIME",
    "EventStore",
    "InvalidEvent",
    "ROLLUP_DIMENSIONS",
    "RollupRow",
    "RollupSummary",
    "SchemaTooNew",
    "StoreError",
    "StoreStats",
    "StoreUnavailable",
    "VerificationRun",
    "VerifyProblem",
    "VerifyResult",
    "backend_of",
    "default_data_dir",
    "default_store_url",
    "open_store",
    "redact_url",
]


class StoreError(Exception):
    """Base class for event-store failures."""


class StoreUnavailable(StoreError):
    """The store cannot be opened or reached."""


class SchemaTooNew(StoreError):
    """The database carries schema migrations this version of egresswatch does not know."""


class InvalidEvent(StoreError, ValueError):
    """``events[index]`` cannot be encoded (e.g. ``detail`` is not JSON-able); nothing was written.

    Retrying the same batch cannot succeed: the writer drops that one event (counted) and retries
    the rest.
    """

    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"event #{index} cannot be stored: {message}")
        self.index = index


@dataclass(frozen=True, slots=True)
class RollupRow:
    """Daily aggregate of hit events; ``day`` is an ISO date (UTC).

    One row per (day, instance, app, regime, action, department, client, host). Absent values
    (no department, no client identity, ...) are ``""``.

    ``regime`` is the event's ``regimes`` **sorted and joined with ","** (``""`` when the app has
    none), so every hit is counted in exactly one rollup row: summing ``events`` per app never
    double-counts. For a per-regime view split it: ``row.regime_list`` (an app under two regimes
    then counts once under each regime, which is what a per-regime table wants).
    """

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

    @property
    def regime_list(self) -> tuple[str, ...]:
        """The regimes of this row's app (``()`` when none)."""
        return tuple(self.regime.split(",")) if self.regime else ()


ROLLUP_DIMENSIONS = ("day", "instance", "app", "regime", "action", "department", "client", "host")
#: ``summarise`` may also group by each single regime of a row's ``regime`` list: a row under
#: ``"a,b"`` counts once under ``a`` and once under ``b`` (``""`` when the app has none).
EACH_REGIME = "each_regime"


@dataclass(frozen=True, slots=True)
class RollupSummary:
    """Rollups grouped in the database (``EventStore.summarise``): one row per ``key``.

    ``key`` holds the values of the ``by`` dimensions, in that order. ``distinct_clients`` counts
    non-empty client identities, distinct over the whole group (counted in SQL over the rollup
    rows, never by adding daily figures). ``apps`` (the distinct apps of the group, sorted) is
    filled only by a ``top=N`` query. For a month of 10M events the raw rollups run to about a
    million rows; grouping them in SQL keeps a report's reads to a few hundred.
    """

    key: tuple[str, ...]
    events: int
    distinct_clients: int
    first_seen: float
    last_seen: float
    apps: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Row counts per table and the bytes the database occupies (``-1`` when unknown)."""

    schema_version: int
    rows: dict[str, int]
    bytes: int


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
class VerificationRun:
    """One instance's part of one verification run, as recorded in the ``verifications`` table.

    Rows ``from_seq..to_seq`` of ``instance`` were recomputed (``checked`` rows read) and the
    chain ended at ``to_seq`` with ``chain_hash``. ``mode`` is ``"full"`` (from the first row, or
    from the prune checkpoint) or ``"incremental"`` (continuing from run ``base_id``, whose head
    it checked continuity from). ``id`` is ``None`` when the run could not be recorded (e.g. a
    read-only database).
    """

    id: int | None
    instance: str
    mode: str  # "full" | "incremental"
    from_seq: int
    to_seq: int
    chain_hash: str
    ok: bool
    problems: int
    checked: int
    base_id: int | None
    started_at: float
    finished_at: float


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What :meth:`EventStore.verify` found.

    ``checked`` counts the rows read by this run (an incremental run reads only rows after the
    last verified head). ``runs`` holds this run's record per instance; ``history`` the earlier
    successful runs an incremental run builds on, per instance oldest first (back to the full
    run that started the chain of runs), so that a report can say which rows were verified when.
    """

    ok: bool
    checked: int
    heads: tuple[ChainHead, ...]
    problems: tuple[VerifyProblem, ...] = field(default_factory=tuple)
    per_instance: dict[str, int] = field(default_factory=dict)  # instance -> rows checked
    mode: str = "full"  # what was asked for: "full" | "incremental"
    runs: tuple[VerificationRun, ...] = field(default_factory=tuple)
    history: tuple[VerificationRun, ...] = field(default_factory=tuple)

    def covered(self, instance: str) -> tuple[int, int] | None:
        """The seq range of ``instance`` verified by this run and the runs it builds on."""
        run = next((r for r in self.runs if r.instance == instance), None)
        if run is None:
            return None
        earlier = [h.from_seq for h in self.history if h.instance == instance]
        return (min([run.from_seq, *earlier]), run.to_seq)


class EventStore(Protocol):
    url: str

    def write(self, events: Sequence[Event]) -> None:
        """Append events in one transaction (seq, hash chain, rollups)."""

    def rollups(self, start: float, end: float) -> list[RollupRow]:
        """Daily rollups for days in [start, end)."""

    def lifecycle(self, start: float, end: float) -> list[Event]:
        """Non-hit events (start, stop, heartbeat, config) in [start, end), oldest first,
        including those that :meth:`prune` moved to the lifecycle archive."""

    def iter_events(self, since: float, until: float) -> Iterator[Event]:
        """All events in [since, until), oldest first, streamed."""

    def verify(
        self, instance: str | None = None, *, full: bool = True, record: bool = True
    ) -> VerifyResult:
        """Recompute the hash chains and name what was edited, deleted, inserted or reordered.

        ``full=True`` recomputes every row (from the prune checkpoint, if any).
        ``full=False`` is incremental: per instance it starts after the head of the latest
        verification run when that run was successful (checking that the row at that head still
        carries the chain hash it verified, and that the chain continues from it), else it
        verifies in full. Edits to rows verified earlier are caught by the next full run.
        ``record=True`` stores the run in the ``verifications`` table.
        """

    def verifications(self, instance: str | None = None) -> list[VerificationRun]:
        """Recorded verification runs (one row per instance per run), oldest first."""

    def prune(self, before: float) -> int:
        """Delete raw events older than ``before`` (rollups stay); returns rows deleted.

        Per instance only a gap-free prefix of the chain is deleted (up to the first event at or
        after ``before``), and a checkpoint (last pruned seq, its chain hash) is recorded so that
        :meth:`verify` starts from it. Non-hit rows (start, stop, heartbeat, config) are copied
        to the ``lifecycle_archive`` table in the same transaction, so coverage and configuration
        can still be reported.
        """

    def summarise(
        self,
        start: float,
        end: float,
        by: Sequence[str],
        *,
        top: int | None = None,
        clients: bool = True,
    ) -> list[RollupSummary]:
        """Rollups for days in [start, end) grouped by ``by`` (names from ROLLUP_DIMENSIONS or
        :data:`EACH_REGIME`), ordered by key (code-point order). ``by=()`` gives one grand total
        (or nothing when there are no rows).

        ``top=N`` (one dimension only): the N groups with the most events whose key is not empty,
        most events first (ties by key), each with its distinct ``apps``. ``clients=False`` skips
        counting distinct clients (``distinct_clients`` is then 0): much cheaper where the
        figure is not needed.
        """

    def chain_hashes_at(self, instance: str, seqs: Sequence[int]) -> dict[int, list[str]]:
        """The stored chain hashes of ``instance``'s rows at each seq of ``seqs`` (a seq with
        no row is absent; more than one hash means a duplicate seq)."""

    def prune_points(self) -> dict[str, tuple[int, str]]:
        """Per instance, the last pruned seq and its chain hash (what ``prune`` recorded)."""

    def hit_groups(self) -> tuple[list[tuple[Any, ...]], dict[str, float]]:
        """The hit rows grouped as rollups would be, in the database: ``(day number (ts //
        86400), instance, app, regimes JSON, decided_by, decided_id (None when absent), action,
        department, client, host, count, min ts, max ts)`` (other absent values ``""``); and per pruned instance the ts of its first row
        kept after the prune point. What :func:`egresswatch.witness.verify_rollups` recounts."""

    def chain_heads(self) -> list[ChainHead]:
        """The last written seq and chain hash of every instance."""

    def instances(self) -> list[str]:
        """Every instance that ever wrote to this store, sorted."""

    def stats(self) -> StoreStats:
        """Row counts and size."""

    def close(self) -> None: ...


def default_data_dir() -> Path:
    """``$EGRESSWATCH_DATA_DIR``, else ``$XDG_DATA_HOME/egresswatch``, else ``~/.local/share/egresswatch``."""
    env = os.environ.get("EGRESSWATCH_DATA_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        return Path(xdg) / "egresswatch"
    return Path.home() / ".local" / "share" / "egresswatch"


def default_store_url(data_dir: str | None = None) -> str:
    """The embedded store in ``data_dir`` (default :func:`default_data_dir`).

    >>> default_store_url("/var/lib/egresswatch")
    'sqlite:///var/lib/egresswatch/events.db'
    """
    base = Path(data_dir) if data_dir else default_data_dir()
    return f"sqlite://{(base.expanduser().absolute() / 'events.db').as_posix()}"


def redact_url(url: str) -> str:
    """``url`` fit to print: a password (in the user info or a ``password=`` parameter) is
    replaced by ``***``.

    >>> redact_url("postgresql://egw:p@ss/word@db:5432/events?sslmode=require&password=x")
    'postgresql://egw:***@db:5432/events?sslmode=require&password=***'
    """
    base, q, query = url.partition("?")
    scheme, sep, rest = base.partition("://")
    cred, at, host = rest.rpartition("@")
    if sep and at and ":" in cred:
        base = f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"
    if q:
        query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", query)
    return f"{base}{q}{query}"


#: The backends, by the name metrics and logs give them.
BACKENDS: tuple[str, ...] = ("sqlite", "postgresql", "memory")
#: Store URL scheme -> backend (``postgres://`` is accepted for ``postgresql://``, as libpq does).
SCHEMES: Mapping[str, str] = MappingProxyType(
    {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql", "memory": "memory"}
)


def backend_of(url: str) -> str:
    """The backend a store URL names; ValueError (naming the schemes) for any other scheme.

    >>> backend_of("postgres://egw@db/events"), backend_of("SQLite:///a.db")
    ('postgresql', 'sqlite')
    """
    scheme = url.split(":", 1)[0].lower()
    try:
        return SCHEMES[scheme]
    except KeyError:
        raise ValueError(
            f"unknown event store URL scheme {scheme!r} (use sqlite://, postgresql:// or memory://)"
        ) from None


def open_store(url: str, *, create: bool = True) -> EventStore:
    """Open the backend named by ``url`` (raises :class:`StoreUnavailable` or ``ValueError``).

    ``create=False`` (the read commands) opens only an existing store: a missing SQLite file,
    a missing PostgreSQL database, or one without the egresswatch schema raises
    :class:`StoreUnavailable` ("no event store at ...") and nothing is created.
    """
    backend = backend_of(url)
    if backend == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(url, create=create)
    if backend == "postgresql":
        from .postgres import PostgresStore

        return PostgresStore(url, create=create)
    from .memory import MemoryStore

    return MemoryStore(url)
