"""Row encoding and the hash chain, shared by every backend; derived from the one event schema
(:data:`egresswatch.events.EVENT_FIELDS`).

A stored row is a tuple in :data:`COLUMNS` order. The hash chain, per instance::

    leaf  = sha256(0x00 || canonical_json(event fields incl. instance and seq))
    chain = sha256(prev_chain || leaf)            prev_chain of seq 1 = 32 zero bytes

Canonical JSON: the schema's hashed fields, sorted keys, no whitespace, UTF-8 (not
ASCII-escaped), ``ts`` as integer microseconds, NaN/Infinity refused. The writer and the verifier
compute it the same way, from the row (:func:`canonical_row`).

>>> leaf = leaf_hash(encode_payload(
...     Event(ts=1.5, kind=EventKind.HIT, instance="p1", event_id="e1"), 1))
>>> len(leaf), chain_hash(GENESIS, leaf) != leaf
(64, True)
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

from ..events import EVENT_FIELDS
from ..events import Event
from ..events import EventKind
from . import InvalidEvent

COLUMNS = tuple(f.name for f in EVENT_FIELDS)
# "user" is reserved in PostgreSQL: every SQL text quotes the column names.
COLUMN_SQL = ", ".join(f'"{c}"' for c in COLUMNS)
# lifecycle_archive: the event columns without the leaf hash (seq and chain_hash for reference).
ARCHIVE_COLUMNS = tuple(f.name for f in EVENT_FIELDS if f.archived)
ARCHIVE_COLUMN_SQL = ", ".join(f'"{c}"' for c in ARCHIVE_COLUMNS)
# Archived rows read back in COLUMNS order (leaf_hash as ''), so row_to_event() reads both.
ARCHIVE_AS_EVENTS_SQL = ", ".join(f'"{f.name}"' if f.archived else "''" for f in EVENT_FIELDS)
GENESIS = "0" * 64
# Positions of the two hash columns in a row (after the event's own columns).
LEAF = COLUMNS.index("leaf_hash")
CHAIN = COLUMNS.index("chain_hash")

Row = Sequence[Any]


def _default(o: object) -> object:
    if isinstance(o, Mapping):
        return dict(o)
    if isinstance(o, (set, frozenset)):
        raise TypeError("sets have no canonical order")
    raise TypeError(f"{type(o).__name__} is not JSON-able")


# One encoder, built once: json.dumps() with options builds a new JSONEncoder per call, which
# was a fifth of the write path. Stateless, so sharing it is safe.
_ENCODER = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    default=_default,
)


def canonical_json(obj: object) -> str:
    return _ENCODER.encode(obj)


@functools.lru_cache(maxsize=256)
def _regimes_json(regimes: tuple[str, ...]) -> str:
    return _ENCODER.encode(list(regimes))


def ts_micros(ts: float) -> int:
    return round(ts * 1_000_000)


class Encoded(NamedTuple):
    """An event with its JSON columns rendered once (shared by the leaf and the row). A named
    tuple rather than a frozen dataclass: one is made per written event, and a tuple is built
    without a ``__setattr__`` per field."""

    event: Event
    regimes: str
    detail: str | None


_INFINITIES = (float("inf"), float("-inf"))


def encode(events: Sequence[Event]) -> list[Encoded]:
    """Render the JSON columns of every event first, so a bad event fails before any write."""
    out: list[Encoded] = []
    append = out.append
    regimes_json = _regimes_json
    for i, e in enumerate(events):
        try:
            if type(e) is not Event and not isinstance(e, Event):
                raise TypeError(f"{type(e).__name__} is not an Event")
            ts = e.ts
            if ts != ts or ts in _INFINITIES:
                raise ValueError("ts is not finite")
            regimes = e.regimes
            append(
                Encoded(
                    e,
                    regimes_json(regimes if type(regimes) is tuple else tuple(regimes)),
                    None if e.detail is None else canonical_json(e.detail),
                )
            )
        except (TypeError, ValueError) as exc:
            raise InvalidEvent(i, str(exc)) from exc
    return out


def _compile(name: str, source: str, **names: Any) -> Any:
    """Compile one function written out from the schema (as :mod:`dataclasses` does): the hot
    paths get straight-line code with no per-field loop, and the field list stays in one place.
    The source is kept as ``__source__`` for reading and for the tests."""
    namespace: dict[str, Any] = dict(names)
    exec(compile(source, f"<egresswatch.store._codec.{name}>", "exec"), namespace)
    func = namespace[name]
    func.__source__ = source
    return func


def _event_row_items() -> list[str]:
    """The expression of each stored column (but the hashes) of ``enc`` (event ``e``) at ``seq``."""
    stored = {
        "text": "e.{name}",
        "enum": "None if e.{name} is None else str(e.{name})",
        "seq": "seq",
        "time": "float(e.{name})",
        "list": "enc.{name}",
        "json": "enc.{name}",
    }
    items = [stored[f.kind].format(name=f.name) for f in EVENT_FIELDS if f.kind != "hash"]
    items[COLUMNS.index("kind")] = "str(e.kind)"  # NOT NULL: never None
    return items


def _event_row_source() -> str:
    body = ",\n        ".join(_event_row_items())
    return f"def event_row(enc, seq):\n    e = enc.event\n    return (\n        {body},\n    )\n"


#: ``event_row(enc, seq)``: the stored columns of ``enc`` at ``seq``, up to (without) the two
#: hashes; written out from the schema because it runs once per written event.
event_row: Callable[[Encoded, int], tuple[Any, ...]] = _compile("event_row", _event_row_source())


# -- canonical JSON of a row -------------------------------------------------------------------


def _hashed_value(kind: str, value: Any, seq: int) -> Any:
    """A stored column's value as the canonical JSON holds it (per the schema's field kind)."""
    if kind == "seq":
        return seq
    if kind == "time":
        return ts_micros(value)
    if kind == "enum":
        return None if value is None else str(value)
    if kind == "list":
        return json.loads(value) if value else []
    if kind == "json":
        return json.loads(value) if value is not None else None
    return value


_HASHED = tuple((i, f.name, f.kind, f.optional) for i, f in enumerate(EVENT_FIELDS) if f.hashed)


def _payload(row: Row, seq: int) -> dict[str, Any]:
    """The hashed fields of a stored row as a dict (the general form of the canonical JSON); an
    optional field only when it is set."""
    return {
        name: _hashed_value(kind, row[i], seq)
        for i, name, kind, optional in _HASHED
        if not (optional and row[i] is None)
    }


def _row_canonical(row: Row, seq: int) -> str:
    return canonical_json(_payload(row, seq))


_esc: Callable[[str], str] = json.encoder.encode_basestring  # the C quoter json's encoder uses


@functools.lru_cache(maxsize=1024)
def _regimes_canonical(text: str) -> str:
    # A handful of distinct regime lists in a whole store: parse and re-render each once.
    return canonical_json(json.loads(text))


def _canonical_text_source(indent: str, cached: frozenset[str] = frozenset()) -> str:
    """Lines that set ``text`` to the canonical JSON of the stored columns ``c0``, ``c1``, ...
    at ``seq`` (names used: ``n`` = "null", ``esc`` = the JSON string quoter). The text columns
    named in ``cached`` are quoted through ``cache`` (a dict from value to quoted value holding
    ``None: "null"``, ``get`` its ``get``): a batch repeats them."""
    value = {
        "text": "n if {v} is None else esc({v})",
        "enum": "n if {v} is None else esc({v})",
        "seq": "int(seq)",
        "time": "round({v} * 1_000_000)",
        "list": '_regimes_canonical({v}) if {v} else "[]"',
        "json": "n if {v} is None else canonical_json(json.loads({v}))",
    }
    hashed = sorted((f.name, i, f.kind, f.optional) for i, f in enumerate(EVENT_FIELDS) if f.hashed)
    assert not hashed[0][3], "the first key in sorted order must always be present"
    parts = []
    lines = []
    for k, (name, i, kind, optional) in enumerate(hashed):
        if optional:  # present only when set: computed before the f-string
            assert kind == "text", "optional fields are text"
            key = json.dumps("," + json.dumps(name) + ":")
            lines.append(f'o{i} = "" if c{i} is None else {key} + esc(c{i})')
            parts.append(f"{{o{i}}}")
            continue
        if name in cached:
            assert kind in ("text", "enum"), "only text is cached"
            lines += [
                f"q{i} = get(c{i})",
                f"if q{i} is None:",
                f"    q{i} = cache[c{i}] = esc(c{i})",
            ]
            parts.append(("{{" if k == 0 else ",") + f"{json.dumps(name)}:{{q{i}}}")
            continue
        parts.append(
            "{sep}{key}:{{{expr}}}".format(
                sep="{{" if k == 0 else ",",
                key=json.dumps(name),
                expr=value[kind].format(v=f"c{i}"),
            )
        )
    lines += ["text = (", *(f"    f{p!r}" for p in [*parts, "}}"]), ")"]
    return "".join(f"{indent}{line}\n" for line in lines)


_WIDTH = sum(1 for f in EVENT_FIELDS if f.kind != "hash")  # the hashes come last
_CS = ", ".join(f"c{i}" for i in range(_WIDTH))


def _fast_canonical_source() -> str:
    return (
        f"def _fast_canonical(row, seq):\n    {_CS} = row[:{_WIDTH}]\n"
        f'    n = "null"\n    esc = _esc\n{_canonical_text_source("    ")}    return text\n'
    )


#: ``_fast_canonical(row, seq)``: :func:`_row_canonical` without a dict, a sort and an encoder
#: pass per row (the write and verify hot path), written out from the schema with the keys in
#: sorted order. Equal output for every row whose text columns are ``str`` or ``None``
#: (TypeError otherwise); ``tests/test_store_codec.py`` holds it to :func:`_row_canonical`.
_fast_canonical: Callable[[Row, int], str] = _compile(
    "_fast_canonical",
    _fast_canonical_source(),
    _esc=_esc,
    _regimes_canonical=_regimes_canonical,
    canonical_json=canonical_json,
    json=json,
)


def canonical_row(row: Row, seq: int) -> str:
    """Canonical JSON of a stored row at ``seq`` (what its leaf hash covers)."""
    try:
        return _fast_canonical(row, seq)
    except TypeError:  # a column that is not a str (or None): the general encoder says how
        return _row_canonical(row, seq)


def encode_payload(event: Event, seq: int) -> str:
    """Canonical JSON of one event at ``seq``."""
    return canonical_row(event_row(encode([event])[0], seq), seq)


# -- the chain ---------------------------------------------------------------------------------


def leaf_hash(canonical: str) -> str:
    return hashlib.sha256(b"\x00" + canonical.encode("utf-8")).hexdigest()


def chain_hash(prev: str, leaf: str) -> str:
    return hashlib.sha256(bytes.fromhex(prev) + bytes.fromhex(leaf)).hexdigest()


def build_rows(
    encoded: Sequence[Encoded], heads: Mapping[str, tuple[int, str]]
) -> tuple[list[tuple[Any, ...]], dict[str, tuple[int, str]]]:
    """Assign seq and hashes; ``heads`` maps instance -> (seq, chain) before this batch."""
    state: dict[str, list[Any]] = {}
    rows = _chain_rows(encoded, heads, state)
    new_heads = dict(heads)
    for instance, (seq, chain) in state.items():
        new_heads[instance] = (seq, chain.hex())
    return rows, new_heads


# The text columns a batch repeats (the per-event ids are not among them).
_REPEATED = frozenset(
    f.name
    for f in EVENT_FIELDS
    if f.hashed and f.kind in ("text", "enum") and not f.optional and f.name != "event_id"
)


def _chain_rows_source() -> str:
    assign = "".join(
        f"        c{i} = {expr}\n" for i, expr in enumerate(_event_row_items()) if expr != "seq"
    )
    return f"""def _chain_rows(encoded, heads, state):
    rows = []
    append = rows.append
    n = "null"
    esc = _esc
    cache = {{None: n}}
    get = cache.get
    for enc in encoded:
        e = enc.event
        head = state.get(e.instance)
        if head is None:
            seq, prev = heads.get(e.instance, (0, GENESIS))
            head = state[e.instance] = [seq, bytes.fromhex(prev)]
        seq = head[0] + 1
{assign}        c{COLUMNS.index("seq")} = seq
        try:
{_canonical_text_source("            ", _REPEATED)}        except TypeError:  # a column that is not a str (or None): the general encoder says how
            text = _row_canonical(({_CS}), seq)
        leaf = sha256(b"\\x00" + text.encode("utf-8")).digest()
        chain = sha256(head[1] + leaf).digest()
        head[0] = seq
        head[1] = chain
        append(({_CS}, leaf.hex(), chain.hex()))
    return rows
