"""The Markdown rendering: the report as text for a ticket or a wiki, every cell escaped."""

from __future__ import annotations

import re
from collections.abc import Iterable
from collections.abc import Sequence

from .evasion import CANDIDATE_HEAD
from .evasion import EVASION_BLIND_SPOTS
from .evasion import EVASION_HEAD
from .evasion import EVASION_NOTES
from .evasion import candidate_table
from .evasion import evasion_summary
from .evasion import evasion_table
from .model import LEGAL_CAVEATS
from .model import MonthlyReport
from .tables import daily_matrix
from .tables import integrity_line
from .tables import tables
from .text import iso

__all__ = ["render_markdown"]


def _md(value: object) -> str:
    """Escape a value for a Markdown table cell."""
    text = "" if value is None else str(value)
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return re.sub(r"([`*_\[\]<>#])", r"\\\1", text)


def _md_table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    body = ["| " + " | ".join(_md(c) for c in r) + " |" for r in rows]
    return [*out, *body] if body else [*out, "| " + " | ".join(["–"] * len(head)) + " |"]


def render_markdown(report: MonthlyReport) -> str:
    r = report
    L: list[str] = []
    title = f"egresswatch compliance report {r.month}"
    if r.organisation:
        title += f": {r.organisation}"
    L += [f"# {_md(title)}", ""]
    L += ["## Period and scope", ""]
    L += [
        f"- Period: {iso(r.period_start)} to {iso(r.period_end)} (end exclusive, UTC)"
        + (" — **partial: generated before the period ended**" if r.partial else ""),
        f"- Generated: {iso(r.generated_at)} by egresswatch {_md(r.egresswatch_version)}",
        f"- Store: {_md(r.store)}",
        f"- Instances: {_md(', '.join(r.instances)) or 'none'}",
        f"- Client identity: {_md(r.client_identity)}",
        "",
    ]
    if r.lifecycle_note:
        L += [f"> **Note:** {_md(r.lifecycle_note)}", ""]
    t = tables(r, brief=True)
    L += ["## Coverage", ""]
    L += _md_table(*t["coverage"])
    L += ["", "### Gaps", ""]
    L += _md_table(*t["gaps"])
    L += ["", "## Catalogue versions in force", ""]
    L += _md_table(*t["catalogues"])
    L += ["", "## Policies in force", ""]
    L += _md_table(*t["policies"])
    L += ["", "## Exceptions", ""]
    L += _md_table(*t["exceptions"])
    L += ["", "## Totals per app and action", ""]
    L += _md_table(*t["totals"])
    L += ["", "## Per app and regime", ""]
    L += _md_table(*t["by-regime"])
    L += ["", "## Per department", ""]
    L += _md_table(*t["by-department"])
    L += ["", f"## Top clients (top {r.top_n}; identity: {_md(r.client_identity)})", ""]
    L += _md_table(*t["top-clients"])
    L += ["", f"## Top hostnames (top {r.top_n})", ""]
    L += _md_table(*t["top-hosts"])
    L += ["", "## Daily trend", ""]
    per_day = daily_matrix(r)
    apps = [a for a, _ in r.apps]
    L += _md_table(["day", *apps, "total"], [(d, *per_day[d], sum(per_day[d])) for d in r.days])
    L += ["", "## Regimes", ""]
    L += _md_table(*t["regimes"])
    L += [
        "",
        "## Evasion: encrypted DNS, hidden ECH and HTTP/3 advertisements",
        "",
        _md(evasion_summary(r.evasion)),
        "",
    ]
    L += _md_table(EVASION_HEAD, evasion_table(r.evasion))
    L += ["", "Seen through the apps' own hits:", ""]
    L += [f"- **{_md(n)}**: {_md(t)}" for n, t in EVASION_NOTES]
    L += ["", "Still blind:", ""] + [f"- {_md(t)}" for t in EVASION_BLIND_SPOTS]
    L += ["", "### Candidates for review", ""]
    L += [
        "Names not in the catalogue that the proxies tied to a designated app by evidence; "
        "nothing is applied (`egresswatch lists suggest` writes them as files to review).",
        "",
    ]
    L += _md_table(CANDIDATE_HEAD, candidate_table(r.candidates))
    L += ["", "## Integrity", ""]
    L += [f"- Verification: {integrity_line(r.integrity)}"]
    L += [f"- {_md(line)}" for line in r.integrity.provenance_lines()]
    L += [""]
    L += _md_table(*t["heads"])
    if r.integrity.problems:
        L += ["", "Problems:", ""] + [f"- {_md(p)}" for p in r.integrity.problems]
    L += ["", "## Method and blind spots", ""]
    L += [
        "Counts are exact counts of the events recorded in the store (daily rollups), not "
        "Prometheus estimates. Blind spots:",
        "",
    ]
    L += [f"- **{_md(n)}**: {_md(t)}" for n, t in r.blind_spots]
    L += ["", "### Legal note", ""] + [f"- {_md(t)}" for t in LEGAL_CAVEATS]
    L += [
        "",
        "## Sign-off",
        "",
        "Reviewed by: ____________  Role: ____________  Date: ____________",
        "",
    ]
    return "\n".join(L)
