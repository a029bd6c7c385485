"""The hash chain: verify names edited, deleted, inserted and reordered rows, on every backend."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.store import EventStore
from egresswatch.store import VerifyResult
from egresswatch.store import _codec
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

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
    prev_chain = tamper.row("p1", 4)[_codec.CHAIN]
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
    row[_codec.LEAF] = _codec.leaf_hash(_codec._row_canonical(row, 11))
    row[_codec.CHAIN] = _codec.chain_hash(
        tamper.row("p2", 10)[_codec.CHAIN], row[_codec.LEAF]
    )  # a perfect forgery
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


# -- the verifier's fast path ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"host": "ünïcode.example", "user": 'quote" back\\slash', "client": "tab\there\u2028"},
        {"detail": {"z": [1, 2.5, None], "a": {"ü": "\x00"}}, "regimes": ()},
        {"app": None, "action": None, "department": None, "exception_id": "X1", "ts": 0.1234567},
        {"regimes": ("b", "a"), "signal": None, "rule": None, "ts": 1e9 + 0.000001},
    ],
)
def test_fast_canonical_equals_the_documented_form(
    store: EventStore, tamper: Tamper, make_event: MakeEvent, changes: dict[str, object]
) -> None:
    store.write([make_event(**changes)])
    row = tamper.row("proxy-1", 1)
    assert _codec._fast_canonical(row, 1) == _codec._row_canonical(row, 1)
    assert _codec.row_leaf(row, 1) == row[_codec.LEAF]
    assert store.verify().ok


def test_unreadable_column_is_an_edit_not_a_crash(filled: EventStore, tamper: Tamper) -> None:
    tamper.edit("p1", 3, "regimes", "[not json")
    tamper.edit("p1", 4, "detail", "{")
    assert kinds(filled.verify()) == [("p1", 3, "edited"), ("p1", 4, "edited")]


# -- recorded and incremental verification ------------------------------------------------------


def test_runs_are_recorded(filled: EventStore) -> None:
    result = filled.verify()
    assert result.mode == "full" and result.history == ()
    runs = filled.verifications()
    assert [(r.instance, r.mode, r.from_seq, r.to_seq, r.ok, r.checked) for r in runs] == [
        ("p1", "full", 1, 10, True, 10),
        ("p2", "full", 1, 10, True, 10),
    ]
    assert runs == list(result.runs) and all(r.id is not None for r in runs)
    heads = {h.instance: h.chain_hash for h in filled.chain_heads()}
    assert all(r.chain_hash == heads[r.instance] and r.base_id is None for r in runs)
    assert all(r.started_at <= r.finished_at for r in runs)
    filled.verify(record=False)
    assert len(filled.verifications()) == 2
    assert [r.instance for r in filled.verifications("p2")] == ["p2"]


def test_incremental_checks_only_new_rows_and_their_continuity(
    filled: EventStore, make_event: MakeEvent
) -> None:
    full = filled.verify()
    filled.write([make_event(instance="p1") for _ in range(3)])
    inc = filled.verify(full=False)
    assert inc.ok and inc.mode == "incremental"
    assert inc.checked == 3 and inc.per_instance == {"p1": 3, "p2": 0}
    p1 = next(r for r in inc.runs if r.instance == "p1")
    assert (p1.mode, p1.from_seq, p1.to_seq, p1.base_id) == ("incremental", 11, 13, full.runs[0].id)
    assert [h.id for h in inc.history] == [r.id for r in full.runs]
    assert inc.covered("p1") == (1, 13) and inc.covered("p2") == (1, 10)
    # A chain of incremental runs keeps its history back to the full run.
    filled.write([make_event(instance="p1")])
    again = filled.verify(full=False)
    assert again.checked == 1
    assert [(h.instance, h.mode, h.from_seq, h.to_seq) for h in again.history] == [
        ("p1", "full", 1, 10),
        ("p1", "incremental", 11, 13),
        ("p2", "full", 1, 10),
        ("p2", "incremental", 11, 10),
    ]
    # Without any earlier run, incremental verifies in full.
    assert filled.verify(full=False).checked == 0


def test_first_incremental_run_is_a_full_one(filled: EventStore) -> None:
    result = filled.verify(full=False)
    assert result.checked == 20 and {r.mode for r in result.runs} == {"full"}


def test_edit_before_the_verified_head_waits_for_the_next_full_run(
    filled: EventStore, tamper: Tamper, make_event: MakeEvent
) -> None:
    """The documented trade-off of incremental verification, and how a full run closes it."""
    filled.verify()
    tamper.edit("p1", 5, "host", "innocent.example")
    filled.write([make_event(instance="p1")])
    assert filled.verify(full=False).ok  # rows 1..10 are not recomputed
    assert kinds(filled.verify()) == [("p1", 5, "edited")]
    # After a failed run there is no trusted head: incremental verifies in full again.
    again = filled.verify(full=False)
    assert kinds(again) == [("p1", 5, "edited")]
    assert next(r for r in again.runs if r.instance == "p1").mode == "full"


def test_incremental_catches_new_rows_that_do_not_continue_the_chain(
    filled: EventStore, tamper: Tamper, make_event: MakeEvent
) -> None:
    filled.verify()
    filled.write([make_event(instance="p2") for _ in range(2)])
    tamper.edit("p2", 12, "client", "10.6.6.6")
    assert kinds(filled.verify(full=False)) == [("p2", 12, "edited")]


def test_incremental_checks_the_verified_head_row(
    filled: EventStore, tamper: Tamper, make_event: MakeEvent
) -> None:
    filled.verify()
    # The head row's chain hash rewritten (a rewrite of the verified part with new hashes).
    tamper.edit("p1", 10, "chain_hash", "f" * 64)
    filled.write([make_event(instance="p2")])
    result = filled.verify(full=False)
    assert kinds(result) == [("p1", 10, "edited")]
    assert "run a full verify" in result.problems[0].message


def test_incremental_catches_truncation_below_the_verified_head(
    filled: EventStore, tamper: Tamper
) -> None:
    """The recorded run remembers a head: rows cut from the tail and the head rewound to match
    (invisible to a full run on its own) show up against it."""
    filled.verify()
    tamper.delete("p2", 10)
    tamper.delete("p2", 9)
    tamper.set_head("p2", 8, tamper.row("p2", 8)[_codec.CHAIN])
    result = filled.verify(full=False)
    assert kinds(result) == [("p2", 9, "deleted")]
    assert "#9..#10 verified by run" in result.problems[0].message


def test_incremental_after_prune_past_the_verified_head(
    store: EventStore, make_event: MakeEvent
) -> None:
    store.write([make_event(ts=100.0 + i) for i in range(5)])
    store.verify()
    store.write([make_event(ts=1000.0 + i) for i in range(5)])
    store.prune(1002.0)  # past the verified head #5
    result = store.verify(full=False)
    assert result.ok and result.checked == 3
    (run,) = result.runs
    assert (run.mode, run.from_seq, run.to_seq) == ("full", 8, 10)


_text = st.one_of(st.none(), st.text(max_size=12))


@settings(max_examples=300, deadline=None)
@given(
    fields=st.fixed_dictionaries(
        {
            "app": _text,
            "host": _text,
            "rule": _text,
            "client": _text,
            "user": _text,
            "department": _text,
            "exception_id": _text,
            "catalogue_version": _text,
            "policy_version": _text,
            "signal": _text,
        }
    ),
    event_id=st.text(min_size=1, max_size=20),
    instance=st.text(min_size=1, max_size=10),
    regimes=st.lists(st.text(max_size=8), max_size=3),
    ts=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    seq=st.integers(min_value=1, max_value=2**62),
)
def test_fast_canonical_json_equals_the_general_encoder(
    fields: dict[str, str | None],
    event_id: str,
    instance: str,
    regimes: list[str],
    ts: float,
    seq: int,
) -> None:
    """Hits (no detail) take a hand-written encoder: it must produce the very string the general
    canonical encoder does, whatever the text (quotes, control characters, non-ASCII)."""
    e = Event(
        ts=ts,
        kind=EventKind.HIT,
        instance=instance,
        event_id=event_id,
        regimes=tuple(regimes),
        action="monitor",
        **fields,  # type: ignore[arg-type]
    )
    row = _codec.event_row(_codec.encode([e])[0], seq)
    assert _codec._fast_canonical(row, seq) == _codec._row_canonical(row, seq)
    assert _codec.canonical_row(row, seq) == _codec._row_canonical(row, seq)


def test_canonical_json_falls_back_for_non_text_fields() -> None:
    e = Event(ts=1.0, kind=EventKind.HIT, instance="p1", event_id="e1", host=7)  # type: ignore[arg-type]
    row = _codec.event_row(_codec.encode([e])[0], 1)
    with pytest.raises(TypeError):
        _codec._fast_canonical(row, 1)
    assert _codec.canonical_row(row, 1) == _codec._row_canonical(row, 1)
    assert '"host":7' in _codec.canonical_row(row, 1)
