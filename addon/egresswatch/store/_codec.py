"""What every backend shares: row encoding, the hash chain, rollup keys and the verifier.

A stored row is a tuple in :data:`COLUMNS` order. The hash chain, per instance::

    leaf  = sha256(0x00 || canonical_json(event fields incl. instance and seq))
    chain = sha256(prev_chain || leaf)            prev_chain of seq 1 = 32 zero bytes

Canonical JSON: sorted keys, no whitespace, UTF-8 (not ASCII-escaped), ``ts`` as integer
microseconds, NaN/Infinity refused.

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
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import Any

from ..events import Event
from ..events import EventKind
from . import EACH_REGIME
from . import ROLLUP_DIMENSIONS
from . import ChainHead
from . import InvalidEvent
from . import RollupRow
from . import RollupSummary
from . import VerificationRun
from . import VerifyProblem
from . import VerifyResult

COLUMNS = (
    "instance",
    "seq",
    "event_id",
    "ts",
    "kind",
    "signal",
    "host",
    "app",
    "regimes",
    "action",
    "rule",
    "exception_id",
    "client",
    "user",
    "department",
    "catalogue_version",
    "policy_version",
    "detail",
    "leaf_hash",
    "chain_hash",
)
# "user" is reserved in PostgreSQL: every SQL text quotes the column names.
COLUMN_SQL = ", ".join(f'"{c}"' for c in COLUMNS)
# lifecycle_archive: the event columns without the leaf hash (seq and chain_hash for reference).
ARCHIVE_COLUMNS = tuple(c for c in COLUMNS if c != "leaf_hash")
ARCHIVE_COLUMN_SQL = ", ".join(f'"{c}"' for c in ARCHIVE_COLUMNS)
# Archived rows read back in COLUMNS order (leaf_hash as ''), so row_to_event() reads both.
ARCHIVE_AS_EVENTS_SQL = ", ".join("''" if c == "leaf_hash" else f'"{c}"' for c in COLUMNS)
VERIFICATION_COLUMNS = (
    "id",
    "instance",
    "mode",
    "from_seq",
    "to_seq",
    "chain_hash",
    "ok",
    "problems",
    "checked",
    "base_id",
    "started_at",
    "finished_at",
)
VERIFICATION_SQL = ", ".join(VERIFICATION_COLUMNS)
ROLLUP_KEY = ("day", "instance", "app", "regime", "action", "department", "client", "host")
GENESIS = "0" * 64
# How far (in seq) the verifier looks for the original position of a row whose leaf does not
# match its seq, to tell "reordered" from "edited"; and how many such rows it searches at most.
REORDER_WINDOW = 256
REORDER_BUDGET = 200

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


def day_of(ts: float) -> str:
    return _day_name(int(ts // 86400))


@functools.lru_cache(maxsize=64)
def _day_name(day: int) -> str:
    return datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")


def day_range(start: float, end: float) -> tuple[str, str]:
    """First and last (inclusive) UTC day overlapping ``[start, end)``."""
    return day_of(start), day_of(end - 1e-6)


@dataclass(frozen=True, slots=True)
class Encoded:
    """An event with its JSON columns rendered once (shared by the leaf and the row)."""

    event: Event
    regimes: str
    detail: str | None


def encode(events: Sequence[Event]) -> list[Encoded]:
    """Render the JSON columns of every event first, so a bad event fails before any write."""
    out = []
    for i, e in enumerate(events):
        try:
            if not isinstance(e, Event):
                raise TypeError(f"{type(e).__name__} is not an Event")
            detail = canonical_json(e.detail) if e.detail is not None else None
            regimes = _regimes_json(tuple(e.regimes))
            if e.ts != e.ts or e.ts in (float("inf"), float("-inf")):
                raise ValueError("ts is not finite")
        except (TypeError, ValueError) as exc:
            raise InvalidEvent(i, str(exc)) from exc
        out.append(Encoded(e, regimes, detail))
    return out


def _payload(
    row_values: Mapping[str, Any], regimes: list[Any], detail: object, seq: int
) -> dict[str, Any]:
    return {
        "instance": row_values["instance"],
        "seq": seq,
        "event_id": row_values["event_id"],
        "ts": ts_micros(row_values["ts"]),
        "kind": str(row_values["kind"]),
        "signal": row_values["signal"],
        "host": row_values["host"],
        "app": row_values["app"],
        "regimes": regimes,
        "action": None if row_values["action"] is None else str(row_values["action"]),
        "rule": row_values["rule"],
        "exception_id": row_values["exception_id"],
        "client": row_values["client"],
        "user": row_values["user"],
        "department": row_values["department"],
        "catalogue_version": row_values["catalogue_version"],
        "policy_version": row_values["policy_version"],
        "detail": detail,
    }


def encode_payload(event: Event, seq: int) -> str:
    """Canonical JSON of one event at ``seq`` (what the leaf hash covers)."""
    enc = encode([event])[0]
    return _canonical_of(enc, seq)


def _canonical_of(enc: Encoded, seq: int) -> str:
    if enc.detail is None:
        try:
            return _canonical_fast(enc, seq)
        except TypeError:  # a field that is not a str (or None): the general encoder says how
            pass
    return _canonical_general(enc, seq)


# The C string quoter json's encoder itself uses with ensure_ascii=False.
_quote: Callable[[str], str] = json.encoder.encode_basestring


def _q(v: str | None) -> str:
    return "null" if v is None else _quote(v)


def _canonical_fast(enc: Encoded, seq: int) -> str:
    """:func:`_canonical_general` for an event without ``detail`` (every hit), written out with
    the keys in sorted order: the same string, without building a dict and sorting it per event.
    Raises TypeError for a field that is not a str or None (``test_store_verify`` compares the
    two on generated events)."""
    e = enc.event
    return "".join(
        (
            '{"action":',
            "null" if e.action is None else _quote(str(e.action)),
            ',"app":',
            _q(e.app),
            ',"catalogue_version":',
            _q(e.catalogue_version),
            ',"client":',
            _q(e.client),
            ',"department":',
            _q(e.department),
            ',"detail":null,"event_id":',
            _quote(e.event_id),
            ',"exception_id":',
            _q(e.exception_id),
            ',"host":',
            _q(e.host),
            ',"instance":',
            _quote(e.instance),
            ',"kind":',
            _quote(str(e.kind)),
            ',"policy_version":',
            _q(e.policy_version),
            ',"regimes":',
            enc.regimes,
            ',"rule":',
            _q(e.rule),
            ',"seq":',
            int.__repr__(seq),
            ',"signal":',
            _q(e.signal),
            ',"ts":',
            int.__repr__(round(e.ts * 1_000_000)),
            ',"user":',
            _q(e.user),
            "}",
        )
    )


def _canonical_general(enc: Encoded, seq: int) -> str:
    e = enc.event
    # Re-parse the rendered detail so write and verify hash exactly the same JSON values.
    detail = json.loads(enc.detail) if enc.detail is not None else None
    # Same keys as _payload(); built inline because this runs once per written event.
    return _ENCODER.encode(
        {
            "instance": e.instance,
            "seq": seq,
            "event_id": e.event_id,
            "ts": round(e.ts * 1_000_000),
            "kind": str(e.kind),
            "signal": e.signal,
            "host": e.host,
            "app": e.app,
            "regimes": list(e.regimes),
            "action": None if e.action is None else str(e.action),
            "rule": e.rule,
            "exception_id": e.exception_id,
            "client": e.client,
            "user": e.user,
            "department": e.department,
            "catalogue_version": e.catalogue_version,
            "policy_version": e.policy_version,
            "detail": detail,
        }
    )


def leaf_hash(canonical: str) -> str:
    return hashlib.sha256(b"\x00" + canonical.encode("utf-8")).hexdigest()


def chain_hash(prev: str, leaf: str) -> str:
    return hashlib.sha256(bytes.fromhex(prev) + bytes.fromhex(leaf)).hexdigest()


def build_rows(
    encoded: Sequence[Encoded], heads: Mapping[str, tuple[int, str]]
) -> tuple[list[tuple[Any, ...]], dict[str, tuple[int, str]]]:
    """Assign seq and hashes; ``heads`` maps instance -> (seq, chain) before this batch."""
    new_heads = dict(heads)
    rows = []
    for enc in encoded:
        e = enc.event
        seq, prev = new_heads.get(e.instance, (0, GENESIS))
        seq += 1
        leaf = leaf_hash(_canonical_of(enc, seq))
        chain = chain_hash(prev, leaf)
        new_heads[e.instance] = (seq, chain)
        rows.append(
            (
                e.instance,
                seq,
                e.event_id,
                float(e.ts),
                str(e.kind),
                e.signal,
                e.host,
                e.app,
                enc.regimes,
                None if e.action is None else str(e.action),
                e.rule,
                e.exception_id,
                e.client,
                e.user,
                e.department,
                e.catalogue_version,
                e.policy_version,
                enc.detail,
                leaf,
                chain,
            )
        )
    return rows, new_heads


RollupKey = tuple[str, str, str, str, str, str, str, str]


def rollup_deltas(events: Iterable[Event]) -> dict[RollupKey, list[Any]]:
    """Aggregate hit events of one batch: key -> [events, first_seen, last_seen]."""
    out: dict[RollupKey, list[Any]] = {}
    for e in events:
        if e.kind != EventKind.HIT:
            continue
        key = (
            day_of(e.ts),
            e.instance,
            e.app or "",
            ",".join(sorted(e.regimes)),
            str(e.action or ""),
            e.department or "",
            e.client or "",
            e.host or "",
        )
        agg = out.get(key)
        if agg is None:
            out[key] = [1, e.ts, e.ts]
        else:
            agg[0] += 1
            if e.ts < agg[1]:
                agg[1] = e.ts
            if e.ts > agg[2]:
                agg[2] = e.ts
    return out


def check_dimensions(by: Sequence[str]) -> list[str]:
    allowed = (*ROLLUP_DIMENSIONS, EACH_REGIME)
    bad = [b for b in by if b not in allowed]
    if bad or len(set(by)) != len(by) or (EACH_REGIME in by and "regime" in by):
        raise ValueError(f"summarise by {list(by)}: use distinct names from {allowed}")
    return list(by)


# Each regime of a row on its own: SQLite through json_each over the list made JSON, PostgreSQL
# through unnest(string_to_array()). A row without regimes counts once under "".
_SPLIT_SQLITE = (
    "json_each(CASE WHEN regime = '' THEN '[\"\"]' ELSE '[\"' || "
    "replace(replace(replace(regime, '\\', '\\\\'), '\"', '\\\"'), ',', '\",\"') "
    "|| '\"]' END) AS each_regime"
)
_SPLIT_POSTGRES = (
    "unnest(CASE WHEN regime = '' THEN ARRAY[''] ELSE string_to_array(regime, ',') END) "
    "AS each_regime(value)"
)


def summary_sql(by: Sequence[str], mark: str, top: int | None = None, clients: bool = True) -> str:
    """The grouped query; ``mark`` is the driver's placeholder (``?`` SQLite, ``%s`` psycopg).

    Keys are ordered in code-point order on both backends (``COLLATE "C"`` on PostgreSQL), as
    Python sorts them, so a ``top`` cut at a tie picks the same rows everywhere. ``clients=False``
    skips the distinct-client count (0 in the result), the dearest part of a grouping.

    PostgreSQL groups in two hashed steps: first by the keys and the client (and the app, for
    ``top``), then by the keys, where counting clients is counting rows. That avoids sorting the
    month's million rollup rows for ``COUNT(DISTINCT)``, which takes about twice as long.
    """
    dims = check_dimensions(by)
    if top is not None and (len(dims) != 1 or top < 1):
        raise ValueError("summarise(top=N) takes one dimension and N >= 1")
    pg = mark != "?"
    cols = [("each_regime.value" if d == EACH_REGIME else d) for d in dims]
    source = "rollups"
    if EACH_REGIME in dims:
        source += f" CROSS JOIN LATERAL {_SPLIT_POSTGRES}" if pg else f", {_SPLIT_SQLITE}"
    where = f"day >= {mark} AND day <= {mark}"
    if top is not None:
        where += f" AND {cols[0]} <> ''"
    if not pg:
        distinct = "COUNT(DISTINCT NULLIF(client, ''))" if clients else "0"
        select = "".join(f"{c}, " for c in cols)
        apps = ", group_concat(DISTINCT app)" if top is not None else ""
        aggregates = f"SUM(events), {distinct}, MIN(first_seen), MAX(last_seen){apps}"
        sql = f"SELECT {select}{aggregates} FROM {source} WHERE {where}"
        if top is not None:
            return f"{sql} GROUP BY {cols[0]} ORDER BY SUM(events) DESC, {cols[0]} LIMIT {int(top)}"
        if cols:
            sql += f" GROUP BY {', '.join(cols)} ORDER BY {', '.join(cols)}"
        return sql
    keys = [f"k{i}" for i in range(len(cols))]
    inner_cols = [f"{c} AS {k}" for c, k in zip(cols, keys, strict=True)]
    inner_group = list(cols)
    if clients:
        inner_cols.append("client AS cl")
        inner_group.append("client")
    if top is not None:
        inner_cols.append("app AS ap")
        inner_group.append("app")
    inner = (
        f"SELECT {''.join(c + ', ' for c in inner_cols)}SUM(events) AS ev, "
        f"MIN(first_seen) AS f, MAX(last_seen) AS l FROM {source} WHERE {where}"
        + (f" GROUP BY {', '.join(inner_group)}" if inner_group else "")
    )
    if not clients:
        distinct = "0"
    elif top is not None:  # several inner rows per client (one per app)
        distinct = "COUNT(DISTINCT NULLIF(cl, ''))"
    else:  # one inner row per (keys, client)
        distinct = "COUNT(NULLIF(cl, ''))"
    apps = ", string_agg(DISTINCT ap, ',')" if top is not None else ""
    select = "".join(f"{k}, " for k in keys)
    sql = f"SELECT {select}SUM(ev), {distinct}, MIN(f), MAX(l){apps} FROM ({inner}) AS g"
    collated = [f'{k} COLLATE "C"' for k in keys]
    if top is not None:
        return f"{sql} GROUP BY {keys[0]} ORDER BY SUM(ev) DESC, {collated[0]} LIMIT {int(top)}"
    if keys:
        sql += f" GROUP BY {', '.join(keys)} ORDER BY {', '.join(collated)}"
    return sql


def summaries(
    rows: Iterable[Sequence[Any]], width: int, top: int | None = None
) -> list[RollupSummary]:
    out = []
    for r in rows:
        if r[width] is None:
            continue
        apps: tuple[str, ...] = ()
        if top is not None:
            # App ids are [a-z0-9-]+: a comma never occurs in one.
            apps = tuple(sorted(set((r[width + 4] or "").split(","))))
        out.append(
            RollupSummary(
                tuple(r[:width]),
                int(r[width]),
                int(r[width + 1]),
                float(r[width + 2]),
                float(r[width + 3]),
                apps,
            )
        )
    return out


def rollup_row(values: Sequence[Any]) -> RollupRow:
    """From ``(day, instance, app, regime, action, department, client, host, events, first, last)``."""
    day = values[0]
    return RollupRow(
        day=day if isinstance(day, str) else day.isoformat(),
        instance=values[1],
        app=values[2],
        regime=values[3],
        action=values[4],
        department=values[5],
        client=values[6],
        host=values[7],
        events=int(values[8]),
        first_seen=float(values[9]),
        last_seen=float(values[10]),
    )


def row_to_event(row: Row) -> Event:
    detail = row[17]
    return Event(
        ts=float(row[3]),
        kind=EventKind(row[4]),
        instance=row[0],
        event_id=row[2],
        signal=row[5],
        host=row[6],
        app=row[7],
        regimes=tuple(json.loads(row[8])) if row[8] and row[8] != "[]" else (),
        action=row[9],
        rule=row[10],
        exception_id=row[11],
        client=row[12],
        user=row[13],
        department=row[14],
        catalogue_version=row[15] or "",
        policy_version=row[16] or "",
        detail=json.loads(detail) if detail is not None else None,
    )


def _row_canonical(row: Row, seq: int) -> str:
    values = dict(zip(COLUMNS, row, strict=True))
    regimes = json.loads(row[8]) if row[8] else []
    detail = json.loads(row[17]) if row[17] is not None else None
    return canonical_json(_payload(values, regimes, detail, seq))


_esc = json.encoder.encode_basestring  # the C implementation when available (as the encoder's)


@functools.lru_cache(maxsize=1024)
def _regimes_canonical(text: str) -> str:
    # A handful of distinct regime lists in a whole store: parse and re-render each once.
    return canonical_json(json.loads(text))


def _fast_canonical(row: Row, seq: int) -> str:
    """:func:`_row_canonical` without a dict, a sort and an encoder pass per row (the verifier's
    hot path; equal output for every row whose text columns are ``str`` or ``None``; keys in
    sorted order, as the canonical form wants)."""
    (inst, _, eid, ts, kind, signal, host, app, regimes, action, rule, exc, client, user, dept,
     cat, pol, detail) = row[:18]  # fmt: skip
    n = "null"
    e = _esc
    return (
        f'{{"action":{n if action is None else e(action)},"app":{n if app is None else e(app)},'
        f'"catalogue_version":{n if cat is None else e(cat)},'
        f'"client":{n if client is None else e(client)},'
        f'"department":{n if dept is None else e(dept)},'
        f'"detail":{n if detail is None else canonical_json(json.loads(detail))},'
        f'"event_id":{n if eid is None else e(eid)},"exception_id":{n if exc is None else e(exc)},'
        f'"host":{n if host is None else e(host)},"instance":{n if inst is None else e(inst)},'
        f'"kind":{e(kind)},"policy_version":{n if pol is None else e(pol)},'
        f'"regimes":{_regimes_canonical(regimes) if regimes else "[]"},'
        f'"rule":{n if rule is None else e(rule)},"seq":{int(seq)},'
        f'"signal":{n if signal is None else e(signal)},"ts":{round(ts * 1_000_000)},'
        f'"user":{n if user is None else e(user)}}}'
    )


def row_leaf(row: Row, seq: int) -> str | None:
    """The leaf hash ``row`` would have at ``seq``; ``None`` when its columns cannot be read
    (not JSON where JSON belongs, a number where text belongs): such a row is edited."""
    try:
        try:
            text = _fast_canonical(row, seq)
        except TypeError:
            text = _row_canonical(row, seq)  # odd column types: the general encoder
    except (TypeError, ValueError, KeyError):
        return None
    return hashlib.sha256(b"\x00" + text.encode("utf-8")).hexdigest()


class ChainVerifier:
    """Walk one instance's rows in (seq, insertion) order and name what does not fit.

    Problems (one per row at most, so a single tampering is not reported as a cascade):

    - ``deleted``: a seq gap (or rows missing at the tail, per the recorded chain head)
    - ``inserted``: a duplicate seq, a row at or before the prune checkpoint, a row whose chain
      hash does not follow from its predecessor, or rows beyond the recorded chain head
    - ``reordered``: the row's leaf matches the same content at another seq
    - ``edited``: the row's content does not match its leaf hash
    - ``broken``: the recorded chain head disagrees with the last row
    """

    def __init__(self, instance: str, checkpoint: tuple[int, str] | None) -> None:
        self.instance = instance
        self.start_seq, self.prev_chain = checkpoint if checkpoint else (0, GENESIS)
        self.expected = self.start_seq + 1
        self.last_seq: int | None = None
        self.last_chain = self.prev_chain
        self.prev_clean = True
        self.checked = 0
        self.problems: list[VerifyProblem] = []
        self._budget = REORDER_BUDGET

    def _problem(self, seq: int | None, kind: str, message: str) -> None:
        self.problems.append(VerifyProblem(self.instance, seq, kind, message))

    def _original_seq(self, row: Row, seq: int) -> int | None:
        if self._budget <= 0:
            return None
        self._budget -= 1
        for delta in range(1, REORDER_WINDOW + 1):
            for cand in (seq - delta, seq + delta):
                if cand > 0 and row_leaf(row, cand) == row[18]:
                    return cand
        return None

    def feed(self, row: Row) -> None:
        seq = int(row[1])
        self.checked += 1
        if seq <= self.start_seq:
            self._problem(
                seq, "inserted", f"row at or before the prune checkpoint #{self.start_seq}"
            )
            self.prev_clean = False
            return
        if self.last_seq is not None and seq == self.last_seq:
            self._problem(seq, "inserted", f"duplicate seq (event_id {row[2]!r})")
            self.prev_clean = False
            return
        clean = True
        if seq > self.expected:
            missing = (
                f"#{self.expected}" if seq == self.expected + 1 else f"#{self.expected}..#{seq - 1}"
            )
            self._problem(self.expected, "deleted", f"rows {missing} are missing")
            clean = False
        if row_leaf(row, seq) != row[18]:
            orig = self._original_seq(row, seq)
            if orig is not None:
                self._problem(
                    seq, "reordered", f"holds the event written as #{orig} (event_id {row[2]!r})"
                )
            else:
                self._problem(
                    seq, "edited", f"content does not match its leaf hash (event_id {row[2]!r})"
                )
            clean = False
        elif (
            clean
            and self.prev_clean
            and hashlib.sha256(bytes.fromhex(self.prev_chain + row[18])).hexdigest() != row[19]
        ):
            self._problem(
                seq,
                "inserted",
                "chain hash does not follow from the previous row "
                "(a row inserted, or the previous row rewritten with recomputed hashes)",
            )
            clean = False
        self.prev_clean = clean
        self.prev_chain = row[19]
        self.last_seq = seq
        self.last_chain = row[19]
        self.expected = seq + 1

    def finish(self, head: ChainHead | None) -> ChainHead:
        """Compare the end of the walk with the recorded head; returns the head to report."""
        last_seq = self.last_seq if self.last_seq is not None else self.start_seq
        if head is not None:
            if head.seq > last_seq:
                missing = (
                    f"#{last_seq + 1}"
                    if head.seq == last_seq + 1
                    else f"#{last_seq + 1}..#{head.seq}"
                )
                self._problem(
                    last_seq + 1, "deleted", f"rows {missing} are missing at the end of the chain"
                )
            elif head.seq < last_seq:
                self._problem(
                    head.seq + 1,
                    "inserted",
                    f"rows after the recorded chain head #{head.seq} (up to #{last_seq})",
                )
            elif head.chain_hash != self.last_chain and not self.problems:
                self._problem(head.seq, "broken", "recorded chain head does not match the last row")
            return head
        return ChainHead(self.instance, last_seq, self.last_chain)


@dataclass(frozen=True, slots=True)
class Start:
    """Where one instance's verification starts: after ``seq`` whose chain hash is ``chain``."""

    seq: int
    chain: str
    mode: str  # "full" | "incremental"
    base: VerificationRun | None = None


