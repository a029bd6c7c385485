"""The designated-app catalogue: YAML app files, bulk list files and regimes, with provenance.

``load_catalogue(dirs)`` reads every ``*.yaml`` app file and ``regimes.yaml`` of each directory
(the bundled one first, then the operator's) into an immutable :class:`Catalogue`. It collects
every problem it finds instead of stopping at the first one and raises :class:`CatalogueError`
whose ``problems`` print as ``file:line: message``. The schema is documented in
``domains/README.md``.

Errors::

    CatalogueError(ValueError)      .problems: list[Problem(file, line, message)]

>>> from pathlib import Path
>>> cat = load_catalogue([bundled_dir()])
>>> "tiktok" in cat.apps and "us-far-52.204-27" in cat.regimes
True
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import re
from array import array
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Literal
from typing import NamedTuple

import yaml

from .hostnames import is_ip_literal
from .hostnames import is_strict_hostname
from .hostnames import normalise_host
from .hostnames import why_invalid

__all__ = [
    "App",
    "BulkList",
    "Catalogue",
    "CatalogueError",
    "CarveOut",
    "CidrRule",
    "DomainRule",
    "Problem",
    "Regime",
    "bundled_dir",
    "load_catalogue",
]

MatchKind = Literal["suffix", "exact"]
RegimeStatus = Literal["in_force", "revoked", "not_yet_effective"]
CONFIDENCES = ("high", "medium", "low")
CATEGORIES = (
    "payments",
    "messaging",
    "social-video",
    "productivity",
    "file-sharing",
    "ai",
    "other",
)
_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


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


def bundled_dir() -> Path:
    """The catalogue shipped with egresswatch (``domains/`` of the source tree)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent.parent / "domains", here / "catalogue"):
        if (candidate / "regimes.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"bundled catalogue not found near {here}")


# --------------------------------------------------------------------------------------------
# YAML with line numbers


@dataclass
class _Loc:
    file: str
    problems: list[Problem]
    notes: list[Problem]

    def err(self, node: yaml.Node | int, message: str) -> None:
        line = node if isinstance(node, int) else node.start_mark.line + 1
        self.problems.append(Problem(self.file, line, message))

    def note(self, node: yaml.Node | int, message: str) -> None:
        line = node if isinstance(node, int) else node.start_mark.line + 1
        self.notes.append(Problem(self.file, line, message))


def _compose(text: str, loc: _Loc) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        loc.err(mark.line + 1 if mark else 1, f"YAML syntax error: {e.problem or e}")
    except yaml.YAMLError as e:
        loc.err(1, f"YAML error: {e}")
    return None


def _mapping(node: yaml.Node, loc: _Loc, what: str) -> dict[str, yaml.Node] | None:
    if not isinstance(node, yaml.MappingNode):
        loc.err(node, f"{what} must be a mapping")
        return None
    out: dict[str, yaml.Node] = {}
    for k, v in node.value:
        if not isinstance(k, yaml.ScalarNode):
            loc.err(k, f"{what}: keys must be plain names")
            continue
        if k.value in out:
            loc.err(k, f"{what}: duplicate key {k.value!r}")
        out[k.value] = v
    return out


def _scalar(node: yaml.Node | None, loc: _Loc, what: str, *, required: bool = False) -> str:
    if node is None:
        return ""
    if not isinstance(node, yaml.ScalarNode):
        loc.err(node, f"{what} must be a single value")
        return ""
    if node.tag == "tag:yaml.org,2002:null" or node.value in ("", "~"):
        if required:
            loc.err(node, f"{what} must not be empty")
        return ""
    return str(node.value)


def _str_list(node: yaml.Node | None, loc: _Loc, what: str) -> tuple[str, ...]:
    if node is None:
        return ()
    if isinstance(node, yaml.ScalarNode):
        if node.tag == "tag:yaml.org,2002:null":
            return ()
        return (str(node.value),)
    if not isinstance(node, yaml.SequenceNode):
        loc.err(node, f"{what} must be a list")
        return ()
    out: list[str] = []
    for item in node.value:
        value = _scalar(item, loc, what)
        if value:
            out.append(value)
    return tuple(out)


def _date(node: yaml.Node | None, loc: _Loc, what: str) -> date | None:
    value = _scalar(node, loc, what)
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        assert node is not None
        loc.err(node, f"{what}: {value!r} is not an ISO date (YYYY-MM-DD)")
        return None


def _check_keys(m: dict[str, yaml.Node], allowed: frozenset[str], loc: _Loc, what: str) -> None:
    for key, node in m.items():
        if key not in allowed:
            loc.err(node, f"{what}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")


def _name(node: yaml.Node, raw: str, loc: _Loc, what: str) -> str | None:
    """Normalise a catalogue name, recording what normalisation changed."""
    if not raw:
        loc.err(node, f"{what}: empty name")
        return None
    if raw.startswith("*."):
        loc.err(node, f"{what}: {raw!r}: wildcards are not needed, a suffix rule covers subdomains")
        return None
    name = normalise_host(raw)
    if name is None or ":" in raw:
        loc.err(
            node, f"{what}: {raw!r} is not a valid hostname ({why_invalid(raw) or 'has a port'})"
        )
        return None
    if not is_strict_hostname(name) and not is_ip_literal(name):
        loc.err(
            node, f"{what}: {raw!r} is not a valid hostname (a label starts or ends with a hyphen)"
        )
        return None
    if name != raw:
        loc.note(node, f"normalised {raw!r} to {name!r}")
    return name


# --------------------------------------------------------------------------------------------
# app files

_APP_KEYS = frozenset(
    {
        "id",
        "name",
        "vendor",
        "parent",
        "category",
        "regimes",
        "description",
        "domains",
        "lists",
        "carve_outs",
        "cidrs",
        "extends",
    }
)
_DOMAIN_KEYS = frozenset({"domain", "match", "source", "confidence", "tags", "note", "shared_with"})
_LIST_KEYS = frozenset({"file", "match", "source", "confidence", "tags"})
_CARVE_KEYS = frozenset({"domain", "source", "reason"})
_CIDR_KEYS = frozenset({"cidr", "source", "confidence", "tags", "note"})


@dataclass
class _AppDraft:
    """An app while the directories are read: its own file's fields, and the rules of that file
    and of every file that extends it."""

    head: App  # rules, lists, carve-outs and CIDRs left empty
    rules: list[DomainRule] = field(default_factory=list)
    lists: list[BulkList] = field(default_factory=list)
    carve_outs: list[CarveOut] = field(default_factory=list)
    cidrs: list[CidrRule] = field(default_factory=list)

    def extend(self, other: _AppDraft) -> None:
        self.rules.extend(other.rules)
        self.lists.extend(other.lists)
        self.carve_outs.extend(other.carve_outs)
        self.cidrs.extend(other.cidrs)

    def freeze(self) -> App:
        return replace(
            self.head,
            rules=tuple(self.rules),
            lists=tuple(self.lists),
            carve_outs=tuple(self.carve_outs),
            cidrs=tuple(self.cidrs),
        )


def _confidence(m: dict[str, yaml.Node], loc: _Loc, what: str, node: yaml.Node) -> str:
    value = _scalar(m.get("confidence"), loc, f"{what}: confidence")
    if not value:
        loc.err(node, f"{what}: confidence is required (high, medium or low)")
        return "low"
    if value not in CONFIDENCES:
        loc.err(m["confidence"], f"{what}: confidence {value!r} is not high, medium or low")
        return "low"
    return value


def _match_kind(m: dict[str, yaml.Node], loc: _Loc, what: str) -> MatchKind:
    value = _scalar(m.get("match"), loc, f"{what}: match") or "suffix"
    if value == "exact":
        return "exact"
    if value != "suffix":
        loc.err(m["match"], f"{what}: match {value!r} is not suffix or exact")
    return "suffix"


def _read_bulk(
    data: bytes,
    path: Path,
    app: str,
    kind: MatchKind,
    source: str,
    confidence: str,
    tags: tuple[str, ...],
    declared: _Loc,
    decl_line: int,
    loc: _Loc,
) -> BulkList:
    names: list[str] = []
    lines = array("I")
    # Lines as text mode would give them (universal newlines, strict UTF-8), from the bytes the
    # caller hashes into the catalogue version, read lazily one line at a time: holding every
    # line at once would leave their memory fragmented between the names that are kept.
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    for lineno, raw_line in enumerate(io.BytesIO(data), 1):
        line = raw_line.decode("utf-8")
        if "#" in line:
            line = line.split("#", 1)[0]
        raw = line.strip()
        if not raw:
            continue
        name = normalise_host(raw)
        if name is None or ":" in raw or not is_strict_hostname(name):
            loc.err(
                lineno,
                f"{raw[:80]!r} is not a valid hostname ({why_invalid(raw) or 'has a port or an edge hyphen'})",
            )
            continue
        if name != raw:
            loc.note(lineno, f"normalised {raw!r} to {name!r}")
        names.append(name)
        lines.append(lineno)
    return BulkList(
        file=str(path),
        app=app,
        match=kind,
        source=source,
        confidence=confidence,
        tags=tags,
        declared_in=declared.file,
        declared_line=decl_line,
        names=names,
        lines=lines,
    )


def _parse_app(
    path: Path, text: str, loc: _Loc, read_files: list[tuple[Path, bytes]]
) -> tuple[_AppDraft | None, str | None]:
    """Parse one app file; returns (draft, extends-target)."""
    root = _compose(text, loc)
    if root is None:
        if not loc.problems:
            loc.err(1, "empty app file")
        return None, None
    top = _mapping(root, loc, "app file")
    if top is None:
        return None, None
    _check_keys(top, _APP_KEYS, loc, "app file")
    extends = _scalar(top.get("extends"), loc, "extends")
    app_id = extends or _scalar(top.get("id"), loc, "id", required=True)
    if extends:
        for key in ("id", "name", "vendor", "parent", "category", "regimes"):
            if key in top:
                loc.err(
                    top[key],
                    f"an extends file adds rules only; {key!r} belongs to the app's own file",
                )
    elif not app_id:
        loc.err(root, "id is required")
        return None, None
    elif not _ID_RE.fullmatch(app_id):
        loc.err(top["id"], f"id {app_id!r} must be lower-case letters, digits and hyphens")
    elif path.stem != app_id:
        loc.err(top["id"], f"id {app_id!r} must equal the file name ({path.stem}.yaml)")
    if not extends:
        for key in ("name", "category"):
            if not _scalar(top.get(key), loc, key):
                loc.err(top.get(key, root), f"{key} is required")
    category = _scalar(top.get("category"), loc, "category")
    if category and category not in CATEGORIES:
        loc.err(top["category"], f"category {category!r} is not one of {', '.join(CATEGORIES)}")
    draft = _AppDraft(
        App(
            id=app_id,
            name=_scalar(top.get("name"), loc, "name"),
            vendor=_scalar(top.get("vendor"), loc, "vendor"),
            parent=_scalar(top.get("parent"), loc, "parent"),
            category=category,
            regimes=_str_list(top.get("regimes"), loc, "regimes"),
            description=_scalar(top.get("description"), loc, "description"),
            file=str(path),
            line=root.start_mark.line + 1,
        )
    )

    def items(key: str) -> Iterator[tuple[yaml.Node, dict[str, yaml.Node]]]:
        node = top.get(key)
        if node is None or (
            isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"
        ):
            return
        if not isinstance(node, yaml.SequenceNode):
            loc.err(node, f"{key} must be a list")
            return
        for item in node.value:
            m = _mapping(item, loc, f"{key} entry")
            if m is not None:
                yield item, m

    for item, m in items("domains"):
        _check_keys(m, _DOMAIN_KEYS, loc, "domain entry")
        raw = _scalar(m.get("domain"), loc, "domain")
        if "domain" not in m:
            loc.err(item, "domain entry: 'domain' is required")
            continue
        name = _name(m["domain"], raw, loc, "domain")
        source = _scalar(m.get("source"), loc, "source")
        if not source:
            loc.err(item, f"domain {raw!r}: source is required (provenance)")
        conf = _confidence(m, loc, f"domain {raw!r}", item)
        kind = _match_kind(m, loc, f"domain {raw!r}")
        if name is None:
            continue
        draft.rules.append(
            DomainRule(
                domain=name,
                match=kind,
                app=app_id,
                source=source,
                confidence=conf,
                tags=_str_list(m.get("tags"), loc, "tags"),
                note=_scalar(m.get("note"), loc, "note"),
                shared_with=_str_list(m.get("shared_with"), loc, "shared_with"),
                file=str(path),
                line=m["domain"].start_mark.line + 1,
                raw=raw if raw != name else "",
            )
        )

    for item, m in items("lists"):
        _check_keys(m, _LIST_KEYS, loc, "lists entry")
        rel = _scalar(m.get("file"), loc, "file", required=True)
        source = _scalar(m.get("source"), loc, "source")
        if not source:
            loc.err(item, f"list {rel!r}: source is required (provenance)")
        conf = _confidence(m, loc, f"list {rel!r}", item)
        kind = _match_kind(m, loc, f"list {rel!r}")
        if not rel:
            continue
        list_path = (path.parent / rel).resolve()
        if not list_path.is_file():
            loc.err(m["file"], f"list file {rel!r} not found")
            continue
        list_loc = _Loc(str(list_path), loc.problems, loc.notes)
        try:
            data = list_path.read_bytes()
            bulk = _read_bulk(
                data,
                list_path,
                app_id,
                kind,
                source,
                conf,
                _str_list(m.get("tags"), loc, "tags"),
                loc,
                item.start_mark.line + 1,
                list_loc,
            )
        except (OSError, UnicodeDecodeError) as e:
            loc.err(m["file"], f"cannot read list file {rel!r}: {e}")
            continue
        read_files.append((list_path, data))  # the bytes parsed are the bytes hashed
        draft.lists.append(bulk)

    for item, m in items("carve_outs"):
        _check_keys(m, _CARVE_KEYS, loc, "carve-out")
        raw = _scalar(m.get("domain"), loc, "domain")
        if "domain" not in m:
            loc.err(item, "carve-out: 'domain' is required")
            continue
        name = _name(m["domain"], raw, loc, "carve-out")
        source = _scalar(m.get("source"), loc, "source")
        reason = _scalar(m.get("reason"), loc, "reason")
        if not source:
            loc.err(item, f"carve-out {raw!r}: source is required")
        if not reason:
            loc.err(item, f"carve-out {raw!r}: reason is required")
        if name is not None:
            draft.carve_outs.append(
                CarveOut(name, app_id, source, reason, str(path), m["domain"].start_mark.line + 1)
            )

    for item, m in items("cidrs"):
        _check_keys(m, _CIDR_KEYS, loc, "cidr entry")
        raw = _scalar(m.get("cidr"), loc, "cidr", required=True)
        source = _scalar(m.get("source"), loc, "source")
        if not source:
            loc.err(item, f"cidr {raw!r}: source is required")
        conf = _confidence(m, loc, f"cidr {raw!r}", item)
        try:
            net = ipaddress.ip_network(raw, strict=True)
        except ValueError as e:
            loc.err(m.get("cidr", item), f"cidr {raw!r} is not a network: {e}")
            continue
        if net.prefixlen < (8 if net.version == 4 else 16):
            loc.err(m["cidr"], f"cidr {raw!r} is too broad to attribute to one app")
            continue
        draft.cidrs.append(
            CidrRule(
                net,
                app_id,
                source,
                conf,
                _str_list(m.get("tags"), loc, "tags"),
                str(path),
                m["cidr"].start_mark.line + 1,
            )
        )
    return draft, extends or None


# --------------------------------------------------------------------------------------------
# regimes

_REGIME_KEYS = frozenset(
    {
        "id",
        "title",
        "jurisdiction",
        "signed",
        "effective",
        "revoked",
        "revoked_by",
        "citation",
        "sources",
        "apps",
        "notes",
    }
)


def _parse_regimes(text: str, loc: _Loc) -> list[Regime]:
    root = _compose(text, loc)
    if root is None:
        return []
    top = _mapping(root, loc, "regimes file")
    if top is None:
        return []
    _check_keys(top, frozenset({"regimes"}), loc, "regimes file")
    node = top.get("regimes")
    if not isinstance(node, yaml.SequenceNode):
        loc.err(node or root, "regimes must be a list")
        return []
    out: list[Regime] = []
    for item in node.value:
        m = _mapping(item, loc, "regime")
        if m is None:
            continue
        _check_keys(m, _REGIME_KEYS, loc, "regime")
        rid = _scalar(m.get("id"), loc, "id", required=True)
        if not rid:
            loc.err(item, "regime: id is required")
            continue
        if not _ID_RE.fullmatch(rid.replace(".", "-")):
            loc.err(
                m["id"], f"regime id {rid!r} must be lower-case letters, digits, dots and hyphens"
            )
        title = _scalar(m.get("title"), loc, "title")
        if not title:
            loc.err(item, f"regime {rid}: title is required")
        signed = _date(m.get("signed"), loc, "signed")
        effective = _date(m.get("effective"), loc, "effective")
        revoked = _date(m.get("revoked"), loc, "revoked")
        if effective and revoked and revoked < effective:
            loc.err(m["revoked"], f"regime {rid}: revoked before it took effect")
        out.append(
            Regime(
                id=rid,
                title=title,
                jurisdiction=_scalar(m.get("jurisdiction"), loc, "jurisdiction"),
                signed=signed,
                effective=effective or signed,
                revoked=revoked,
                revoked_by=_scalar(m.get("revoked_by"), loc, "revoked_by"),
                citation=_scalar(m.get("citation"), loc, "citation"),
                sources=_str_list(m.get("sources"), loc, "sources"),
                apps=_str_list(m.get("apps"), loc, "apps"),
                notes=_scalar(m.get("notes"), loc, "notes"),
                file=loc.file,
                line=item.start_mark.line + 1,
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# directories


def load_catalogue(dirs: Sequence[Path | str]) -> Catalogue:
    """Load and merge catalogue directories in order; raise :class:`CatalogueError` on problems."""
    problems: list[Problem] = []
    notes: list[Problem] = []
    read_files: list[tuple[Path, bytes]] = []
    drafts: dict[str, _AppDraft] = {}
    extensions: list[tuple[str, _AppDraft, _Loc]] = []
    regimes: dict[str, Regime] = {}

    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            problems.append(Problem(str(d), 0, "catalogue directory not found"))
            continue
        regimes_file = d / "regimes.yaml"
        if regimes_file.is_file():
            data = regimes_file.read_bytes()
            read_files.append((regimes_file, data))
            loc = _Loc(str(regimes_file), problems, notes)
            for r in _parse_regimes(data.decode("utf-8", errors="replace"), loc):
                if r.id in regimes:
                    prev = regimes[r.id]
                    loc.err(r.line, f"regime {r.id!r} already defined at {prev.file}:{prev.line}")
                    continue
                regimes[r.id] = r
        for path in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
            if path.name == "regimes.yaml":
                continue
            if path.name == "regimes.yml":
                problems.append(
                    Problem(
                        str(path), 1, "regimes are read from regimes.yaml only: rename this file"
                    )
                )
                continue
            loc = _Loc(str(path), problems, notes)
            try:
                data = path.read_bytes()
                text = data.decode("utf-8")
            except (OSError, UnicodeDecodeError) as e:
                loc.err(1, f"cannot read: {e}")
                continue
            read_files.append((path, data))
            draft, extends = _parse_app(path, text, loc, read_files)
            if draft is None:
                continue
            head = draft.head
            if extends:
                extensions.append((extends, draft, loc))
            elif head.id in drafts:
                loc.err(
                    head.line,
                    f"app {head.id!r} already defined in {drafts[head.id].head.file} (use 'extends: {head.id}' to add to it)",
                )
            else:
                drafts[head.id] = draft

    for target, ext, loc in extensions:
        base = drafts.get(target)
        if base is None:
            loc.err(ext.head.line, f"extends {target!r}: no such app")
            continue
        base.extend(ext)

    for draft in drafts.values():
        head = draft.head
        loc = _Loc(head.file, problems, notes)
        for rid in head.regimes:
            if rid not in regimes:
                loc.err(
                    head.line, f"app {head.id}: regime {rid!r} is not defined in any regimes.yaml"
                )
        for rule in draft.rules:
            for other in rule.shared_with:
                if other not in drafts:
                    loc.err(rule.line, f"{rule.domain}: shared_with names unknown app {other!r}")
    for regime in regimes.values():
        loc = _Loc(regime.file, problems, notes)
        for app_id in regime.apps:
            if app_id not in drafts:
                loc.err(regime.line, f"regime {regime.id}: app {app_id!r} is not in the catalogue")

    if problems:
        raise CatalogueError(problems, notes)

    digest = hashlib.sha256()
    for path, data in read_files:
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(data).digest())
    apps = {app_id: drafts[app_id].freeze() for app_id in sorted(drafts)}
    return Catalogue(
        apps=apps,
        regimes=dict(sorted(regimes.items())),
        version=digest.hexdigest(),
        files=tuple(p for p, _ in read_files),
        notes=tuple(notes),
    )
