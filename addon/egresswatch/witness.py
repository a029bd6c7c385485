"""The store checked against signed checkpoints kept outside it, and the rollups recounted.

- :func:`make_checkpoint` builds an instance's checkpoint from the store (the writer signs it);
- :func:`verify_checkpoints` checks a store against the entries of one or more checkpoint logs
  (the one beside the store, or a copy a SIEM kept): a rewritten chain (edited rows whose later
  hashes and chain head were recomputed), a truncated one (newest rows cut and the head rewound),
  a rollback (an older copy of the database put back), deleted or edited verification records,
  and a log whose own history goes backwards; each named with the first row that disagrees;
- :func:`verify_rollups` recounts the daily rollups from the chained hit rows;
- :func:`check_checkpoint` and :func:`checkpoints_covering` are what a report embeds and checks.

Nothing here writes: problems are values (:class:`~egresswatch.store.VerifyProblem`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from typing import Any

from .checkpoint import Checkpoint
from .checkpoint import CheckpointError
from .checkpoint import LoggedCheckpoint
from .checkpoint import Verifier
from .checkpoint import runs_digest
from .store import EventStore
from .store import VerifyProblem
from .store import _rollups

__all__ = [
    "Witnessed",
    "WitnessResult",
    "check_checkpoint",
    "checkpoints_covering",
    "make_checkpoint",
    "verify_checkpoints",
    "verify_rollups",
    "verify_signatures",
]


@dataclass(frozen=True, slots=True)
class Witnessed:
    """A checkpoint whose signature verified, with the log entry it came from."""

    checkpoint: Checkpoint
    source: str  # "file:line"
    note: str


@dataclass(slots=True)
class WitnessResult:
    """What :func:`verify_checkpoints` found. ``notes`` are statements, not errors (rows not
    yet witnessed, instances never witnessed, checkpoints older than the pruned rows)."""

    problems: list[VerifyProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: int = 0  # checkpoints compared with the store
    latest: dict[str, Witnessed] = field(default_factory=dict)  # per instance

    @property
    def ok(self) -> bool:
        return not self.problems


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_checkpoint(store: EventStore, instance: str, now: float) -> Checkpoint | None:
    """``instance``'s checkpoint as the store holds it now (``None``: no chain yet)."""
    head = next((h for h in store.chain_heads() if h.instance == instance), None)
    if head is None:
        return None
    runs = store.verifications(instance)
    last = max((r.id or 0 for r in runs), default=0)
    return Checkpoint(instance, head.seq, head.chain_hash, now, len(runs), last, runs_digest(runs))


def verify_signatures(
    entries: Iterable[LoggedCheckpoint], verifier: Verifier
) -> tuple[list[Witnessed], list[VerifyProblem]]:
    """The entries signed by ``verifier``'s key; every other entry is a ``forged`` problem."""
    good: list[Witnessed] = []
    bad: list[VerifyProblem] = []
    for e in entries:
        try:
            cp = verifier.verify(e.note)
        except CheckpointError as exc:
            bad.append(VerifyProblem(e.source, None, "forged", str(exc)))
            continue
        good.append(Witnessed(cp, e.source, e.note))
    return good, bad


def _log_history(name: str, cps: list[Witnessed]) -> list[VerifyProblem]:
    """The log's own story must not go backwards: in time order, sizes never shrink and one size
    has one head (else the store was rolled back or forked while the proxy ran)."""
    out: list[VerifyProblem] = []
    by_size: dict[int, Witnessed] = {}
    top: Witnessed | None = None
    for w in sorted(cps, key=lambda w: w.checkpoint.time):
        cp = w.checkpoint
        seen = by_size.get(cp.size)
        if seen is not None and seen.checkpoint.head != cp.head:
            shared = max((n for n in by_size if n < cp.size), default=0)
            out.append(
                VerifyProblem(
                    name,
                    shared + 1,
                    "rolled back",
                    f"checkpoints {seen.source} and {w.source} sign two different heads at "
                    f"#{cp.size}: the chain was replaced between {_when(seen.checkpoint.time)} "
                    f"and {_when(cp.time)}",
                )
            )
        by_size.setdefault(cp.size, w)
        if top is not None and cp.size < top.checkpoint.size:
            out.append(
                VerifyProblem(
                    name,
                    cp.size + 1,
                    "rolled back",
                    f"checkpoint {w.source} ({_when(cp.time)}) has {cp.size} events, fewer than "
                    f"the {top.checkpoint.size} of {top.source} ({_when(top.checkpoint.time)}): "
                    f"rows #{cp.size + 1}..#{top.checkpoint.size} were taken back",
                )
            )
        if top is None or cp.size >= top.checkpoint.size:
            top = w
    return out


def check_checkpoint(store: EventStore, w: Witnessed) -> list[VerifyProblem]:
    """``w`` against the store: the row at its size must carry its head (report re-checks)."""
    return _check_chain(store, w.checkpoint.instance, [w], None)