def plan(
    heads: Mapping[str, tuple[int, str]],
    checkpoints: Mapping[str, tuple[int, str]],
    latest: Mapping[str, VerificationRun],
    full: bool,
) -> dict[str, Start]:
    """Per instance: continue after the latest run when it succeeded and is not behind the prune
    checkpoint (incremental), else start from the checkpoint or the first row (full)."""
    out = {}
    for inst in heads:
        cp_seq, cp_chain = checkpoints.get(inst, (0, GENESIS))
        base = None if full else latest.get(inst)
        if base is not None and base.ok and base.to_seq > cp_seq:
            out[inst] = Start(base.to_seq, base.chain_hash, "incremental", base)
        else:
            out[inst] = Start(cp_seq, cp_chain, "full")
    return out


def verify_stream(
    rows: Iterable[Row],
    heads: Mapping[str, tuple[int, str]],
    checkpoints: Mapping[str, tuple[int, str]],
    instance: str | None = None,
    starts: Mapping[str, Start] | None = None,
    anchors: Mapping[str, Sequence[str]] | None = None,
) -> VerifyResult:
    """Verify rows sorted by (instance, seq, insertion order) against recorded heads/checkpoints.

    With ``starts`` (from :func:`plan`), an incremental instance's rows are only those after its
    start, ``anchors[instance]`` holds the chain hashes of the rows now stored at the start seq
    (exactly one, equal to the verified head, or the rows verified earlier were changed).
    """
    problems: list[VerifyProblem] = []
    out_heads: list[ChainHead] = []
    checked = 0
    seen: set[str] = set()
    per_instance: dict[str, int] = {}
    starts = starts or {}
    anchors = anchors or {}

    def begin(name: str) -> ChainVerifier:
        st = starts.get(name)
        if st is None:
            return ChainVerifier(name, checkpoints.get(name))
        v = ChainVerifier(name, (st.seq, st.chain))
        head = heads.get(name)
        if st.base is not None and (head is None or head[0] >= st.seq):
            base = st.base
            found = list(anchors.get(name, ()))
            what = f"verified by run #{base.id}"
            if not found:
                v._problem(base.to_seq, "deleted", f"row #{base.to_seq} ({what}) is missing")
            elif len(found) > 1:
                v._problem(base.to_seq, "inserted", f"duplicate seq #{base.to_seq} ({what})")
            elif found[0] != base.chain_hash:
                v._problem(
                    base.to_seq,
                    "edited",
                    f"row #{base.to_seq} no longer carries the chain hash {what} "
                    "(rows verified earlier were rewritten: run a full verify)",
                )
        return v

    def finish(v: ChainVerifier) -> None:
        nonlocal checked
        per_instance[v.instance] = v.checked
        head = heads.get(v.instance)
        st = starts.get(v.instance)
        if st is not None and st.base is not None and head is not None and head[0] < st.seq:
            v._problem(
                head[0] + 1,
                "deleted",
                f"rows #{head[0] + 1}..#{st.seq} verified by run #{st.base.id} are gone: the "
                f"recorded chain head #{head[0]} is behind them (tail truncated)",
            )
            out_heads.append(ChainHead(v.instance, *head))
        else:
            out_heads.append(v.finish(ChainHead(v.instance, *head) if head is not None else None))
        problems.extend(v.problems)
        checked += v.checked
        seen.add(v.instance)

    current: ChainVerifier | None = None
    for row in rows:
        if current is None or row[0] != current.instance:
            if current is not None:
                finish(current)
            current = begin(row[0])
        current.feed(row)
    if current is not None:
        finish(current)
    # Instances whose rows are all gone (pruned, or deleted behind our back), or with no rows
    # after the last verified head.
    for name in sorted(set(heads) - seen):
        if instance is None or name == instance:
            finish(begin(name))
    out_heads.sort(key=lambda h: h.instance)
    return VerifyResult(
        not problems, checked, tuple(out_heads), tuple(problems), dict(sorted(per_instance.items()))
    )


