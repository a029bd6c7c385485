"""The catalogue as data: apps, their rules, bulk lists, carve-outs, CIDRs and regimes.

These are the immutable values :func:`egresswatch.catalogue.load_catalogue` builds (import them
from :mod:`egresswatch.catalogue`); the file formats they are read from are in
:mod:`egresswatch.catalogue_schema`.

Errors::

    CatalogueError(ValueError)      .problems: list[Problem(file, line, message)]
                                    .notes: normalisations applied before the load failed
"""

from __future__ import annotations

import ipaddress
import re
from array import array
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Literal
from typing import NamedTuple
from typing import Protocol

from .catalogue_schema import MatchKind
from .yamlpos import Problem

__all__ = [
    "App",
    "AppLike",
    "BulkList",
    "CatalogueLike",
    "CarveOut",
    "Catalogue",
    "CatalogueError",
    "CidrRule",
    "DomainRule",
    "PatternRule",
    "Problem",
    "Regime",
    "RegimeLike",
    "RegimeStatus",
]

RegimeStatus = Literal["in_force", "revoked", "not_yet_effective"]


class CatalogueError(ValueError):
    """A catalogue directory could not be loaded; ``problems`` says where and why."""

    def __init__(self, problems: Sequence[Problem], notes: Sequence[Problem] = ()) -> None:
        self.problems = list(problems)
        self.notes = list(notes)  # normalisations applied before the load failed
        super().__init__("\n".join(str(p) for p in self.problems))


class DomainRule(NamedTuple):
    domain: str
    match: MatchKind
    app: str
    source: str
    confidence: str
    tags: tuple[str, ...]
    note: str
    shared_with: tuple[str, ...]
    file: str
    line: int
    raw: str = ""  # the name as written, when normalisation changed it

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


class CarveOut(NamedTuple):
    domain: str
    app: str
    source: str
    reason: str
    file: str
    line: int


class PatternRule(NamedTuple):
    """Names whose label directly under ``parent`` matches ``label`` (``*`` any run of
    letters, digits and hyphens; ``#`` any run of digits); ``scope`` ``name`` or ``subtree``."""

    parent: str
    label: str
    scope: Literal["name", "subtree"]
    app: str
    source: str
    confidence: str
    tags: tuple[str, ...]
    note: str
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def text(self) -> str:
        """The pattern as written: ``wx#.qq.com`` (with ``/…`` for a subtree)."""
        return f"{self.label}.{self.parent}" + (" and below" if self.scope == "subtree" else "")

    def regex(self) -> str:
        """The label as a regular expression (anchored by the caller)."""
        return "".join(
            "[a-z0-9-]*" if ch == "*" else "[0-9]*" if ch == "#" else re.escape(ch)
            for ch in self.label
        )

    def rule_for(self, domain: str) -> DomainRule:
        """The rule a match reports: the concrete ``<label>.<parent>`` it matched."""
        return DomainRule(
            domain,
            "suffix" if self.scope == "subtree" else "exact",
            self.app,
            self.source,
            self.confidence,
            self.tags,
            f"pattern {self.label}.{self.parent}" + (f"; {self.note}" if self.note else ""),
            (),
            self.file,
            self.line,
        )


class CidrRule(NamedTuple):
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    app: str
    source: str
    confidence: str
    tags: tuple[str, ...]
    file: str
    line: int

    @property
    def domain(self) -> str:
        return str(self.network)

    @property
    def match(self) -> str:
        return "cidr"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True, eq=False)
class BulkList:
    """A plain list file referenced from an app file: many names sharing one provenance.

    ``names`` and ``lines`` are parallel (file order). The matcher stores only the list, not a
    line per name; :meth:`line_of` finds a line when an explanation needs it.
    """

    file: str
    app: str
    match: MatchKind
    source: str
    confidence: str
    tags: tuple[str, ...]
    declared_in: str
    declared_line: int
    names: list[str]
    lines: array[int]
    #: Number of names; set (and ``names``/``lines`` emptied) by :meth:`slim`, -1 otherwise.
    count: int = -1

    def __len__(self) -> int:
        return self.count if self.count >= 0 else len(self.names)

    def slim(self) -> BulkList:
        """This list without its names (only their number): for a long-running process that
        has put the names into a matcher and needs no more than the list's metadata. A slim
        list cannot say where a name is (:meth:`line_of` gives 0)."""
        if self.count >= 0:
            return self
        return replace(self, names=[], lines=array(self.lines.typecode), count=len(self.names))

    def line_of(self, name: str) -> int:
        """Line of ``name`` in the file, 0 if absent (a linear scan: for tools, not hooks)."""
        try:
            return int(self.lines[self.names.index(name)])
        except ValueError:
            return 0

    def rule(self, name: str, line: int) -> DomainRule:
        """The :class:`DomainRule` view of one name of this list (built on every hit: plain
        ``tuple.__new__`` skips the NamedTuple's Python-level constructor)."""
        fields = (
            name,
            self.match,
            self.app,
            self.source,
            self.confidence,
            self.tags,
            "",
            (),
            self.file,
            line,
            "",
        )
        return _new_tuple(DomainRule, fields)