def _check_chain(
    store: EventStore, name: str, cps: list[Witnessed], result: WitnessResult | None
) -> list[VerifyProblem]:
    heads = {h.instance: h for h in store.chain_heads()}
    pruned = store.prune_points().get(name)
    head = heads.get(name)
    ordered = sorted(cps, key=lambda w: (w.checkpoint.size, w.checkpoint.time))
    if head is None:
        top = ordered[-1]
        return [
            VerifyProblem(
                name,
                1,
                "deleted",
                f"no chain for this instance in the store, but {top.source} witnessed "
                f"{top.checkpoint.size} events at {_when(top.checkpoint.time)}",
            )
        ]
    found = store.chain_hashes_at(name, [w.checkpoint.size for w in ordered])
    agreed = pruned[0] if pruned else 0
    skipped = 0
    for w in ordered:
        cp = w.checkpoint
        if pruned is not None and cp.size <= pruned[0]:
            if cp.size == pruned[0] and cp.head != pruned[1]:
                return [
                    VerifyProblem(
                        name,
                        cp.size,
                        "edited",
                        f"the prune checkpoint at #{cp.size} carries {pruned[1]}, but {w.source} "
                        f"signed {cp.head} at {_when(cp.time)}",
                    )
                ]
            skipped += 1
            continue
        if result is not None:
            result.checked += 1
        hashes = found.get(cp.size, [])
        if not hashes and head.seq < cp.size:
            return [
                VerifyProblem(
                    name,
                    head.seq + 1,
                    "deleted",
                    f"rows #{head.seq + 1}..#{cp.size} are missing: {w.source} witnessed "
                    f"{cp.size} events at {_when(cp.time)}, the store's chain ends at "
                    f"#{head.seq} (truncated, or an older copy of the database restored)",
                )
            ]
        if hashes != [cp.head]:
            what = "missing" if not hashes else ("stored twice" if len(hashes) > 1 else "")
            got = what or f"carries {hashes[0]}"
            return [
                VerifyProblem(
                    name,
                    agreed + 1,
                    "rewritten",
                    f"rows #{agreed + 1}..#{cp.size} disagree with {w.source}: it signed chain "
                    f"hash {cp.head} for #{cp.size} at {_when(cp.time)}; the store's row "
                    f"#{cp.size} {got} (rows rewritten with recomputed hashes, or replaced)",
                )
            ]
        agreed = cp.size
    if result is not None and skipped:
        result.notes.append(
            f"{name}: {skipped} checkpoint(s) at or before the pruned row #{pruned[0] if pruned else 0} "
            "cannot be compared (rows pruned)"
        )
    return []


def _check_runs(store: EventStore, name: str, cps: list[Witnessed]) -> list[VerifyProblem]:
    """Each distinct commitment to the verification runs must still match the store's records."""
    runs = store.verifications(name)
    seen: set[tuple[int, int, str]] = set()
    earlier = 0
    for w in sorted(cps, key=lambda w: (w.checkpoint.runs_last_id, w.checkpoint.time)):
        cp = w.checkpoint
        key = (cp.runs, cp.runs_last_id, cp.runs_digest)
        if key in seen:
            continue
        seen.add(key)
        mine = [r for r in runs if (r.id or 0) <= cp.runs_last_id]
        if len(mine) != cp.runs or runs_digest(mine) != cp.runs_digest:
            return [
                VerifyProblem(
                    name,
                    None,
                    "deleted",
                    f"verification records changed: {w.source} ({_when(cp.time)}) covers "
                    f"{cp.runs} run(s) of this instance up to run #{cp.runs_last_id}; the store "
                    f"holds {len(mine)} of them; the first that disagrees is after run #{earlier} "
                    "(a record deleted or edited)",
                )
            ]
        earlier = cp.runs_last_id
    return []


def verify_checkpoints(
    store: EventStore,
    entries: Sequence[LoggedCheckpoint],
    verifier: Verifier,
    instance: str | None = None,
) -> WitnessResult:
    """Check ``store`` against every checkpoint of ``entries`` signed by ``verifier``."""
    result = WitnessResult()
    good, forged = verify_signatures(entries, verifier)
    result.problems.extend(forged)
    per: dict[str, list[Witnessed]] = {}
    for w in good:
        if instance is None or w.checkpoint.instance == instance:
            per.setdefault(w.checkpoint.instance, []).append(w)
    heads = {h.instance: h for h in store.chain_heads()}
    for name in sorted(per):
        cps = per[name]
        result.problems.extend(_log_history(name, cps))
        result.problems.extend(_check_chain(store, name, cps, result))
        result.problems.extend(_check_runs(store, name, cps))
        top = max(cps, key=lambda w: (w.checkpoint.size, w.checkpoint.time))
        result.latest[name] = top
        head = heads.get(name)
        if head is not None and head.seq > top.checkpoint.size:
            result.notes.append(
                f"{name}: rows #{top.checkpoint.size + 1}..#{head.seq} are not yet witnessed "
                f"(written after the last checkpoint, {top.source} at "
                f"{_when(top.checkpoint.time)})"
            )
    for name in sorted(heads):
        if name not in per and (instance is None or name == instance):
            result.notes.append(
                f"{name}: not witnessed: no checkpoint of this instance in the log "
                f"(rows #1..#{heads[name].seq} are checked against the database only)"
            )
    return result


