"""Numbered schema migrations, one list per backend (same numbers, same meaning).

Applied at open inside a transaction each; ``schema_migrations(version, name, applied_at)``
records them. A database whose highest version is above ``len(MIGRATION_NAMES)`` was written by a
newer egresswatch and is refused (:class:`~egresswatch.store.SchemaTooNew`).

Append a migration by adding one entry to *both* lists; never edit a released one.
"""

from __future__ import annotations

__all__ = ["MIGRATION_NAMES", "POSTGRES", "SQLITE"]

_SQLITE_1 = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    instance TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    signal TEXT,
    host TEXT,
    app TEXT,
    regimes TEXT NOT NULL DEFAULT '[]',
    action TEXT,
    rule TEXT,
    exception_id TEXT,
    client TEXT,
    "user" TEXT,
    department TEXT,
    catalogue_version TEXT NOT NULL DEFAULT '',
    policy_version TEXT NOT NULL DEFAULT '',
    detail TEXT,
    leaf_hash TEXT NOT NULL,
    chain_hash TEXT NOT NULL
);
-- Not UNIQUE on purpose: the writer guarantees one seq per row (BEGIN IMMEDIATE + chain_heads),
-- and verify must be able to see (and name) a duplicate someone slipped in.
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
    events INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (day, instance, app, regime, action, department, client, host)
) WITHOUT ROWID;
CREATE TABLE chain_heads (
    instance TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    chain_hash TEXT NOT NULL
);
CREATE TABLE checkpoints (
    instance TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    chain_hash TEXT NOT NULL,
    pruned_at REAL NOT NULL
);
CREATE TABLE prune_guard (id INTEGER PRIMARY KEY CHECK (id = 1), allowed INTEGER NOT NULL);
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

_POSTGRES_1 = """
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    instance TEXT NOT NULL,
    seq BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    signal TEXT,
    host TEXT,
    app TEXT,
    regimes TEXT NOT NULL DEFAULT '[]',
    action TEXT,
    rule TEXT,
    exception_id TEXT,
    client TEXT,
    "user" TEXT,
    department TEXT,
    catalogue_version TEXT NOT NULL DEFAULT '',
    policy_version TEXT NOT NULL DEFAULT '',
    detail TEXT,
    leaf_hash TEXT NOT NULL,
    chain_hash TEXT NOT NULL
);
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
    events BIGINT NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (day, instance, app, regime, action, department, client, host)
);
CREATE TABLE chain_heads (
    instance TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    chain_hash TEXT NOT NULL
);
CREATE TABLE checkpoints (
    instance TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    chain_hash TEXT NOT NULL,
    pruned_at DOUBLE PRECISION NOT NULL
);
CREATE FUNCTION egresswatch_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
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

MIGRATION_NAMES: tuple[str, ...] = ("events, rollups, chain heads, checkpoints, append-only",)
SQLITE: tuple[str, ...] = (_SQLITE_1,)
POSTGRES: tuple[str, ...] = (_POSTGRES_1,)
assert len(SQLITE) == len(POSTGRES) == len(MIGRATION_NAMES)
