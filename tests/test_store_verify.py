"""The hash chain: verify names edited, deleted, inserted and reordered rows, on every backend."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.store import EventStore
from egresswatch.store import VerifyResult
from egresswatch.store import _codec

from tests.plugins.store import Tamper

MakeEvent = Callable[..., Event]


@pytest.fixture
def filled(store: EventStore, make_event: MakeEvent) -> EventStore:
    """Two instances, 10 events each, written in three batches."""
    store.write([make_event(instance="p1") for _ in range(4)])
    store.write([make_event(instance="p2") for _ in range(10)])
    store.write([make_event(instance="p1") for _ in range(6)])
    return store


def kinds(result: VerifyResult) -> list[tuple[str, int | None, str]]:
    return [(p.instance, p.seq, p.kind) for p in result.problems]


def test_untouched_store_verifies(filled: EventStore) -> None:
    result = filled.verify()
    assert result.ok and result.problems == ()
    assert result.checked == 20
    assert [(h.instance, h.seq) for h in result.heads] == [("p1", 10), ("p2", 10)]
    only = filled.verify("p2")
    assert only.checked == 10 and [h.instance for h in only.heads] == ["p2"]


@pytest.mark.parametrize(
    ("column", "value"),
    [("host", "innocent.example"), ("action", "monitor"), ("ts", 1.0), ("detail", '{"a":1}')],
)
def test_edited_row_is_named(
    filled: EventStore, tamper: Tamper, column: str, value: object
) -> None:
    tamper.edit("p1", 5, column, value)
    result = filled.verify()
    assert not result.ok
    assert kinds(result) == [("p1", 5, "edited")]
    assert "p1#5: edited" in str(result.problems[0])


def test_edited_row_with_recomputed_leaf_breaks_the_next_link(
    filled: EventStore, tamper: Tamper
) -> None:
    row = list(tamper.row("p1", 5))
    row[6] = "innocent.example"
    leaf = _codec.leaf_hash(_codec._row_canonical(row, 5))
    tamper.edit("p1", 5, "leaf_hash", leaf)
    tamper.edit("p1", 5, "host", "innocent.example")
    prev_chain = tamper.row("p1", 4)[19]
    tamper.edit("p1", 5, "chain_hash", _codec.chain_hash(prev_chain, leaf))
    assert kinds(filled.verify()) == [("p1", 6, "inserted")]


def test_deleted_rows_are_named(filled: EventStore, tamper: Tamper) -> None:
    tamper.delete("p2", 3)
    tamper.delete("p2", 4)
    tamper.delete("p1", 7)
    result = filled.verify()
    assert kinds(result) == [("p1", 7, "deleted"), ("p2", 3, "deleted")]
    assert "#3..#4 are missing" in str(result.problems[1])


def test_tail_truncation_is_caught_by_the_recorded_head(filled: EventStore, tamper: Tamper) -> None:
    tamper.delete("p1", 10)
    tamper.delete("p1", 9)
    result = filled.verify()
    assert kinds(result) == [("p1", 9, "deleted")]
    assert "end of the chain" in result.problems[0].message


def test_inserted_duplicate_is_named(filled: EventStore, tamper: Tamper) -> None:
    tamper.insert_copy("p2", 6, host="forged.example", event_id="forged")
    result = filled.verify()
    assert kinds(result) == [("p2", 6, "inserted")]
    assert "forged" in result.problems[0].message


def test_row_appended_beyond_the_head_is_named(filled: EventStore, tamper: Tamper) -> None:
    row = list(tamper.row("p2", 10))
    row[1] = 11
    row[2] = "forged"
    row[18] = _codec.leaf_hash(_codec._row_canonical(row, 11))
    row[19] = _codec.chain_hash(tamper.row("p2", 10)[19], row[18])  # a perfect forgery
    tamper.insert(tuple(row))
    result = filled.verify()
    assert kinds(result) == [("p2", 11, "inserted")]
    assert "after the recorded chain head #10" in result.problems[0].message


def test_reordered_rows_are_named(filled: EventStore, tamper: Tamper) -> None:
    tamper.swap("p1", 3, 8)
    result = filled.verify()
    assert kinds(result) == [("p1", 3, "reordered"), ("p1", 8, "reordered")]
    assert "written as #8" in result.problems[0].message


def test_several_attacks_are_all_named(filled: EventStore, tamper: Tamper) -> None:
    tamper.edit("p1", 2, "client", "10.9.9.9")
    tamper.delete("p1", 6)
    tamper.swap("p2", 1, 2)
    tamper.insert_copy("p2", 9, event_id="dup")
    assert kinds(filled.verify()) == [
        ("p1", 2, "edited"),
        ("p1", 6, "deleted"),
        ("p2", 1, "reordered"),
        ("p2", 2, "reordered"),
        ("p2", 9, "inserted"),
    ]
    assert kinds(filled.verify("p2")) == [
        ("p2", 1, "reordered"),
        ("p2", 2, "reordered"),
        ("p2", 9, "inserted"),
    ]


def test_verification_starts_from_the_prune_checkpoint(
    store: EventStore, tamper: Tamper, make_event: MakeEvent
) -> None:
    store.write([make_event(ts=100.0 + i) for i in range(5)])
    store.write([make_event(ts=1000.0 + i) for i in range(5)])
    assert store.prune(500.0) == 5
    assert store.verify().ok
    tamper.edit("proxy-1", 8, "host", "x.example")
    assert kinds(store.verify()) == [("proxy-1", 8, "edited")]


def test_row_slipped_in_before_the_checkpoint_is_named(
    store: EventStore, tamper: Tamper, make_event: MakeEvent
) -> None:
    store.write([make_event(ts=100.0 + i) for i in range(5)])
    store.write([make_event(ts=1000.0 + i) for i in range(5)])
    kept = tamper.row("proxy-1", 6)
    store.prune(500.0)
    forged = list(kept)
    forged[1] = 3
    tamper.insert(tuple(forged))
    assert kinds(store.verify()) == [("proxy-1", 3, "inserted")]


def test_chain_is_defined_by_the_documented_formula(
    store: EventStore, make_event: MakeEvent
) -> None:
    """An auditor can recompute the chain from the export with the formula in docs/store.md."""
    import hashlib
    import json

    e = make_event(kind=EventKind.HIT, ts=1.25, detail={"b": 1, "a": "ü"})
    store.write([e])
    canonical = json.dumps(
        {
            "instance": e.instance, "seq": 1, "event_id": e.event_id, "ts": 1_250_000,
            "kind": "hit", "signal": e.signal, "host": e.host, "app": e.app,
            "regimes": list(e.regimes), "action": e.action, "rule": e.rule,
            "exception_id": None, "client": e.client, "user": None,
            "department": e.department, "catalogue_version": e.catalogue_version,
            "policy_version": e.policy_version, "detail": {"a": "ü", "b": 1},
        },
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )  # fmt: skip
    leaf = hashlib.sha256(b"\x00" + canonical.encode()).digest()
    chain = hashlib.sha256(bytes(32) + leaf).hexdigest()
    assert store.chain_heads()[0].chain_hash == chain