def checkpoints_covering(
    witnessed: Iterable[Witnessed], start: float, end: float, instance: str | None = None
) -> list[Witnessed]:
    """Per instance, the checkpoints a report of ``[start, end)`` embeds: the last one signed
    before ``start`` (the chain as the period began), and the first one signed at or after
    ``end`` (it covers every event of the period), else the latest one. Sorted by instance and
    time."""
    per: dict[str, list[Witnessed]] = {}
    for w in witnessed:
        if instance is None or w.checkpoint.instance == instance:
            per.setdefault(w.checkpoint.instance, []).append(w)
    out: list[Witnessed] = []
    for name in sorted(per):
        cps = sorted(per[name], key=lambda w: w.checkpoint.time)
        before = [w for w in cps if w.checkpoint.time < start]
        after = [w for w in cps if w.checkpoint.time >= end]
        chosen = ([before[-1]] if before else []) + ([after[0]] if after else [cps[-1]])
        out.extend(dict.fromkeys(chosen))
    return out


@functools.lru_cache(maxsize=256)
def _regime_list(text: str | None) -> tuple[str, ...]:
    return tuple(json.loads(text)) if text and text != "[]" else ()


def verify_rollups(
    store: EventStore, instance: str | None = None, skip: Iterable[str] = ()
) -> tuple[list[VerifyProblem], list[str]]:
    """Recount the daily rollups from the chained hit rows and compare, row by row.

    The hit rows are grouped in the database (:meth:`EventStore.hit_groups`); groups whose
    regimes lists differ only in order are merged here. Days that may hold pruned events (up to
    the day of the first row kept after an instance's prune point) cannot be recounted: they
    are named in the notes, not checked. A rollup row that differs, is missing or has no events
    behind it is a ``rollup`` problem. Instances in ``skip`` (whose chain already has problems:
    their rows are not evidence) are not recounted.
    """
    skipped_instances = set(skip)
    pruned = store.prune_points()
    groups, first_kept = store.hit_groups()

    def wanted(inst: str) -> bool:
        return (instance is None or inst == instance) and inst not in skipped_instances

    counted: dict[tuple[str, ...], list[Any]] = {}
    for day, inst, app, regimes, by, by_id, action, dept, client, host, n, first, last in groups:
        if not wanted(inst):
            continue
        regime = _rollups.rollup_regime(_regime_list(regimes), by, by_id)
        gkey = (_rollups.day_of(int(day) * 86400.0), inst, app, regime, action,
                dept, client, host)  # fmt: skip
        agg = counted.get(gkey)
        if agg is None:
            counted[gkey] = [int(n), float(first), float(last)]
        else:
            agg[0] += int(n)
            agg[1] = min(agg[1], float(first))
            agg[2] = max(agg[2], float(last))
    # Days an instance's pruned rows may have touched: up to the day of its first kept row.
    cutoff = {
        inst: (_rollups.day_of(first_kept[inst]) if inst in first_kept else "9999-12-31")
        for inst in pruned
    }
    problems: list[VerifyProblem] = []
    skipped: dict[str, int] = {}

    def uncounted(day: str, inst: str) -> bool:
        if inst in cutoff and day <= cutoff[inst]:
            skipped[inst] = skipped.get(inst, 0) + 1
            return True
        return False

    def problem(key: tuple[str, ...], msg: str) -> None:
        problems.append(VerifyProblem(key[1], None, "rollup", f"rollup {'/'.join(key)}: {msg}"))

    for r in store.rollups(0.0, 253402300799.0):
        if not wanted(r.instance):
            continue
        key = (r.day, r.instance, r.app, r.regime, r.action, r.department, r.client, r.host)
        c = counted.pop(key, None)
        if uncounted(r.day, r.instance):
            continue
        if c is None:
            problem(key, f"says {r.events} event(s); no chained hit row behind it")
        elif (r.events, r.first_seen, r.last_seen) != (c[0], c[1], c[2]):
            problem(
                key,
                f"says {r.events} event(s) ({_when(r.first_seen)}..{_when(r.last_seen)}); "
                f"the chained hit rows count {c[0]} ({_when(c[1])}..{_when(c[2])})",
            )
    for hkey, c in counted.items():  # hits with no rollup row
        if not uncounted(hkey[0], hkey[1]):
            problem(hkey, f"missing; the chained hit rows count {c[0]} event(s)")
    problems.sort(key=lambda p: p.message)
    notes = [
        f"{inst}: {n} rollup row(s) up to {cutoff[inst]} not recounted (their events were pruned)"
        for inst, n in sorted(skipped.items())
    ]
    notes += [
        f"{inst}: rollups not recounted (the chain has problems)"
        for inst in sorted(skipped_instances)
    ]
    return problems, notes
