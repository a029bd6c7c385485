"""The JSON rendering: every section of the report, times as ISO 8601 UTC with ``Z``.

Top-level ``totals`` (app, action, events, distinct_clients, first_seen, last_seen) is the
figure most tools want; every other section follows it. One function per section.
"""

from __future__ import annotations

import json

from .evasion import EVASION_BLIND_SPOTS
from .evasion import EVASION_NOTES
from .evasion import evasion_summary
from .model import LEGAL_CAVEATS
from .model import CatalogueVersion
from .model import Coverage
from .model import DepartmentRow
from .model import ExceptionRecord
from .model import Integrity
from .model import MonthlyReport
from .model import PolicyVersion
from .model import RegimeInfo
from .model import RegimeRow
from .model import TopRow
from .model import Total
from .text import iso

__all__ = ["render_json", "report_to_dict"]


def render_json(report: MonthlyReport) -> str:
    return json.dumps(report_to_dict(report), indent=2, ensure_ascii=False) + "\n"


def report_to_dict(report: MonthlyReport) -> dict[str, object]:
    """The JSON form of ``report`` (plain dicts, lists, strings, numbers and booleans)."""
    r = report
    return {
        **_scope(r),
        "totals": [_total(t) for t in r.totals],
        "coverage": [_coverage(c) for c in r.coverage],
        "catalogues": [_catalogue(c) for c in r.catalogues],
        "policies": [_policy(p) for p in r.policies],
        "exceptions": [_exception(x) for x in r.exceptions],
        "by_regime": [_by_regime(x) for x in r.by_regime],
        "by_department": [_by_department(d) for d in r.by_department],
        "top_clients": [_top(t) for t in r.top_clients],
        "top_hosts": [_top(t) for t in r.top_hosts],
        "daily": [{"day": d.day, "app": d.app, "events": d.events} for d in r.daily],
        "apps": [{"id": a, "name": n} for a, n in r.apps],
        "regimes": [_regime(x) for x in r.regimes],
        "evasion": {
            "summary": evasion_summary(r.evasion),
            "rows": [
                {
                    "kind": e.kind,
                    "name": e.name,
                    "action": e.action,
                    "events": e.events,
                    "distinct_clients": e.distinct_clients,
                    "first_seen": iso(e.first_seen),
                    "last_seen": iso(e.last_seen),
                }
                for e in r.evasion
            ],
            "seen_as_app_hits": [{"name": n, "text": t} for n, t in EVASION_NOTES],
            "blind_spots": list(EVASION_BLIND_SPOTS),
            "candidates_for_review": [
                {"name": c.name, "app": c.app, "evidence": dict(c.evidence)} for c in r.candidates
            ],
        },
        "integrity": _integrity(r.integrity),
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


def _total(t: Total) -> dict[str, object]:
    return {
        "app": t.app,
        "action": t.action,
        "events": t.events,
        "distinct_clients": t.distinct_clients,
        "first_seen": iso(t.first_seen),
        "last_seen": iso(t.last_seen),
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


def _catalogue(c: CatalogueVersion) -> dict[str, object]:
    return {
        "version": c.version,
        "first_seen": iso(c.first_seen),
        "last_seen": iso(c.last_seen),
        "loads": c.loads,
        "instances": list(c.instances),
        "files": list(c.files),
        "entries": dict(c.entries),
    }


def _policy(p: PolicyVersion) -> dict[str, object]:
    return {
        "version": p.version,
        "first_seen": iso(p.first_seen),
        "last_seen": iso(p.last_seen),
        "loads": p.loads,
        "instances": list(p.instances),
        "file": p.file,
        "default": p.default,
        "dry_run": p.dry_run,
        "modes": dict(p.modes),
    }


def _exception(x: ExceptionRecord) -> dict[str, object]:
    return {
        "id": x.id,
        "apps": list(x.apps),
        "regimes": list(x.regimes),
        "clients": list(x.clients),
        "users": list(x.users),
        "reason": x.reason,
        "approver": x.approver,
        "ticket": x.ticket,
        "expires": x.expires,
        "expires_at": iso(x.expires_at),
        "first_seen": iso(x.first_seen),
        "in_force": x.in_force,
        "granted": x.granted,
        "expired": x.expired,
    }


def _by_regime(r: RegimeRow) -> dict[str, object]:
    return {
        "app": r.app,
        "regime": r.regime,
        "action": r.action,
        "events": r.events,
        "distinct_clients": r.distinct_clients,
        "first_seen": iso(r.first_seen),
        "last_seen": iso(r.last_seen),
    }


def _by_department(d: DepartmentRow) -> dict[str, object]:
    return {
        "app": d.app,
        "department": d.department,
        "action": d.action,
        "events": d.events,
        "distinct_clients": d.distinct_clients,
    }


def _top(t: TopRow) -> dict[str, object]:
    return {
        "key": t.key,
        "events": t.events,
        "apps": list(t.apps),
        "first_seen": iso(t.first_seen),
        "last_seen": iso(t.last_seen),
    }


def _regime(r: RegimeInfo) -> dict[str, object]:
    return {
        "id": r.id,
        "title": r.title,
        "status": r.status,
        "revoked": r.revoked,
        "citation": r.citation,
    }


def _integrity(i: Integrity) -> dict[str, object]:
    return {
        "verified": i.verified,
        "ok": i.ok,
        "checked": i.checked,
        "chain_heads": [
            {"instance": h.instance, "seq": h.seq, "chain_hash": h.chain_hash} for h in i.heads
        ],
        "problems": list(i.problems),
        "mode": i.mode,
        "checked_now": i.checked_now,
        "provenance": [
            {
                "instance": v.instance,
                "from_seq": v.from_seq,
                "to_seq": v.to_seq,
                "mode": v.mode,
                "run_id": v.run_id,
                "verified_at": iso(v.at),
                "this_report": v.now,
            }
            for v in i.provenance
        ],
    }