"""


#: ``_chain_rows(encoded, heads, state)``: the rows of :func:`build_rows`, each with its seq,
#: leaf and chain hash; ``state`` (instance -> [seq, chain digest]) is filled from ``heads`` as
#: instances appear and left at the batch's end. :func:`event_row`, :func:`_fast_canonical`,
#: :func:`leaf_hash` and :func:`chain_hash` in one loop written out from the schema: it runs
#: once per written event, with the GIL the writer thread shares with the proxy's event loop.
_chain_rows: Callable[
    [Sequence[Encoded], Mapping[str, tuple[int, str]], dict[str, list[Any]]], list[tuple[Any, ...]]
] = _compile(
    "_chain_rows",
    _chain_rows_source(),
    GENESIS=GENESIS,
    sha256=hashlib.sha256,
    _esc=_esc,
    _regimes_canonical=_regimes_canonical,
    _row_canonical=_row_canonical,
    canonical_json=canonical_json,
    json=json,
)


def row_leaf(row: Row, seq: int) -> str | None:
    """The leaf hash ``row`` would have at ``seq``; ``None`` when its columns cannot be read
    (not JSON where JSON belongs, a number where text belongs): such a row is edited."""
    try:
        text = canonical_row(row, seq)
    except (TypeError, ValueError, KeyError, IndexError):
        return None
    return hashlib.sha256(b"\x00" + text.encode("utf-8")).hexdigest()


# -- reading -----------------------------------------------------------------------------------


def _regimes_of(text: str | None) -> tuple[str, ...]:
    return tuple(json.loads(text)) if text and text != "[]" else ()


def _detail_of(text: str | None) -> object:
    return json.loads(text) if text is not None else None


def _row_to_event_source() -> str:
    read = {
        "text": "row[{i}]",
        "enum": "row[{i}]",
        "time": "float(row[{i}])",
        "list": "_regimes_of(row[{i}])",
        "json": "_detail_of(row[{i}])",
    }
    args = []
    for i, f in enumerate(EVENT_FIELDS):
        if not f.attribute:
            continue
        expr = read[f.kind].format(i=i)
        if f.name == "kind":
            expr = f"EventKind({expr})"
        elif "DEFAULT ''" in f.sql:  # NOT NULL DEFAULT '': an archived row may still hold NULL
            expr = f'{expr} or ""'
        args.append(f"        {f.name}={expr},")
    body = "\n".join(args)
    return f"def row_to_event(row):\n    return Event(\n{body}\n    )\n"


#: ``row_to_event(row)``: the :class:`Event` of a stored row (``kind`` as :class:`EventKind`),
#: written out from the schema.
row_to_event: Callable[[Row], Event] = _compile(
    "row_to_event",
    _row_to_event_source(),
    Event=Event,
    EventKind=EventKind,
    _regimes_of=_regimes_of,
    _detail_of=_detail_of,
)