def run_records(
    result: VerifyResult,
    starts: Mapping[str, Start],
    started_at: float,
    finished_at: float,
) -> list[VerificationRun]:
    """This run's rows for the ``verifications`` table (ids not yet assigned)."""
    out = []
    for head in result.heads:
        st = starts.get(head.instance, Start(0, GENESIS, "full"))
        n_problems = sum(1 for p in result.problems if p.instance == head.instance)
        out.append(
            VerificationRun(
                id=None,
                instance=head.instance,
                mode=st.mode,
                from_seq=st.seq + 1,
                to_seq=head.seq,
                chain_hash=head.chain_hash,
                ok=n_problems == 0,
                problems=n_problems,
                checked=result.per_instance.get(head.instance, 0),
                base_id=st.base.id if st.base is not None else None,
                started_at=started_at,
                finished_at=finished_at,
            )
        )
    return out


def history(
    starts: Mapping[str, Start], lookup: Callable[[int], VerificationRun | None]
) -> tuple[VerificationRun, ...]:
    """The earlier runs each incremental instance builds on, oldest first, back to a full run."""
    out: list[VerificationRun] = []
    for name in sorted(starts):
        chain: list[VerificationRun] = []
        run = starts[name].base
        while run is not None and len(chain) < 1000:
            chain.append(run)
            run = lookup(run.base_id) if run.mode == "incremental" and run.base_id else None
        out.extend(reversed(chain))
    return tuple(out)


def verification_run(row: Sequence[Any]) -> VerificationRun:
    """From a ``verifications`` row in :data:`VERIFICATION_COLUMNS` order."""
    return VerificationRun(
        id=int(row[0]),
        instance=row[1],
        mode=row[2],
        from_seq=int(row[3]),
        to_seq=int(row[4]),
        chain_hash=row[5],
        ok=bool(row[6]),
        problems=int(row[7]),
        checked=int(row[8]),
        base_id=None if row[9] is None else int(row[9]),
        started_at=float(row[10]),
        finished_at=float(row[11]),
    )


def with_runs(
    result: VerifyResult,
    mode: str,
    runs: Sequence[VerificationRun],
    earlier: tuple[VerificationRun, ...],
) -> VerifyResult:
    return VerifyResult(
        result.ok,
        result.checked,
        result.heads,
        result.problems,
        result.per_instance,
        mode,
        tuple(runs),
        earlier,
    )
