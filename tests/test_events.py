"""Tests of ``egresswatch.events``: the one event schema and the value types.

The schema (``EVENT_FIELDS``) drives the store's columns, the DDL, the canonical JSON the hash
chain covers and the ECS export; these tests hold each of them to it, and it to the ``Event``
type, with expectations written out here rather than recomputed from the code under test.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from egresswatch.commands.events import ecs_document
from egresswatch.events import EVENT_FIELDS
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.store import open_store
from egresswatch.store._codec import COLUMNS

# The column order of the tables as migration 1 created them (migration 5 appends decided_by and
# decided_id after them).
STORED_ORDER = [
    "instance", "seq", "event_id", "ts", "kind", "signal", "host", "app", "regimes", "action",
    "rule", "exception_id", "client", "user", "department", "catalogue_version",
    "policy_version", "detail", "leaf_hash", "chain_hash",
]  # fmt: skip
ADDED = ["decided_by", "decided_id"]
# The schema's order (the order rows are read and written in, by name): the added event fields
# before the hashes.
SCHEMA_ORDER = [*STORED_ORDER[:-2], *ADDED, "leaf_hash", "chain_hash"]


def test_the_schema_is_the_stored_column_order() -> None:
    assert [f.name for f in EVENT_FIELDS] == SCHEMA_ORDER
    assert list(COLUMNS) == SCHEMA_ORDER
    assert [f.name for f in EVENT_FIELDS if f.optional] == ADDED


def test_every_event_attribute_is_a_field_and_back() -> None:
    attributes = {f.name for f in dataclasses.fields(Event)}
    assert {f.name for f in EVENT_FIELDS if f.attribute} == attributes
    # seq and the two hashes belong to the row, not to the event
    assert {f.name for f in EVENT_FIELDS if not f.attribute} == {"seq", "leaf_hash", "chain_hash"}


def test_the_hash_covers_every_field_but_the_hashes() -> None:
    assert [f.name for f in EVENT_FIELDS if not f.hashed] == ["leaf_hash", "chain_hash"]
    assert [f.name for f in EVENT_FIELDS if not f.archived] == ["leaf_hash"]


def test_ddl_columns_are_the_schema_fields(tmp_path: Path) -> None:
    store = open_store(f"sqlite://{tmp_path / 'events.db'}")
    store.close()
    db = sqlite3.connect(tmp_path / "events.db")
    try:
        events = db.execute("PRAGMA table_info(events)").fetchall()
        archive = db.execute("PRAGMA table_info(lifecycle_archive)").fetchall()
    finally:
        db.close()
    # (name, type, not null, default) after the row id
    assert [(c[1], c[2], bool(c[3]), c[4]) for c in events[1:]] == [
        ("instance", "TEXT", True, None),
        ("seq", "INTEGER", True, None),
        ("event_id", "TEXT", True, None),
        ("ts", "REAL", True, None),
        ("kind", "TEXT", True, None),
        ("signal", "TEXT", False, None),
        ("host", "TEXT", False, None),
        ("app", "TEXT", False, None),
        ("regimes", "TEXT", True, "'[]'"),
        ("action", "TEXT", False, None),
        ("rule", "TEXT", False, None),
        ("exception_id", "TEXT", False, None),
        ("client", "TEXT", False, None),
        ("user", "TEXT", False, None),
        ("department", "TEXT", False, None),
        ("catalogue_version", "TEXT", True, "''"),
        ("policy_version", "TEXT", True, "''"),
        ("detail", "TEXT", False, None),
        ("leaf_hash", "TEXT", True, None),
        ("chain_hash", "TEXT", True, None),
        ("decided_by", "TEXT", False, None),
        ("decided_id", "TEXT", False, None),
    ]
    assert [c[1] for c in archive] == [*STORED_ORDER[:-2], "chain_hash", "archived_at", *ADDED]


def test_ecs_names_are_unique_and_dotted() -> None:
    names = [f.ecs for f in EVENT_FIELDS if f.ecs is not None]
    assert len(names) == len(set(names))
    assert all(n == "@timestamp" or "." in n for n in names)


def test_the_export_puts_every_field_under_its_ecs_name() -> None:
    e = Event(
        ts=1.25,
        kind=EventKind.HIT,
        instance="proxy-1",
        event_id="e1",
        signal="sni",
        host="www.tiktok.com",
        app="tiktok",
        regimes=("r1", "r2"),
        action="blocked",
        rule="tiktok.com",
        exception_id="X1",
        client="hmac:3f2a",
        user="alice",
        department="sales",
        catalogue_version="c1",
        policy_version="p1",
        detail={},
        decided_by="regime",
        decided_id="r2",
    )
    doc = ecs_document(e)

    def at(path: str) -> object:
        node: object = doc
        for part in [path] if path == "@timestamp" else path.split("."):
            assert isinstance(node, dict) and part in node, path
            node = node[part]
        return node

    assert {f.name: at(f.ecs) for f in EVENT_FIELDS if f.ecs is not None} == {
        "instance": "proxy-1",
        "event_id": "e1",
        "ts": "1970-01-01T00:00:01.250000Z",
        "kind": "hit",
        "signal": "sni",
        "host": "www.tiktok.com",
        "app": "tiktok",
        "regimes": ["r1", "r2"],
        "action": "blocked",
        "rule": "tiktok.com",
        "exception_id": "X1",
        "client": "hmac:3f2a",
        "user": "alice",
        "department": "sales",
        "catalogue_version": "c1",
        "policy_version": "p1",
        "detail": {},
        "decided_by": "regime",
        "decided_id": "r2",
    }


def test_the_export_leaves_out_fields_without_a_value() -> None:
    doc = ecs_document(Event(ts=0.0, kind=EventKind.HEARTBEAT, instance="p", event_id="b1"))
    assert doc["egresswatch"] == {"kind": "heartbeat"}
    assert not {"destination", "source", "user", "rule"} & set(doc)
