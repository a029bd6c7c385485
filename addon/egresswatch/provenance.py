"""What an app's provenance strings say: its distinct sources and its newest dated evidence.

Used by ``egresswatch lists show``. A provenance string (an entry's ``source:``) holds one or more
sources separated by ``;``, each ``owner/repo:path@commit``, a URL, or free text, optionally
followed by a line (``:12``) and a parenthesised remark (``(retrieved 2026-12-08, sha256 ...)``).

*Sources* of an app: the distinct source texts of its names, bulk lists and ranges, each with
its line number and parenthesised remarks removed (so every entry fetched from one URL counts
once, whatever the fetch date).

*Newest evidence*: the latest calendar date written in any of those provenance strings, as
``YYYY-MM-DD`` anywhere (``(retrieved 2026-12-08)``, ``date: 2026-12-08``, a URL holding
``/2026-12-08/``) or ``/YYYY/MM/DD/`` in a URL path. Commit identifiers carry no date offline and
count for nothing. Dates that are not real calendar dates, or are after the reference day, are
ignored. Its *age* is the number of whole days from that date to the reference day; an app
without any such date has an unknown age.

>>> source_keys("v2fly/dlc:data/x@c975; https://e.example/l.txt (retrieved 2026-12-08)")
['v2fly/dlc:data/x@c975', 'https://e.example/l.txt']
>>> evidence_dates("https://e.example/2025/01/31/l (retrieved 2026-12-08)", date(2026, 12, 9))
[datetime.date(2025, 1, 31), datetime.date(2026, 12, 8)]
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

from .catalogue import App

__all__ = ["Evidence", "app_evidence", "evidence_dates", "source_keys"]

_ISO = re.compile(r"(?<![0-9])((?:19|20)[0-9]{2})-([01][0-9])-([0-3][0-9])(?![0-9])")
_URL_PATH = re.compile(r"/((?:19|20)[0-9]{2})/([01][0-9])/([0-3][0-9])(?=/|$|[?#\s)])")
_REMARK = re.compile(r"\s*\([^()]*\)")
_LINE = re.compile(r":[0-9]+$")


def source_keys(provenance: str) -> list[str]:
    """The sources named in one provenance string, without line numbers and remarks."""
    keys = []
    for part in provenance.split(";"):
        key = _LINE.sub("", _REMARK.sub("", part).strip()).strip()
        if key:
            keys.append(key)
    return keys


def evidence_dates(provenance: str, today: date) -> list[date]:
    """The valid dates written in ``provenance`` that are not after ``today``, sorted."""
    found = set()
    for pattern in (_ISO, _URL_PATH):
        for m in pattern.finditer(provenance):
            try:
                d = date(int(m[1]), int(m[2]), int(m[3]))
            except ValueError:
                continue
            if d <= today:
                found.add(d)
    return sorted(found)


@dataclass(frozen=True, slots=True)
class Evidence:
    names: int  # domain rules and bulk-list names
    ranges: int  # CIDR rules
    sources: tuple[str, ...]  # distinct, sorted
    newest: date | None
    age_days: int | None


def _provenances(app: App) -> Iterator[str]:
    yield from (r.source for r in app.rules)
    yield from (b.source for b in app.lists)
    yield from (c.source for c in app.cidrs)


def app_evidence(app: App, today: date) -> Evidence:
    distinct = set(_provenances(app))  # many entries share one provenance string
    keys: set[str] = set()
    newest: date | None = None
    for text in distinct:
        keys.update(source_keys(text))
        dates = evidence_dates(text, today)
        if dates and (newest is None or dates[-1] > newest):
            newest = dates[-1]
    return Evidence(
        names=len(app.rules) + sum(len(b) for b in app.lists),
        ranges=len(app.cidrs),
        sources=tuple(sorted(keys)),
        newest=newest,
        age_days=(today - newest).days if newest is not None else None,
    )
