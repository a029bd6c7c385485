"""Reports that can be checked later (issue 12, item 2): the JSON report sealed with the signed
checkpoints it was built from and its own digest, and :func:`verify_report`, which re-derives
every figure from the store and checks those checkpoints.

The seal adds two top-level keys to the JSON report:

- ``evidence``: how the report was built (``built_at``, the exact Unix time used as "now";
  ``top``), the verifier key the checkpoints were checked with, and ``checkpoints``: per
  instance, the signed notes (verbatim) that frame the period
  (:func:`~egresswatch.witness.checkpoints_covering`), each with its instance, size, head, time
  and the log line it came from;
- ``digest``: ``sha256:<hex>`` over the report's canonical JSON (keys sorted, no spaces, UTF-8)
  without the ``digest`` key itself.

:func:`verify_report` stops at the first disagreement and names it: the digest (the file was
edited), a checkpoint's signature (not made by the trusted key) or head (the store no longer
holds it), the hash chains, the rollups recounted from the chained rows, and then each figure
section rebuilt from the store and compared with the file's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from typing import Any

from ..catalogue_model import CatalogueLike
from ..checkpoint import CheckpointError
from ..checkpoint import Verifier
from ..store import EventStore
from ..witness import Witnessed
from ..witness import check_checkpoint
from ..witness import verify_rollups
from .build import build_report
from .model import MonthlyReport
from .render_json import report_to_dict

__all__ = ["FIGURES", "Disagreement", "canonical_digest", "seal", "verify_report"]

#: The sections :func:`verify_report` rebuilds from the store and compares, in report order.
FIGURES = (
    "totals",
    "coverage",
    "exceptions",
    "by_regime",
    "by_department",
    "top_clients",
    "top_hosts",
    "daily",
    "apps",
    "regimes",
    "instances",
)


def canonical_digest(doc: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of ``doc`` without its ``digest`` key, as canonical JSON."""
    body = {k: v for k, v in doc.items() if k != "digest"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal(
    report: MonthlyReport,
    checkpoints: Sequence[Witnessed],
    verifier: Verifier | None,
    *,
    top: int,
) -> dict[str, Any]:
    """The JSON form of ``report`` with its evidence and digest."""
    doc: dict[str, Any] = dict(report_to_dict(report))
    doc["evidence"] = {
        "built_at": report.generated_at,
        "top": top,
        "verifier_key": verifier.text() if verifier is not None else None,
        "checkpoints": [
            {
                "instance": w.checkpoint.instance,
                "size": w.checkpoint.size,
                "head": w.checkpoint.head,
                "time": w.checkpoint.time,
                "source": w.source,
                "note": w.note,
            }
            for w in checkpoints
        ],
    }
    doc["digest"] = canonical_digest(doc)
    return doc


@dataclass(frozen=True, slots=True)
class Disagreement:
    """The first thing that does not hold, with where (``what``) and why."""

    what: str
    message: str

    def __str__(self) -> str:
        return f"{self.what}: {self.message}"


def _first_difference(path: str, mine: object, theirs: object) -> str | None:
    """Where ``theirs`` (rebuilt) first differs from ``mine`` (the file), as ``path: …``."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        for key in sorted(set(mine) | set(theirs)):
            if key not in mine or key not in theirs:
                return f"{path}.{key}: present in only one of the report and the store"
            found = _first_difference(f"{path}.{key}", mine[key], theirs[key])
            if found:
                return found
        return None
    if isinstance(mine, list) and isinstance(theirs, list):
        for i, (a, b) in enumerate(zip(mine, theirs, strict=False)):
            found = _first_difference(f"{path}[{i}]", a, b)
            if found:
                return found
        if len(mine) != len(theirs):
            return f"{path}: the report has {len(mine)} row(s), the store gives {len(theirs)}"
        return None
    if mine != theirs:
        return f"{path}: the report says {mine!r}, the store gives {theirs!r}"
    return None


def verify_report(
    doc: Mapping[str, Any],
    store: EventStore,
    verifier: Verifier | None,
    *,
    catalogue: CatalogueLike | None = None,
    build: Callable[..., MonthlyReport] = build_report,
) -> Disagreement | None:
    """None when the report holds; else the first disagreement (see the module docstring)."""
    digest = doc.get("digest")
    if not isinstance(digest, str) or digest != canonical_digest(doc):
        return Disagreement("digest", f"{digest!r} is not the digest of this report's content")
    evidence = doc.get("evidence")
    if not isinstance(evidence, dict):
        return Disagreement("evidence", "the report carries no evidence section")
    for i, entry in enumerate(evidence.get("checkpoints") or []):
        where = f"evidence.checkpoints[{i}]"
        if verifier is None:
            return Disagreement(where, "no public key to check the signature with")
        try:
            cp = verifier.verify(str(entry.get("note", "")))
        except CheckpointError as e:
            return Disagreement(where, f"signature: {e}")
        if (cp.instance, cp.size, cp.head) != (entry.get("instance"), entry.get("size"),
                                               entry.get("head")):  # fmt: skip
            return Disagreement(where, "the fields beside the note disagree with the signed note")
        problems = check_checkpoint(store, Witnessed(cp, str(entry.get("source", "")), ""))
        if problems:
            return Disagreement(where, str(problems[0]))
    chains = store.verify(full=True, record=False)
    if not chains.ok:
        return Disagreement("store", f"hash chain: {chains.problems[0]}")
    rollup_problems, _notes = verify_rollups(store)
    if rollup_problems:
        return Disagreement("store", f"rollups: {rollup_problems[0]}")
    built_at = evidence.get("built_at")
    if not isinstance(built_at, int | float):
        return Disagreement("evidence.built_at", "missing")
    rebuilt = report_to_dict(
        build(
            store,
            str(doc.get("month")),
            now=datetime.fromtimestamp(float(built_at), UTC),
            top_n=int(evidence.get("top") or 10),
            organisation=doc.get("organisation"),
            catalogue=catalogue,
            verify=False,
        )
    )
    for section in FIGURES:
        found = _first_difference(section, doc.get(section), rebuilt.get(section))
        if found:
            what, _, message = found.partition(": ")
            return Disagreement(what, message)
    return None
