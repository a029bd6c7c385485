"""Tests of ``egresswatch.store._codec``: rows, canonical JSON and hashes, from the event schema.

The fixed chain below was computed by the codec as released before the schema drove it (the
hand-written encoders): stored bytes and hashes must never change, or existing stores would no
longer verify.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
from egresswatch.events import EVENT_FIELDS
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.store import InvalidEvent
from egresswatch.store import _codec
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

FIXED = [
    Event(ts=1782864000.25, kind=EventKind.START, instance="proxy-ü", event_id="s1",
          catalogue_version="c1", policy_version="p1",
          detail={"egresswatch": "0.1.0", "z": [1, 2.5, None], "a": {"ü": "\x00"}}),
    Event(ts=1782864001.000001, kind=EventKind.HIT, instance="proxy-ü", event_id="h1",
          signal="sni", host="www.tiktok.com", app="tiktok", regimes=("us-far-52.204-27", 'a"b'),
          action="blocked", rule="app:tiktok", client="h:00ff", user='quote" back\\slash',
          department="sales\u2028", catalogue_version="c1", policy_version="p1"),
    Event(ts=1782864002.0, kind=EventKind.CONFIG, instance="proxy-ü", event_id="c1",
          detail={"kind": "policy", "version": "p2", "exceptions": []}),
    Event(ts=1782864003.5, kind=EventKind.HIT, instance="proxy-ü", event_id="h2", host=7),  # type: ignore[arg-type]
]  # fmt: skip
FIXED_HASHES = [
    (
        "747b888fe4649a88d5cb53f18c46401380a130a7d988762988a0fbc78722c434",
        "b7efcb0660cb4203532259021bb8147ff07b133132115817bf80307cdb291478",
    ),
    (
        "13db503a5a06b072a444637c60738580e4ac3a4733877b0479a6692b163054fe",
        "cb82b154ff5c4319ca6c89b94459b2bfef76604aa69a2c9658ac4802376e2fcd",
    ),
    (
        "73b5fe28f79bae9ed53cf283d89c99c8f56b78295d9d2b45efeb8369b6ad443c",
        "4d59f1105c9d7b5d1eedfd41a140a445d6ec9d12d3fd3398a39446c11950835d",
    ),
    (
        "17fdec89bbe7d819e247a978d462bc0990ff729556aa88c01491e20a5a341e0c",
        "006333aa0f1959c94dd43b14c82f6e87ed4e5fd0c68feefb4db164605bfbc239",
    ),
]


def test_a_fixed_chain_keeps_its_hashes() -> None:
    rows, heads = _codec.build_rows(_codec.encode(FIXED), {})
    assert [(r[_codec.LEAF], r[_codec.CHAIN]) for r in rows] == FIXED_HASHES
    assert heads == {"proxy-ü": (4, FIXED_HASHES[-1][1])}
    # and the verifier's side agrees, row by row
    assert [_codec.row_leaf(r, r[1]) for r in rows] == [leaf for leaf, _ in FIXED_HASHES]


def test_a_batch_of_interleaved_instances_chains_as_one_event_at_a_time() -> None:
    # The batch loop carries each instance's chain as raw digests; written one event per batch
    # (the heads handed from write to write as hex), every row and head must come out the same.
    events = [
        dataclasses.replace(e, instance=inst, event_id=f"{inst}-{i}")
        for i, (e, inst) in enumerate(
            zip(
                FIXED * 3, ["a", "b", "a", "c", "b", "b", "a", "c", "a", "b", "c", "a"], strict=True
            )
        )
    ]
    start = {"b": (41, "ab" * 32), "z": (3, "cd" * 32)}
    rows, heads = _codec.build_rows(_codec.encode(events), start)
    one_by_one: list[tuple[object, ...]] = []
    step = dict(start)
    for e in events:
        (row,), step = _codec.build_rows(_codec.encode([e]), step)
        one_by_one.append(row)
    assert rows == one_by_one
    assert heads == step
    assert heads["z"] == (3, "cd" * 32)  # an instance not in the batch keeps its head
    assert [r[1] for r in rows if r[0] == "b"] == [42, 43, 44, 45]
    assert [r[1] for r in rows if r[0] == "a"] == [1, 2, 3, 4, 5]


def test_the_deciding_rule_is_hashed_only_when_set() -> None:
    """Rows written before the fields existed keep their leaf hash (FIXED_HASHES above); a row
    that names its deciding rule is covered by the hash, in both encoders."""
    bare = FIXED[1]
    decided = dataclasses.replace(bare, decided_by="app", decided_id="alipay")
    (row_bare,), _ = _codec.build_rows(_codec.encode([bare]), {})
    (row_dec,), _ = _codec.build_rows(_codec.encode([decided]), {})
    assert '"decided_by"' not in _codec.canonical_row(row_bare, 1)
    assert row_dec[_codec.LEAF] != row_bare[_codec.LEAF]
    canonical = _codec.canonical_row(row_dec, 1)
    assert '"decided_by":"app","decided_id":"alipay"' in canonical
    assert canonical == _codec._row_canonical(row_dec, 1)  # noqa: SLF001 - the general encoder
    forged = list(row_dec)
    forged[_codec.COLUMNS.index("decided_id")] = "us-eo-13971"
    assert _codec.row_leaf(forged, 1) != row_dec[_codec.LEAF]


def test_the_stored_row_of_a_hit() -> None:
    (row,), _ = _codec.build_rows(_codec.encode([FIXED[1]]), {"proxy-ü": (6, "ab" * 32)})
    assert dict(zip(_codec.COLUMNS[:-2], row[:-2], strict=True)) == {
        "instance": "proxy-ü",
        "seq": 7,
        "event_id": "h1",
        "ts": 1782864001.000001,
        "kind": "hit",
        "signal": "sni",
        "host": "www.tiktok.com",
        "app": "tiktok",
        "regimes": '["us-far-52.204-27","a\\"b"]',
        "action": "blocked",
        "rule": "app:tiktok",
        "exception_id": None,
        "client": "h:00ff",
        "user": 'quote" back\\slash',
        "department": "sales\u2028",
        "catalogue_version": "c1",
        "policy_version": "p1",
        "detail": None,
        "decided_by": None,
        "decided_id": None,
    }


def test_canonical_json_is_the_documented_form() -> None:
    text = _codec.encode_payload(FIXED[2], 3)
    assert text == (
        '{"action":null,"app":null,"catalogue_version":"","client":null,"department":null,'
        '"detail":{"exceptions":[],"kind":"policy","version":"p2"},"event_id":"c1",'
        '"exception_id":null,"host":null,"instance":"proxy-ü","kind":"config",'
        '"policy_version":"","regimes":[],"rule":null,"seq":3,"signal":null,'
        '"ts":1782864002000000,"user":null}'
    )


def test_the_fast_encoder_writes_the_hashed_fields_in_sorted_order() -> None:
    row = _codec.event_row(_codec.encode([FIXED[1]])[0], 1)
    keys = list(json.loads(_codec._fast_canonical(row, 1)))
    assert keys == sorted(keys)
    assert set(keys) == {f.name for f in EVENT_FIELDS if f.hashed and not f.optional}
    full = dataclasses.replace(FIXED[1], decided_by="regime", decided_id="r1")
    row = _codec.event_row(_codec.encode([full])[0], 1)
    keys = list(json.loads(_codec._fast_canonical(row, 1)))
    assert keys == sorted(keys)
    assert set(keys) == {f.name for f in EVENT_FIELDS if f.hashed}


_text = st.one_of(st.none(), st.text(max_size=12))


@settings(max_examples=300, deadline=None)
@given(
    fields=st.fixed_dictionaries(
        {
            name: _text
            for name in (
                "signal",
                "host",
                "app",
                "rule",
                "exception_id",
                "client",
                "user",
                "department",
                "action",
            )
        }  # fmt: skip
    ),
    versions=st.tuples(st.text(max_size=8), st.text(max_size=8)),
    detail=st.one_of(
        st.none(),
        st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5))),
    ),
    kind=st.sampled_from(list(EventKind)),
    regimes=st.lists(st.text(max_size=8), max_size=3),
    ts=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    seq=st.integers(min_value=1, max_value=2**62),
)
def test_the_fast_encoder_equals_the_general_one_on_any_row(
    fields: dict[str, str | None],
    versions: tuple[str, str],
    detail: dict[str, object] | None,
    kind: EventKind,
    regimes: list[str],
    ts: float,
    seq: int,
) -> None:
    """Whatever the text (quotes, control characters, non-ASCII) and whatever the kind, with or
    without detail: the schema-generated fast encoder gives the general encoder's string."""
    e = Event(
        ts=ts,
        kind=kind,
        instance="p",
        event_id="e",
        regimes=tuple(regimes),
        catalogue_version=versions[0],
        policy_version=versions[1],
        detail=detail,
        **fields,  # type: ignore[arg-type]
    )
    row = _codec.event_row(_codec.encode([e])[0], seq)
    assert _codec._fast_canonical(row, seq) == _codec._row_canonical(row, seq)
    assert _codec.row_to_event((*row, "", "")) == e
    # The writer's batch loop (its own copy of the encoder, quoting repeated text through a
    # per-batch cache): the same event twice, the second from the cache, hashed from the
    # general encoder's bytes.
    rows, _ = _codec.build_rows(_codec.encode([e, e]), {"p": (seq - 1, "ab" * 32)})
    for at, written in enumerate(rows, seq):
        general = _codec._row_canonical(written, at)
        assert written[_codec.LEAF] == hashlib.sha256(b"\x00" + general.encode()).hexdigest()


