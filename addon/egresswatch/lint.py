"""``egresswatch lists check``: every problem of a catalogue, as ``file:line: severity: message``.

:func:`check_dirs` loads the directories with :func:`egresswatch.catalogue.load_catalogue`
(schema and parse problems come from there) and then runs the semantic checks that need the whole
merged catalogue. Each finding has a severity:

``error``
    The catalogue is wrong: it cannot load, or it would attribute traffic wrongly (a bare public
    suffix, a CDN apex as a suffix, an IP literal in a domain field, a duplicate, a name claimed by
    two apps that do not both declare it shared, regimes and apps that disagree). ``lists check``
    exits 1.
``warning``
    Probably a mistake, but matching is still well defined (a carve-out that covers nothing, a
    ``shared_with`` the other app does not reciprocate with a listing, a single-label name).
    ``lists check`` exits 0, or 1 with ``--strict``.
``note``
    Information only (a name normalised while loading, an entry already covered by a broader one
    of the same app, a regime not yet in effect). Never changes the exit status.

The public-suffix checks use tldextract's bundled Public Suffix List snapshot, offline, with the
private section included (so ``github.io`` or ``cloudfront.net`` count as public suffixes too).

>>> checker = NameChecker()
>>> [str(sev) + ": " + msg for sev, msg in checker.check("co.uk", "suffix", ())]
["error: 'co.uk' is a bare public suffix: it would match every name under it"]
>>> checker.check("tiktok.com", "suffix", ())
[]
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

import tldextract

from .catalogue import App
from .catalogue import Catalogue
from .catalogue import CatalogueError
from .catalogue import Problem
from .catalogue import load_catalogue
from .catalogue_schema import PRIMARY_TAG
from .hostnames import is_ip_literal

__all__ = [
    "BROAD_INFRASTRUCTURE",
    "Finding",
    "NameChecker",
    "Severity",
    "check_catalogue",
    "check_dirs",
    "exit_status",
]

logger = logging.getLogger(__name__)


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class Finding(Problem):
    """A :class:`~egresswatch.catalogue.Problem` with a severity; prints ``file:line: sev: msg``."""

    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity}: {self.message}"


# Apexes of shared infrastructure: CDNs, cloud platforms, hosting. Every tenant of these services
# gets a name under them, so a `suffix` rule on the apex attributes the whole platform (and every
# unrelated customer) to one app. A specific name under them (`qq-video.cdn-go.cn`) is fine, and
# so is an `exact` rule on the apex itself. Several are also in the PSL's private section and are
# then reported as public suffixes instead. Keep this list sorted within each group.
BROAD_INFRASTRUCTURE: frozenset[str] = frozenset(
    {
        # Akamai
        "akadns.net",
        "akamai.net",
        "akamaiedge.net",
        "akamaihd.net",
        "akamaized.net",
        "edgekey.net",
        "edgesuite.net",
        # Fastly, Cloudflare, other global CDNs
        "cdn77.org",
        "cloudflare.com",
        "cloudflare.net",
        "fastly.net",
        "fastlylb.net",
        "llnwd.net",
        # Amazon, Microsoft, Google
        "amazonaws.com",
        "cloudfront.net",
        "azureedge.net",
        "azurefd.net",
        "azurewebsites.net",
        "blob.core.windows.net",
        "trafficmanager.net",
        "appspot.com",
        "firebaseapp.com",
        "firebaseio.com",
        "googleapis.com",
        "googleusercontent.com",
        "gstatic.com",
        "web.app",
        # Code hosting and static sites
        "github.io",
        "githubusercontent.com",
        "netlify.app",
        "pages.dev",
        "vercel.app",
        "workers.dev",
        # Chinese clouds and CDNs. Tencent's cdn-go.cn and tencent-cloud.net serve many Tencent
        # products and outside customers; Alibaba's aliyuncs.com / alikunlun / kunlun*.com are
        # Alibaba Cloud CDN and object storage. (bytecdn.cn is ByteDance's own CDN, not listed.)
        "alicdn.com",
        "alikunlun.com",
        "alikunlun.net",
        "aliyuncs.com",
        "cdn-go.cn",
        "cdntip.com",
        "myqcloud.com",
        "qcloud.com",
        "tencent-cloud.com",
        "tencent-cloud.net",
        "tencentcloudapi.com",
        "wscdns.com",
        "chinanetcenter.com",
        "ksyuncdn.com",
        "bcebos.com",
        "volccdn.com",
        # ByteDance's cloud platforms (Volcano Engine, BytePlus) host third parties: a suffix rule
        # on them attributes every customer to ByteDance (the third research pass removed 279).
        "bytepluses.com",
        "byteplus.com",
        "volcengine.com",
        "volcengineapi.com",
        "volceapplog.com",
        "volces.com",
        "volcimagex.com",
        "ksyun.com",
    }
)
# Alibaba's CDN points customer CNAMEs at numbered zones (kunlunaq.com, kunlunar.com, ...).
_BROAD_PATTERNS = (re.compile(r"kunlun[a-z0-9-]*\.com"),)


def _is_broad(name: str) -> bool:
    return name in BROAD_INFRASTRUCTURE or any(p.fullmatch(name) for p in _BROAD_PATTERNS)


class NameChecker:
    """Checks on one catalogue name that need no other entry (public suffix, CDN apex, IP).

    Holds one offline :class:`tldextract.TLDExtract` (about 30 ms to build): build one per run.
    """

    def __init__(self) -> None:
        self._extract = tldextract.TLDExtract(
            suffix_list_urls=(), cache_dir=None, include_psl_private_domains=True
        )
        # Every PSL rule, wildcards as "*.ck" and exceptions as "!www.ck": a cheap pre-filter, so
        # that tldextract (about 20 us a call) only runs for names that may be a suffix.
        self._rules = frozenset(self._extract.tlds)

    def _may_be_suffix(self, name: str) -> bool:
        if name in self._rules:
            return True
        parent = name.partition(".")[2]
        return bool(parent) and f"*.{parent}" in self._rules

    def check(self, name: str, match: str, tags: Iterable[str]) -> list[tuple[Severity, str]]:
        """Findings for a normalised ``name`` listed with ``match`` and ``tags``."""
        tags = tuple(tags)
        if is_ip_literal(name):
            return [
                (
                    Severity.ERROR,
                    f"{name!r} is an IP literal in a domain field: list it under 'cidrs:'",
                )
            ]
        if match == "suffix" and _is_broad(name):
            # Checked before the PSL: many CDN apexes are also private-section suffixes, and
            # "shared infrastructure" says better what is wrong with them.
            return [
                (
                    Severity.ERROR,
                    f"{name!r} is shared infrastructure (CDN or cloud platform) listed as a suffix: "
                    "list the app's own names under it, or use match: exact",
                )
            ]
        single_label = "." not in name
        ext = self._extract(name) if single_label or self._may_be_suffix(name) else None
        if ext is not None and ext.suffix == name:
            if "brand-tld" in tags and match == "suffix":
                if single_label and not ext.is_private:
                    return []
                return [
                    (
                        Severity.ERROR,
                        f"{name!r} is tagged brand-tld but is not a top-level domain",
                    )
                ]
            if ext.is_private and match == "exact":
                return []  # a real host (github.io) that is also a private-section suffix
            section = "private section of the Public Suffix List" if ext.is_private else "TLD"
            what = "a TLD" if single_label and not ext.is_private else "a bare public suffix"
            return [
                (
                    Severity.ERROR,
                    f"{name!r} is {what}: it would match every name under it"
                    + (f" ({section})" if ext.is_private else ""),
                )
            ]
        if "brand-tld" in tags:
            return [(Severity.ERROR, f"{name!r} is tagged brand-tld but is not a top-level domain")]
        if single_label:
            return [
                (
                    Severity.WARNING,
                    f"{name!r} is a single label: a rule on it covers a whole top-level domain",
                )
            ]
        return []


# --------------------------------------------------------------------------------------------


class _Claim(NamedTuple):
    """One listing of a name by an app (a `domains:` entry or a line of a bulk list)."""

    domain: str
    match: str
    app: str
    tags: tuple[str, ...]
    shared_with: tuple[str, ...]
    file: str
    line: int
    in_bulk: bool

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _claims(app: App) -> Iterator[_Claim]:
    for r in app.rules:
        yield _Claim(r.domain, r.match, app.id, r.tags, r.shared_with, r.file, r.line, False)
    for b in app.lists:
        for name, line in zip(b.names, b.lines, strict=True):
            yield _Claim(name, b.match, app.id, b.tags, (), b.file, int(line), True)


def _parents(name: str) -> Iterator[str]:
    """Proper parent suffixes of ``name``, nearest first (``a.b.c`` -> ``b.c``, ``c``)."""
    while "." in name:
        name = name.split(".", 1)[1]
        yield name


def _key_line(file: str, key: str, default: int) -> int:
    """Line of a top-level ``key:`` in a YAML file (for app-level messages), else ``default``."""
    try:
        with open(file, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if line.startswith(f"{key}:"):
                    return i
    except OSError:
        pass
    return default


class _Out:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def add(self, file: str, line: int, severity: Severity, message: str) -> None:
        self.findings.append(Finding(file, line, message, severity))


def _check_names(
    cat: Catalogue, claims: Mapping[str, list[_Claim]], checker: NameChecker, out: _Out
) -> None:
    for app in cat.apps.values():
        for c in claims[app.id]:
            for sev, msg in checker.check(c.domain, c.match, c.tags):
                out.add(c.file, c.line, sev, msg)
        for co in app.carve_outs:
            if is_ip_literal(co.domain):
                out.add(
                    co.file, co.line, Severity.ERROR, f"carve-out {co.domain!r} is an IP literal"
                )
        for p in app.patterns:
            # A pattern acts as a suffix rule one label under its parent: the parent must be a
            # name the app shares with others, never a public suffix or a TLD.
            for sev, msg in checker.check(p.parent, "suffix", p.tags):
                if sev is Severity.ERROR or "single label" in msg:
                    out.add(p.file, p.line, Severity.ERROR, f"pattern parent: {msg}")
            if not p.label.strip("*#"):
                out.add(
                    p.file,
                    p.line,
                    Severity.WARNING,
                    f"pattern {p.label!r} under {p.parent!r} has no fixed character: it matches "
                    "every label there (a suffix rule on the parent says so more plainly)",
                )


def _check_app_entries(app: App, claims: list[_Claim], out: _Out) -> None:
    """Duplicates, redundant entries and dead carve-outs within one app."""
    first: dict[str, _Claim] = {}
    suffixes: set[str] = set()
    for c in claims:
        prev = first.get(c.domain)
        if prev is not None:
            kinds = "" if prev.match == c.match else f" ({prev.match} there, {c.match} here)"
            out.add(
                c.file,
                c.line,
                Severity.ERROR,
                f"duplicate: {c.domain!r} is already listed for app {app.id} at {prev.where}{kinds}",
            )
            continue
        first[c.domain] = c
        if c.match == "suffix":
            suffixes.add(c.domain)
    for c in first.values():
        covering = next((p for p in _parents(c.domain) if p in suffixes), None)
        if covering is not None:
            out.add(
                c.file,
                c.line,
                Severity.NOTE,
                f"{c.domain!r} is already covered by the suffix rule {covering!r} "
                f"({first[covering].where}) of the same app",
            )
    for co in app.carve_outs:
        if co.domain not in suffixes and not any(p in suffixes for p in _parents(co.domain)):
            out.add(
                co.file,
                co.line,
                Severity.WARNING,
                f"carve-out {co.domain!r} is not under any suffix rule of app {app.id}: it has no effect",
            )


def _check_shared(cat: Catalogue, claims: Mapping[str, list[_Claim]], out: _Out) -> None:
    """A name listed by several apps must be declared ``shared_with`` on every side."""
    first: dict[str, _Claim] = {}
    multi: dict[str, list[_Claim]] = {}
    for app in cat.apps.values():
        for c in claims[app.id]:
            prev = first.setdefault(c.domain, c)
            if prev is c or prev.app == c.app:
                continue  # first listing, or a duplicate within the app (reported elsewhere)
            listing = multi.setdefault(c.domain, [prev])
            if all(x.app != c.app for x in listing):
                listing.append(c)
    for name, listing in multi.items():
        apps = {c.app for c in listing}
        for c in listing:
            missing = [a for a in sorted(apps - {c.app}) if a not in c.shared_with]
            if not missing:
                continue
            where = ", ".join(f"{o.app} ({o.where})" for o in listing if o.app in missing)
            hint = (
                "move it from the list file to 'domains:' with shared_with"
                if c.in_bulk
                else f"add shared_with: [{', '.join(missing)}]"
            )
            out.add(
                c.file,
                c.line,
                Severity.ERROR,
                f"{name!r} is also claimed by {where} without being declared shared: {hint}",
            )
    _check_primary(cat, multi, out)
    for app in cat.apps.values():
        for r in app.rules:
            listed_by = {c.app for c in multi.get(r.domain, ())} or {app.id}
            for declared in r.shared_with:
                if declared == app.id:
                    out.add(
                        r.file,
                        r.line,
                        Severity.WARNING,
                        f"{r.domain!r}: shared_with names its own app",
                    )
                elif declared in cat.apps and declared not in listed_by:
                    out.add(
                        r.file,
                        r.line,
                        Severity.WARNING,
                        f"{r.domain!r} declares shared_with {declared}, but app {declared} does not "
                        "list it",
                    )


def _check_primary(cat: Catalogue, multi: Mapping[str, list[_Claim]], out: _Out) -> None:
    """``tags: [primary]`` picks the app a shared name is attributed to first: one app per name,
    and only on a name that several apps claim."""
    for name, listing in multi.items():
        primaries = [c for c in listing if PRIMARY_TAG in c.tags]
        for c in primaries[1:]:
            out.add(
                c.file,
                c.line,
                Severity.ERROR,
                f"{name!r} is tagged primary by apps "
                f"{', '.join(p.app for p in primaries)}: at most one may be",
            )
    for app in cat.apps.values():
        for r in app.rules:
            if PRIMARY_TAG in r.tags and r.domain not in multi:
                out.add(
                    r.file,
                    r.line,
                    Severity.WARNING,
                    f"{r.domain!r} is tagged primary but no other app claims it: it has no effect",
                )


def _check_regimes(cat: Catalogue, today: date, out: _Out) -> None:
    for regime in cat.regimes.values():
        for app_id in regime.apps:
            app = cat.apps.get(app_id)
            if app is not None and regime.id not in app.regimes:
                out.add(
                    regime.file,
                    regime.line,
                    Severity.ERROR,
                    f"regime {regime.id} lists app {app_id}, but {app.file} does not name "
                    f"{regime.id} in its regimes",
                )
        if regime.revoked_by and regime.revoked_by not in cat.regimes:
            out.add(
                regime.file,
                regime.line,
                Severity.WARNING,
                f"regime {regime.id}: revoked_by {regime.revoked_by!r} is not a defined regime",
            )
        if regime.signed is not None and regime.signed > today:
            out.add(
                regime.file,
                regime.line,
                Severity.WARNING,
                f"regime {regime.id}: signed date {regime.signed} is in the future",
            )
        if regime.status(today) == "not_yet_effective":
            out.add(
                regime.file,
                regime.line,
                Severity.NOTE,
                f"regime {regime.id} is not yet effective (effective {regime.effective})",
            )
    for app in cat.apps.values():
        line = _key_line(app.file, "regimes", app.line)
        for rid in app.regimes:
            reg = cat.regimes.get(rid)
            if reg is not None and app.id not in reg.apps:
                out.add(
                    app.file,
                    line,
                    Severity.ERROR,
                    f"app {app.id} names regime {rid}, but {reg.file}:{reg.line} does not "
                    f"list {app.id} among its apps",
                )
        if not app.regimes:
            out.add(app.file, line, Severity.NOTE, f"app {app.id} is designated by no regime")


def check_catalogue(
    cat: Catalogue, *, today: date | None = None, checker: NameChecker | None = None
) -> list[Finding]:
    """The semantic findings for a loaded catalogue (plus its normalisation notes), sorted."""
    today = today or date.today()
    checker = checker or NameChecker()
    out = _Out()
    for note in cat.notes:
        out.add(note.file, note.line, Severity.NOTE, note.message)
    claims = {app.id: list(_claims(app)) for app in cat.apps.values()}
    _check_names(cat, claims, checker, out)
    for app in cat.apps.values():
        _check_app_entries(app, claims[app.id], out)
    _check_shared(cat, claims, out)
    _check_regimes(cat, today, out)
    return _sorted(out.findings)


def _sorted(findings: Iterable[Finding]) -> list[Finding]:
    unique = dict.fromkeys(findings)  # identical findings (same file, line, message) once
    return sorted(unique, key=lambda f: (f.file, f.line, f.message))


def check_dirs(dirs: Sequence[Path], *, today: date | None = None) -> list[Finding]:
    """Every finding for the catalogue merged from ``dirs`` (in order), sorted by file and line.

    If the catalogue does not load, the loader's problems are returned as errors and the
    semantic checks (which need the merged catalogue) are not run.
    """
    try:
        cat = load_catalogue(list(dirs))
    except CatalogueError as e:
        return _sorted(Finding(p.file, p.line, p.message, Severity.ERROR) for p in e.problems)
    return check_catalogue(cat, today=today)


def exit_status(findings: Iterable[Finding], *, strict: bool = False) -> int:
    """1 if any error (or, with ``strict``, any warning), else 0. Notes never fail."""
    failing = {Severity.ERROR, Severity.WARNING} if strict else {Severity.ERROR}
    return 1 if any(f.severity in failing for f in findings) else 0