@dataclass(frozen=True, slots=True)
class Regime:
    id: str
    title: str
    jurisdiction: str
    signed: date | None
    effective: date | None
    revoked: date | None
    revoked_by: str
    citation: str
    sources: tuple[str, ...]
    apps: tuple[str, ...]
    notes: str
    file: str
    line: int

    def status(self, on: date) -> RegimeStatus:
        if self.revoked is not None and on >= self.revoked:
            return "revoked"
        if self.effective is not None and on < self.effective:
            return "not_yet_effective"
        return "in_force"


@dataclass(frozen=True, slots=True)
class App:
    id: str
    name: str
    vendor: str
    parent: str
    category: str
    regimes: tuple[str, ...]
    description: str
    file: str
    line: int
    rules: tuple[DomainRule, ...] = ()
    lists: tuple[BulkList, ...] = ()
    carve_outs: tuple[CarveOut, ...] = ()
    cidrs: tuple[CidrRule, ...] = ()
    patterns: tuple[PatternRule, ...] = ()
    #: How complete the list is believed to be, when it is thin or partial ("" when not said).
    completeness: str = ""
    #: Subject organisation names (``O=``) of the vendor's certificates: discovery evidence
    #: (``egresswatch.candidates``), never a rule.
    organisations: tuple[str, ...] = ()

    @property
    def entries(self) -> int:
        return len(self.rules) + sum(len(b) for b in self.lists) + len(self.cidrs)


@dataclass(frozen=True)
class Catalogue:
    apps: Mapping[str, App]
    regimes: Mapping[str, Regime]
    version: str
    files: tuple[Path, ...]
    notes: tuple[Problem, ...] = field(default=())  # normalisations applied while loading

    def slim(self) -> Catalogue:
        """The same catalogue with every bulk list slimmed (:meth:`BulkList.slim`): counts,
        versions and metadata stay; the names themselves live only in the matcher."""
        apps = {
            app_id: replace(app, lists=tuple(b.slim() for b in app.lists)) if app.lists else app
            for app_id, app in self.apps.items()
        }
        return replace(self, apps=apps)

    def entries_per_app(self) -> dict[str, int]:
        return {app_id: app.entries for app_id, app in sorted(self.apps.items())}

    @property
    def entries(self) -> int:
        return sum(app.entries for app in self.apps.values())

    def app_regimes(self) -> dict[str, tuple[str, ...]]:
        """Per app, every regime a hit on it can be decided under: its own, and those of the
        apps it shares names with (a shared name takes the strictest action among its apps)."""
        out: dict[str, tuple[str, ...]] = {}
        for app_id, app in sorted(self.apps.items()):
            regimes = dict.fromkeys(app.regimes)
            for rule in app.rules:
                for other in rule.shared_with:
                    if other in self.apps:
                        regimes.update(dict.fromkeys(self.apps[other].regimes))
            out[app_id] = tuple(regimes)
        return out

    def regimes_in_force(self, app_id: str, on: date) -> tuple[str, ...]:
        app = self.apps.get(app_id)
        if app is None:
            return ()
        return tuple(
            r for r in app.regimes if r in self.regimes and self.regimes[r].status(on) == "in_force"
        )


_new_tuple = tuple.__new__


# The catalogue as its readers (the policy, the report) see it: structural, so that any object with
# these attributes (a :class:`Catalogue` or a test stand-in) will do. The one definition: the
# policy and the report take a ``CatalogueLike``.
class AppLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def regimes(self) -> Sequence[str]: ...


class RegimeLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def revoked(self) -> date | None: ...
    @property
    def citation(self) -> str: ...
    def status(self, on: date) -> str: ...


class CatalogueLike(Protocol):
    @property
    def apps(self) -> Mapping[str, AppLike]: ...
    @property
    def regimes(self) -> Mapping[str, RegimeLike]: ...
