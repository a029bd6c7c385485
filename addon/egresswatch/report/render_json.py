"""The JSON rendering: every section of the report, times as ISO 8601 UTC with ``Z``.

Top-level ``totals`` (app, action, events, distinct_clients, first_seen, last_seen) is the
figure most tools want; every other section follows it. One function per section.
"""

from __future__ import annotations

import json
from dataclasses import fields
from dataclasses import is_dataclass
from typing import Any

from .evasion import EVASION_BLIND_SPOTS
from .evasion import EVASION_NOTES
from .evasion import evasion_summary
from .model import LEGAL_CAVEATS
from .model import Coverage
from .model import Integrity
from .model import MonthlyReport
from .model import VerifiedRange
from .text import iso

__all__ = ["render_json", "report_to_dict"]


def render_json(report: MonthlyReport) -> str:
    return json.dumps(report_to_dict(report), indent=2, ensure_ascii=False) + "\n"


def report_to_dict(report: MonthlyReport) -> dict[str, object]:
    """The JSON form of ``report`` (plain dicts, lists, strings, numbers and booleans)."""
    r = report
    return {
        **_scope(r),
        "totals": [_row(t) for t in r.totals],
        "coverage": [_coverage(c) for c in r.coverage],
        "catalogues": [_row(c) for c in r.catalogues],
        "policies": [_row(p) for p in r.policies],
        "exceptions": [_row(x) for x in r.exceptions],
        "by_regime": [_row(x) for x in r.by_regime],
        "by_department": [_row(d) for d in r.by_department],
        "top_clients": [_row(t) for t in r.top_clients],
        "top_hosts": [_row(t) for t in r.top_hosts],
        "daily": [_row(d) for d in r.daily],
        "apps": [{"id": a, "name": n} for a, n in r.apps],
        "regimes": [_row(x) for x in r.regimes],
        "evasion": {
            "summary": evasion_summary(r.evasion),
            "rows": [_row(e) for e in r.evasion],
            "seen_as_app_hits": [{"name": n, "text": t} for n, t in EVASION_NOTES],
            "blind_spots": list(EVASION_BLIND_SPOTS),
            "candidates_for_review": [
                {"name": c.name, "app": c.app, "evidence": dict(c.evidence)} for c in r.candidates
            ],
        },
        "integrity": _row(r.integrity),
        "method": {
            "blind_spots": [{"name": n, "text": t} for n, t in r.blind_spots],
            "legal": list(LEGAL_CAVEATS),
        },
    }


def _scope(r: MonthlyReport) -> dict[str, object]:
    return {
        "report": "egresswatch monthly compliance report",
        "month": r.month,
        "period": {
            "start": iso(r.period_start),
            "end": iso(r.period_end),
            "end_exclusive": True,
            "partial": r.partial,
        },
        "generated_at": iso(r.generated_at),
        "organisation": r.organisation,
        "egresswatch_version": r.egresswatch_version,
        "store": r.store,
        "instances": list(r.instances),
        "lifecycle_rows": r.lifecycle_rows,
        "notes": [n for n in (r.lifecycle_note,) if n],
        "client_identity": r.client_identity,
    }


def _coverage(c: Coverage) -> dict[str, object]:
    return {
        "instance": c.instance,
        "first_seen": iso(c.first_seen),
        "last_seen": iso(c.last_seen),
        "covered_seconds": round(c.covered_seconds, 3),
        "period_seconds": round(c.period_seconds, 3),
        "percent": round(c.percent, 4),
        "starts": c.starts,
        "stops": c.stops,
        "heartbeats": c.heartbeats,
        "versions": list(c.versions),
        "gaps": [
            {
                "start": iso(g.start),
                "end": iso(g.end),
                "seconds": round(g.seconds, 3),
                "reason": g.reason,
            }
            for g in c.gaps
        ],
    }


# Every other row is its dataclass's fields in order, by declared type (the annotations are
# strings): times (``float``) as ISO 8601, tuples of pairs as objects, other tuples as lists
# (of rows where they hold dataclasses); a few fields have another name in the JSON.
_RENAMED: dict[type, dict[str, str]] = {
    Integrity: {"heads": "chain_heads"},
    VerifiedRange: {"at": "verified_at", "now": "this_report"},
}


def _row(obj: Any) -> dict[str, object]:
    names = _RENAMED.get(type(obj), {})
    out: dict[str, object] = {}
    for f in fields(obj):
        value, declared = getattr(obj, f.name), str(f.type)
        if declared in ("float", "float | None"):
            value = iso(value)
        elif declared.startswith("tuple[tuple["):
            value = dict(value)
        elif declared.startswith("tuple["):
            value = [_row(v) if is_dataclass(v) else v for v in value]
        out[names.get(f.name, f.name)] = value
    return out