def test_a_row_reads_back_as_its_event() -> None:
    rows, _ = _codec.build_rows(_codec.encode(FIXED[:3]), {})
    assert [_codec.row_to_event(r) for r in rows] == FIXED[:3]
    assert isinstance(_codec.row_to_event(rows[0]).kind, EventKind)


def test_an_archived_row_with_null_versions_reads_as_empty() -> None:
    (row,), _ = _codec.build_rows(_codec.encode([FIXED[2]]), {})
    archived = list(row)
    archived[_codec.COLUMNS.index("catalogue_version")] = None
    archived[_codec.COLUMNS.index("leaf_hash")] = ""
    e = _codec.row_to_event(archived)
    assert e.catalogue_version == "" and e.detail == FIXED[2].detail


@pytest.mark.parametrize(
    ("column", "value"),
    [("regimes", "[not json"), ("detail", "{"), ("ts", "noon")],
)
def test_an_unreadable_column_has_no_leaf(column: str, value: object) -> None:
    (row,), _ = _codec.build_rows(_codec.encode([FIXED[0]]), {})
    bad = list(row)
    bad[_codec.COLUMNS.index(column)] = value
    assert _codec.row_leaf(bad, 1) is None
    assert _codec.row_leaf(bad[:5], 1) is None  # a short row, too


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (Event(ts=float("nan"), kind=EventKind.HIT, instance="p", event_id="e"), "not finite"),
        (Event(ts=0.0, kind=EventKind.HIT, instance="p", event_id="e", detail={"s": {1}}), "set"),
        ("not an event", "str is not an Event"),
    ],
)
def test_a_bad_event_is_refused_before_any_row(event: object, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        _codec.encode([FIXED[0], event])  # type: ignore[list-item]
