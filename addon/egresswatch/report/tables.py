"""The report's tables as (head, rows), shared by the Markdown and the HTML renderings, and the
few sentences both of them say the same way.

``brief`` (Markdown, read as text): versions cut to 16 hex digits, no column for the app's name
or the number of catalogue files, so that the tables stay narrow.
"""

from __future__ import annotations

from collections.abc import Mapping

from .model import ExceptionRecord
from .model import Integrity
from .model import MonthlyReport
from .text import duration
from .text import iso
from .text import pct

__all__ = ["Table", "daily_matrix", "exception_status", "integrity_line", "tables"]

Table = tuple[list[str], list[tuple[object, ...]]]


def tables(r: MonthlyReport, *, brief: bool) -> dict[str, Table]:
    """Every table of the report by name (``coverage``, ``gaps``, ... ``heads``)."""
    return {
        **_coverage_tables(r),
        **_configuration_tables(r, brief),
        **_findings_tables(r, brief),
        **_reference_tables(r),
    }


def _coverage_tables(r: MonthlyReport) -> dict[str, Table]:
    return {
        "coverage": (
            ["instance", "covered", "%", "starts", "stops", "gaps", "first seen", "last seen"],
            [
                (
                    c.instance,
                    duration(c.covered_seconds),
                    pct(c.percent),
                    c.starts,
                    c.stops,
                    len(c.gaps),
                    iso(c.first_seen),
                    iso(c.last_seen),
                )
                for c in r.coverage
            ],
        ),
        "gaps": (
            ["instance", "from", "to", "length", "reason"],
            [
                (c.instance, iso(g.start), iso(g.end), duration(g.seconds), g.reason)
                for c in r.coverage
                for g in c.gaps
            ],
        ),
    }


def _configuration_tables(r: MonthlyReport, brief: bool) -> dict[str, Table]:
    vhead = "version" if brief else "version (SHA-256)"

    def version(v: str) -> str:
        return v[:16] if brief else v

    return {
        "catalogues": (
            [vhead, "first seen", "last seen", "loads", "instances", "entries"]
            + ([] if brief else ["files"]),
            [
                (
                    version(c.version),
                    iso(c.first_seen),
                    iso(c.last_seen),
                    c.loads,
                    ", ".join(c.instances),
                    sum(n for _, n in c.entries),
                    *(() if brief else (len(c.files),)),
                )
                for c in r.catalogues
            ],
        ),
        "policies": (
            [
                vhead,
                "file",
                "first seen",
                "last seen",
                "loads",
                "default",
                "dry run",
                "modes",
                "evasion",
            ],
            [
                (
                    version(p.version),
                    p.file,
                    iso(p.first_seen),
                    iso(p.last_seen),
                    p.loads,
                    p.default,
                    "" if p.dry_run is None else ("yes" if p.dry_run else "no"),
                    ", ".join(f"{a}={m}" for a, m in p.modes),
                    ", ".join(f"{k}={v}" for k, v in p.evasion) or "not recorded",
                )
                for p in r.policies
            ],
        ),
        "exceptions": (
            [
                "id",
                "apps / regimes",
                "clients / users",
                "reason",
                "approver",
                "ticket",
                "expires",
                "status",
            ],
            [
                (
                    x.id,
                    ", ".join((*x.apps, *x.regimes)),
                    ", ".join((*x.clients, *x.users)),
                    x.reason,
                    x.approver,
                    x.ticket,
                    iso(x.expires_at) or x.expires,
                    exception_status(x),
                )
                for x in r.exceptions
            ],
        ),
    }


