"""Numbered schema migrations, one list per backend (same numbers, same meaning).

Applied at open inside a transaction each; ``schema_migrations(version, name, applied_at)``
records them. A database whose highest version is above ``len(MIGRATION_NAMES)`` was written by a
newer egresswatch and is refused (:class:`~egresswatch.store.SchemaTooNew`).

Append a migration by adding one entry to *both* lists; never edit a released one. The event
columns of migrations 1 and 3 are written out from the event schema (``events.EVENT_FIELDS``), so
a new field there changes their text: ``tests/test_store_migrations.py`` pins the released texts;
give them the field list they were released with and add the column in a new migration.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..events import EVENT_FIELDS
from ..events import EventField

__all__ = ["MIGRATION_NAMES", "POSTGRES", "SQLITE"]

# SQL names that must be quoted ("user" is reserved in PostgreSQL).
_RESERVED = frozenset({"user"})


def _column_lines(fields: Iterable[EventField]) -> str:
    """``\n    name TYPE,`` per field, as the CREATE TABLE statements below embed them."""
    return "".join(
        f"\n    {f'"{f.name}"' if f.name in _RESERVED else f.name} {f.sql}," for f in fields
    )


# The event columns from the one event schema (``egresswatch.events.EVENT_FIELDS``), shared by
# ``events`` (1) and ``lifecycle_archive`` (3): the event's own columns, then the hashes each
# table keeps. Types per backend: ``int_type`` INTEGER / BIGINT, ``real_type`` REAL / DOUBLE
# PRECISION. The text is what the released migrations ran (tests/test_store_migrations.py).
#: The event fields migrations 1 and 3 were released with; later ones are added by ALTER TABLE.
_RELEASED = tuple(f for f in EVENT_FIELDS if not f.optional)
_EVENT_COLUMNS = _column_lines(f for f in _RELEASED if f.kind != "hash")
_EVENT_HASHES = _column_lines(f for f in _RELEASED if f.kind == "hash").rstrip(",")
_ARCHIVE_HASHES = _column_lines(f for f in _RELEASED if f.kind == "hash" and f.archived)


def _sqlite_append_only(table: str, subject: str) -> str:
    """Triggers that refuse every UPDATE and DELETE on ``table`` (not ``events``, which may be
    pruned); ``subject`` starts the message ("verifications are")."""
    return f"""
CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
BEGIN
    SELECT RAISE(ABORT, 'egresswatch {subject} append-only');
END;
CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
BEGIN
    SELECT RAISE(ABORT, 'egresswatch {subject} append-only');
END;
"""


def _postgres_append_only(table: str, subject: str, function: str) -> str:
    """The same for PostgreSQL, TRUNCATE included, through ``egresswatch_<function>_append_only``."""
    fn = f"egresswatch_{function}_append_only"
    return f"""
CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'egresswatch {subject} append-only (%)', TG_OP;
END
$$;
CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION {fn}();
CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION {fn}();
"""


# 1: the tables; the append-only triggers differ per backend and follow below.
_TABLES = """
CREATE TABLE events (
    id {id_type} PRIMARY KEY,{columns}{hashes}
);
-- Not UNIQUE on purpose: the writer guarantees one seq per row (a write lock or advisory lock
-- around reading the chain head), and verify must be able to see (and name) a duplicate someone
-- slipped in.
CREATE INDEX events_instance_seq ON events (instance, seq);
CREATE INDEX events_ts ON events (ts);
CREATE TABLE rollups (
    day TEXT NOT NULL,
    instance TEXT NOT NULL,
    app TEXT NOT NULL,
    regime TEXT NOT NULL,
    action TEXT NOT NULL,
    department TEXT NOT NULL,
    client TEXT NOT NULL,
    host TEXT NOT NULL,
    events {int_type} NOT NULL,
    first_seen {real_type} NOT NULL,
    last_seen {real_type} NOT NULL,
    PRIMARY KEY (day, instance, app, regime, action, department, client, host)
){rollups_options};
CREATE TABLE chain_heads (
    instance TEXT PRIMARY KEY,
    seq {int_type} NOT NULL,
    chain_hash TEXT NOT NULL
);
CREATE TABLE checkpoints (
    instance TEXT PRIMARY KEY,
    seq {int_type} NOT NULL,
    chain_hash TEXT NOT NULL,
    pruned_at {real_type} NOT NULL
);
"""
# What differs per backend in the CREATE TABLE texts: (SQLite, PostgreSQL).
_TYPES = {
    "int_type": ("INTEGER", "BIGINT"),
    "real_type": ("REAL", "DOUBLE PRECISION"),
    "id_type": ("INTEGER", "BIGSERIAL"),
    "rollups_options": (" WITHOUT ROWID", ""),
}
_SQLITE_TYPES = {k: v[0] for k, v in _TYPES.items()}
_POSTGRES_TYPES = {k: v[1] for k, v in _TYPES.items()}

_SQLITE_1 = (
    _TABLES.format(
        columns=_EVENT_COLUMNS.format(**_SQLITE_TYPES), hashes=_EVENT_HASHES, **_SQLITE_TYPES
    )
    + """CREATE TABLE prune_guard (id INTEGER PRIMARY KEY CHECK (id = 1), allowed INTEGER NOT NULL);
