"""Chain verification: walk each instance's rows in order, recompute every leaf and chain hash,
and name what does not fit; plan incremental runs from the recorded ones.

The hashes themselves (:func:`~._codec.row_leaf`, :func:`~._codec.chain_hash`) are the codec's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import ChainHead
from . import VerificationRun
from . import VerifyProblem
from . import VerifyResult
from ._codec import CHAIN
from ._codec import GENESIS
from ._codec import LEAF
from ._codec import Row
from ._codec import row_leaf

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
# How far (in seq) the verifier looks for the original position of a row whose leaf does not
# match its seq, to tell "reordered" from "edited"; and how many such rows it searches at most.
REORDER_WINDOW = 256
REORDER_BUDGET = 200


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
                if cand > 0 and row_leaf(row, cand) == row[LEAF]:
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
        if row_leaf(row, seq) != row[LEAF]:
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
            and hashlib.sha256(bytes.fromhex(self.prev_chain + row[LEAF])).hexdigest() != row[CHAIN]
        ):
            self._problem(
                seq,
                "inserted",
                "chain hash does not follow from the previous row "
                "(a row inserted, or the previous row rewritten with recomputed hashes)",
            )
            clean = False
        self.prev_clean = clean
        self.prev_chain = row[CHAIN]
        self.last_seq = seq
        self.last_chain = row[CHAIN]
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
