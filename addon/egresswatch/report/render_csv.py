"""The CSV rendering: one tidy table, each row one value located by ``section`` and the
dimension columns; every cell neutralised against spreadsheet formula injection.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any
from typing import Protocol

from .model import MonthlyReport
from .text import iso
from .text import pct

__all__ = ["CSV_FIELDS", "csv_cell", "render_csv"]


CSV_FIELDS = (
    "section",
    "instance",
    "app",
    "regime",
    "action",
    "department",
    "key",
    "metric",
    "value",
)


# A cell a spreadsheet would read as a formula (or DDE command) when it starts with one of these.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A value as CSV text that spreadsheets show as text, never evaluate.

    Text starting with ``= + - @``, a tab or a carriage return (a hostname, an organisation or
    an approver name from the store or the command line) gets a leading ``'``; numbers stay as
    they are.

    >>> csv_cell("=cmd|' /C calc'!A0"), csv_cell("@SUM(A1)"), csv_cell(-3), csv_cell(True)
    ("'=cmd|' /C calc'!A0", "'@SUM(A1)", '-3', 'true')
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    return f"'{text}" if text.startswith(_FORMULA_START) else text


class _Row(Protocol):
    def __call__(self, section: str, metric: str, value: object, **dims: str) -> None: ...


def render_csv(report: MonthlyReport) -> str:
    """One tidy CSV: each row is one value, located by ``section`` and the dimension columns.

    Every cell goes through :func:`csv_cell` (spreadsheet formula injection is neutralised).
    """
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\r\n")
    w.writeheader()

    def row(section: str, metric: str, value: object, **dims: str) -> None:
        out = {f: "" for f in CSV_FIELDS}
        out.update((k, csv_cell(v)) for k, v in dims.items())
        out["section"], out["metric"] = section, metric
        out["value"] = csv_cell(value)
        w.writerow(out)

    for section in (_period, _coverage, _configuration, _findings, _integrity):
        section(report, row)
    return buf.getvalue()


def _period(r: MonthlyReport, row: _Row) -> None:
    row("period", "month", r.month)
    row("period", "start", iso(r.period_start))
    row("period", "end", iso(r.period_end))
    row("period", "generated_at", iso(r.generated_at))
    row("period", "partial", r.partial)
    row("period", "organisation", r.organisation or "")
    row("period", "egresswatch_version", r.egresswatch_version)
    row("period", "client_identity", r.client_identity)
    row("period", "lifecycle_rows", r.lifecycle_rows)


def _coverage(r: MonthlyReport, row: _Row) -> None:
    for c in r.coverage:
        i = c.instance
        row("coverage", "percent", pct(c.percent), instance=i)
        row("coverage", "covered_seconds", round(c.covered_seconds, 3), instance=i)
        row("coverage", "period_seconds", round(c.period_seconds, 3), instance=i)
        row("coverage", "starts", c.starts, instance=i)
        row("coverage", "stops", c.stops, instance=i)
        row("coverage", "heartbeats", c.heartbeats, instance=i)
        row("coverage", "gaps", len(c.gaps), instance=i)
        for g in c.gaps:
            key = f"{iso(g.start)}/{iso(g.end)}"
            row("gap", "seconds", round(g.seconds, 3), instance=i, key=key)
            row("gap", "reason", g.reason, instance=i, key=key)


def _configuration(r: MonthlyReport, row: _Row) -> None:
    for cv in r.catalogues:
        row("catalogue", "first_seen", iso(cv.first_seen), key=cv.version)
        row("catalogue", "last_seen", iso(cv.last_seen), key=cv.version)
        row("catalogue", "loads", cv.loads, key=cv.version)
        for app, n in cv.entries:
            row("catalogue", "entries", n, key=cv.version, app=app)
    for p in r.policies:
        row("policy", "first_seen", iso(p.first_seen), key=p.version)
        row("policy", "last_seen", iso(p.last_seen), key=p.version)
        row("policy", "loads", p.loads, key=p.version)
        row("policy", "default", p.default, key=p.version)
        row("policy", "dry_run", p.dry_run, key=p.version)
        for app, mode in p.modes:
            row("policy", "mode", mode, key=p.version, app=app)
        for setting, choice in p.evasion:
            row("policy", setting, choice, key=p.version)
    for x in r.exceptions:
        for metric, value in (
            ("apps", " ".join(x.apps)),
            ("regimes", " ".join(x.regimes)),
            ("clients", " ".join(x.clients)),
            ("users", " ".join(x.users)),
            ("reason", x.reason),
            ("approver", x.approver),
            ("ticket", x.ticket),
            ("expires_at", iso(x.expires_at)),
            ("first_seen", iso(x.first_seen)),
            ("in_force", x.in_force),
            ("granted", x.granted),
            ("expired", x.expired),
        ):
            row("exception", metric, value, key=x.id)


def _findings(r: MonthlyReport, row: _Row) -> None:
    # section, its rows, the columns that locate a row; then the row's counts (and times)
    tables: tuple[tuple[str, Sequence[Any], tuple[str, ...]], ...] = (
        ("total", r.totals, ("app", "action")),
        ("regime", r.by_regime, ("app", "regime", "action")),
        ("department", r.by_department, ("app", "department", "action")),
    )
    for section, rows, dims in tables:
        for x in rows:
            d = {k: getattr(x, k) for k in dims}
            for metric in ("events", "distinct_clients", "first_seen", "last_seen"):
                if hasattr(x, metric):
                    value = getattr(x, metric)
                    row(section, metric, iso(value) if metric.endswith("_seen") else value, **d)
    for section, tops in (("top_client", r.top_clients), ("top_host", r.top_hosts)):
        for rank, top in enumerate(tops, 1):
            row(section, "events", top.events, key=top.key)
            row(section, "rank", rank, key=top.key)
            row(section, "apps", " ".join(top.apps), key=top.key)
    for dr in r.daily:
        row("daily", "events", dr.events, app=dr.app, key=dr.day)
    for ri in r.regimes:
        row("regime_status", "status", ri.status, regime=ri.id)
        row("regime_status", "revoked", ri.revoked or "", regime=ri.id)


def _integrity(r: MonthlyReport, row: _Row) -> None:
    integ = r.integrity
    row("integrity", "verified", integ.verified)
    row("integrity", "ok", integ.ok)
    row("integrity", "checked", integ.checked)
    row("integrity", "mode", integ.mode)
    row("integrity", "checked_now", integ.checked_now)
    for v in integ.provenance:
        row("integrity_provenance", "rows", f"{v.from_seq}..{v.to_seq}", instance=v.instance,
            key=f"run {v.run_id}" if v.run_id is not None else "run not recorded")  # fmt: skip
        row("integrity_provenance", "mode", v.mode, instance=v.instance, key=f"run {v.run_id}")
        row("integrity_provenance", "verified_at", "now" if v.now else iso(v.at),
            instance=v.instance, key=f"run {v.run_id}")  # fmt: skip
    for h in integ.heads:
        row("chain_head", "seq", h.seq, instance=h.instance)
        row("chain_head", "chain_hash", h.chain_hash, instance=h.instance)
    for n, problem in enumerate(integ.problems, 1):
        row("integrity_problem", "problem", problem, key=str(n))