INSERT INTO prune_guard (id, allowed) VALUES (1, 0);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'egresswatch events are append-only');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
WHEN (SELECT allowed FROM prune_guard WHERE id = 1) = 0
BEGIN
    SELECT RAISE(ABORT, 'egresswatch events are append-only (prune with: egresswatch db prune)');
END;
"""
)

_POSTGRES_1 = (
    _TABLES.format(
        columns=_EVENT_COLUMNS.format(**_POSTGRES_TYPES), hashes=_EVENT_HASHES, **_POSTGRES_TYPES
    )
    + """CREATE FUNCTION egresswatch_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- prune() runs SET LOCAL egresswatch.prune = 'on' inside its own transaction.
    IF TG_OP = 'DELETE' AND current_setting('egresswatch.prune', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'egresswatch events are append-only (%)', TG_OP;
END
$$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION egresswatch_events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION egresswatch_events_append_only();
"""
)

# 2: one row per instance per verification run, so a later run can continue from a verified head.
_VERIFICATIONS = """
CREATE TABLE verifications (
    id {id_type} PRIMARY KEY,
    instance TEXT NOT NULL,
    mode TEXT NOT NULL,
    from_seq {int_type} NOT NULL,
    to_seq {int_type} NOT NULL,
    chain_hash TEXT NOT NULL,
    ok BOOLEAN NOT NULL,
    problems INTEGER NOT NULL,
    checked {int_type} NOT NULL,
    base_id {int_type},
    started_at {real_type} NOT NULL,
    finished_at {real_type} NOT NULL
);
CREATE INDEX verifications_instance ON verifications (instance, id);
"""
_SQLITE_2 = _VERIFICATIONS.format(**_SQLITE_TYPES)
_POSTGRES_2 = _VERIFICATIONS.format(**_POSTGRES_TYPES)

# 3: non-hit rows that prune() removes are kept here (coverage and configuration outlive the raw
# events). Same columns as events without the leaf hash; seq and chain_hash kept for reference.
_ARCHIVE = """
CREATE TABLE lifecycle_archive ({columns}{hashes}
    archived_at {real_type} NOT NULL
);
-- Not UNIQUE: a duplicate someone slipped into events must not make prune fail.
CREATE INDEX lifecycle_archive_instance_seq ON lifecycle_archive (instance, seq);
CREATE INDEX lifecycle_archive_ts ON lifecycle_archive (ts);
"""
_SQLITE_3 = _ARCHIVE.format(
    columns=_EVENT_COLUMNS.format(**_SQLITE_TYPES), hashes=_ARCHIVE_HASHES, **_SQLITE_TYPES
) + _sqlite_append_only("lifecycle_archive", "lifecycle_archive is")
_POSTGRES_3 = _ARCHIVE.format(
    columns=_EVENT_COLUMNS.format(**_POSTGRES_TYPES), hashes=_ARCHIVE_HASHES, **_POSTGRES_TYPES
) + _postgres_append_only("lifecycle_archive", "lifecycle_archive is", "archive")

# 4: the verification records are evidence too (an incremental run builds on them, the signed
# checkpoints commit to them): append-only, like events.
_SQLITE_4 = _sqlite_append_only("verifications", "verifications are")
_POSTGRES_4 = _postgres_append_only("verifications", "verifications are", "verifications")

# 5: the rule that decided a hit (issue 12, item 3): its kind and id, in events and in the
# lifecycle archive (which keeps every event column). NULL in older rows, whose leaf hash does
# not cover the fields (``EventField.optional``). The same text for both backends.
_5 = """
ALTER TABLE events ADD COLUMN decided_by TEXT;
ALTER TABLE events ADD COLUMN decided_id TEXT;
ALTER TABLE lifecycle_archive ADD COLUMN decided_by TEXT;
ALTER TABLE lifecycle_archive ADD COLUMN decided_id TEXT;
"""

MIGRATION_NAMES: tuple[str, ...] = (
    "events, rollups, chain heads, checkpoints, append-only",
    "verifications (recorded verification runs)",
    "lifecycle_archive (non-hit rows kept through prune)",
    "verifications append-only",
    "events: the deciding rule (decided_by, decided_id)",
)
SQLITE: tuple[str, ...] = (_SQLITE_1, _SQLITE_2, _SQLITE_3, _SQLITE_4, _5)
POSTGRES: tuple[str, ...] = (_POSTGRES_1, _POSTGRES_2, _POSTGRES_3, _POSTGRES_4, _5)
assert len(SQLITE) == len(POSTGRES) == len(MIGRATION_NAMES)
