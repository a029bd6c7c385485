"""The HTML rendering: one self-contained file (inline CSS, inline SVG, no script, no network),
filled into ``templates/report.html``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from collections.abc import Sequence
from importlib import resources
from string import Template

from .evasion import CANDIDATE_HEAD
from .evasion import EVASION_BLIND_SPOTS
from .evasion import EVASION_HEAD
from .evasion import EVASION_NOTES
from .evasion import candidate_table
from .evasion import evasion_summary
from .evasion import evasion_table
from .model import LEGAL_CAVEATS
from .model import MonthlyReport
from .svg import svg_coverage_chart
from .svg import svg_daily_chart
from .tables import integrity_line
from .tables import tables
from .text import esc as _e
from .text import iso

__all__ = ["render_html"]

_HYPHENATED = re.compile(r"\S*-\S*")


def _cell(c: object) -> str:
    """A number (right-aligned), one token (an id, a time, a hash, a host: never wrapped, so
    never cut at a hyphen) or text (wraps between words)."""
    if isinstance(c, int | float) and not isinstance(c, bool):
        return f'<td class="num">{_e(c)}</td>'
    text = str(c)
    if text and not any(ch.isspace() for ch in text):
        return f'<td class="tok">{_e(c)}</td>'
    return f"<td>{_words(text)}</td>"


def _words(text: str) -> str:
    """``text`` escaped, each word with a hyphen kept whole (browsers may break after one)."""
    return _HYPHENATED.sub(lambda m: f'<span class="tok">{m.group(0)}</span>', _e(text))


def _table(head: Sequence[str], rows: Iterable[Sequence[object]], cls: str = "") -> str:
    klass = f' class="{_e(cls)}"' if cls else ""
    out = [f"<table{klass}><thead><tr>"]
    out += [f"<th>{_words(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    n = 0
    for r in rows:
        n += 1
        cells = "".join(_cell(c) for c in r)
        out.append(f"<tr>{cells}</tr>")
    if not n:
        out.append(f'<tr><td colspan="{len(head)}" class="empty">none</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _template(name: str) -> str:
    return resources.files("egresswatch").joinpath("templates", name).read_text(encoding="utf-8")


def render_html(report: MonthlyReport) -> str:
    r = report
    title = f"egresswatch compliance report {r.month}" + (
        f" — {r.organisation}" if r.organisation else ""
    )
    scope = _table(
        ["", ""],
        [
            ("Organisation", r.organisation or ""),
            ("Period (UTC, end exclusive)", f"{iso(r.period_start)} – {iso(r.period_end)}"),
            ("Partial", "yes: generated before the period ended" if r.partial else "no"),
            ("Generated", iso(r.generated_at)),
            ("egresswatch", r.egresswatch_version),
            ("Store", r.store),
            ("Instances", ", ".join(r.instances) or "none"),
            ("Client identity", r.client_identity),
        ],
        "kv",
    )
    if r.lifecycle_note:
        scope += f'<p class="note">{_e(r.lifecycle_note)}</p>'

    t = {name: _table(head, rows, name) for name, (head, rows) in tables(r, brief=False).items()}
    problems = "".join(f"<li>{_e(p)}</li>" for p in r.integrity.problems)
    integrity_class = "ok" if r.integrity.ok else "fail"
    integrity = (
        f'<p class="verdict {integrity_class}">{_e(integrity_line(r.integrity))}</p>'
        + (
            '<ul class="provenance">'
            + "".join(f"<li>{_e(line)}</li>" for line in r.integrity.provenance_lines())
            + "</ul>"
            if r.integrity.provenance
            else ""
        )
        + t["heads"]
        + (f'<ul class="problems">{problems}</ul>' if problems else "")
    )
    blind = "".join(f"<li><strong>{_e(n)}</strong>: {_e(t)}</li>" for n, t in r.blind_spots)
    evasion = (
        f"<p>{_e(evasion_summary(r.evasion))}</p>"
        + _table(EVASION_HEAD, evasion_table(r.evasion))
        + "<p>Seen through the apps' own hits:</p><ul>"
        + "".join(f"<li><strong>{_e(n)}</strong>: {_e(t)}</li>" for n, t in EVASION_NOTES)
        + "</ul><p>Still blind:</p><ul>"
        + "".join(f"<li>{_e(t)}</li>" for t in EVASION_BLIND_SPOTS)
        + "</ul><h4>Candidates for review</h4>"
        + _table(CANDIDATE_HEAD, candidate_table(r.candidates))
    )
    legal = "".join(f"<li>{_e(t)}</li>" for t in LEGAL_CAVEATS)
    page = Template(_template("report.html")).substitute(
        css=_template("report.css"),
        title=_e(title),
        month=_e(r.month),
        organisation=_e(r.organisation or ""),
        scope=scope,
        coverage_chart=svg_coverage_chart(r),
        coverage=t["coverage"],
        gaps=t["gaps"],
        catalogues=t["catalogues"],
        policies=t["policies"],
        exceptions=t["exceptions"],
        totals=t["totals"],
        by_regime=t["by-regime"],
        by_department=t["by-department"],
        top_n=_e(r.top_n),
        client_identity=_e(r.client_identity),
        top_clients=t["top-clients"],
        top_hosts=t["top-hosts"],
        daily_chart=svg_daily_chart(r),
        regimes=t["regimes"],
        evasion=evasion,
        integrity=integrity,
        blind_spots=blind,
        legal=legal,
        generated=_e(iso(r.generated_at)),
        version=_e(r.egresswatch_version),
    )
    return page