def _findings_tables(r: MonthlyReport, brief: bool) -> dict[str, Table]:
    names = dict(r.apps)
    status = {x.id: x.status for x in r.regimes}
    tops = ["events", "apps", "first seen", "last seen"]
    return {
        "totals": (
            [
                "app",
                *([] if brief else ["name"]),
                "action",
                "events",
                "distinct clients",
                "first seen",
                "last seen",
            ],  # fmt: skip
            [
                (
                    t.app,
                    *(() if brief else (names.get(t.app, t.app),)),
                    t.action,
                    t.events,
                    t.distinct_clients,
                    iso(t.first_seen),
                    iso(t.last_seen),
                )
                for t in r.totals
            ],
        ),
        "by-regime": (
            [
                "app",
                "decided by",
                "status",
                "action",
                "events",
                "distinct clients",
                "first seen",
                "last seen",
            ],
            [
                (
                    x.app,
                    x.regime or "(none)",
                    rule_status(x.regime, status),
                    x.action,
                    x.events,
                    x.distinct_clients,
                    iso(x.first_seen),
                    iso(x.last_seen),
                )
                for x in r.by_regime
            ],
        ),
        "by-department": (
            ["app", "department", "action", "events", "distinct clients"],
            [
                (d.app, d.department or "(none)", d.action, d.events, d.distinct_clients)
                for d in r.by_department
            ],
        ),
        "top-clients": (
            ["client", *tops],
            [
                (t.key, t.events, ", ".join(t.apps), iso(t.first_seen), iso(t.last_seen))
                for t in r.top_clients
            ],
        ),
        "top-hosts": (
            ["hostname", *tops],
            [
                (t.key, t.events, ", ".join(t.apps), iso(t.first_seen), iso(t.last_seen))
                for t in r.top_hosts
            ],
        ),
    }


def _reference_tables(r: MonthlyReport) -> dict[str, Table]:
    return {
        "regimes": (
            ["regime", "title", "status at period end", "revoked", "citation"],
            [(x.id, x.title, x.status, x.revoked or "", x.citation) for x in r.regimes],
        ),
        "heads": (
            ["instance", "seq", "chain head (SHA-256)"],
            [(h.instance, h.seq, h.chain_hash) for h in r.integrity.heads],
        ),
    }


_STATUS_TEXT = {
    "in_force": "in force",
    "revoked": "revoked",
    "not_yet_effective": "not yet effective",
    "unknown": "unknown regime",
}
_RULE_TEXT = {"app": "app rule", "default": "policy default", "exception": "exception"}


def rule_status(label: str, status: Mapping[str, str]) -> str:
    """What the ``decided by`` column's label is: a rule kind, or a regime's status at the end
    of the period ("in force", "revoked", ...); a list of regimes (hits written before events
    named their deciding rule) gives each one's status.

    >>> rule_status("us-eo-13971", {"us-eo-13971": "revoked"}), rule_status("app", {})
    ('revoked', 'app rule')
    """
    if label in _RULE_TEXT:
        return _RULE_TEXT[label]
    if not label:
        return ""
    return ", ".join(
        _STATUS_TEXT.get(status.get(one, "unknown"), "unknown regime") for one in label.split(",")
    )


def exception_status(x: ExceptionRecord) -> str:
    flags = [
        name
        for name, on in (("granted", x.granted), ("in force", x.in_force), ("expired", x.expired))
        if on
    ]
    return ", ".join(flags) or "not in force"


def integrity_line(i: Integrity) -> str:
    if not i.verified:
        return "not run"
    how = (
        f" ({i.mode}: {i.checked_now} recomputed for this report, the rest by the earlier runs "
        "named below)"
        if i.mode == "incremental"
        else " (full)"
        if i.mode
        else ""
    )
    if i.ok:
        return f"OK: {i.checked} events checked{how}, every hash chain intact"
    return f"FAILED: {len(i.problems)} problem(s) in {i.checked} events checked{how}"


def daily_matrix(r: MonthlyReport) -> dict[str, list[int]]:
    """Events per day (every day of the period) and app (in the order of ``r.apps``)."""
    apps = [a for a, _ in r.apps]
    index = {a: i for i, a in enumerate(apps)}
    out = {d: [0] * len(apps) for d in r.days}
    for d in r.daily:
        if d.day in out and d.app in index:
            out[d.day][index[d.app]] += d.events
    return out
