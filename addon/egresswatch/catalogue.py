"""The designated-app catalogue: YAML app files, bulk list files and regimes, with provenance.

``load_catalogue(dirs)`` reads every ``*.yaml`` app file and ``regimes.yaml`` of each directory
(the bundled one first, then the operator's) into an immutable :class:`Catalogue`. It collects
every problem it finds instead of stopping at the first one and raises :class:`CatalogueError`
whose ``problems`` print as ``file:line: message``. The schema is documented in
``domains/README.md``.

Three modules, one concern each: :mod:`egresswatch.catalogue_model` holds the values (re-exported
here, where callers import them), :mod:`egresswatch.catalogue_schema` the file formats (pydantic
models, the source of ``schemas/egresswatch-app.schema.json`` and ``-regimes``), and this module
reads directories: bulk list files, the checks across files, the merge and the version hash.

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
from array import array
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel
from pydantic import ValidationError

from .catalogue_model import App
from .catalogue_model import BulkList
from .catalogue_model import CarveOut
from .catalogue_model import Catalogue
from .catalogue_model import CatalogueError
from .catalogue_model import CidrRule
from .catalogue_model import DomainRule
from .catalogue_model import PatternRule
from .catalogue_model import Regime
from .catalogue_schema import CATEGORIES
from .catalogue_schema import CONFIDENCES
from .catalogue_schema import AppFile
from .catalogue_schema import EntryList
from .catalogue_schema import RegimesFile
from .catalogue_schema import describe_app
from .catalogue_schema import describe_regimes
from .catalogue_schema import regime_dates
from .hostnames import is_strict_hostname
from .hostnames import normalise_host
from .hostnames import why_invalid
from .yamlpos import Describe
from .yamlpos import Problem
from .yamlpos import YamlDoc
from .yamlpos import YamlPath
from .yamlpos import lookup
from .yamlpos import problems_from
from .yamlpos import read_yaml

__all__ = [
    "CATEGORIES",
    "CONFIDENCES",
    "App",
    "BulkList",
    "Catalogue",
    "CatalogueError",
    "CarveOut",
    "CidrRule",
    "DomainRule",
    "PatternRule",
    "Problem",
    "Regime",
    "bundled_dir",
    "load_catalogue",
]


def bundled_dir() -> Path:
    """The catalogue shipped with egresswatch (``domains/`` of the source tree)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent.parent / "domains", here / "catalogue"):
        if (candidate / "regimes.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"bundled catalogue not found near {here}")


# --------------------------------------------------------------------------------------------
# app files (their format: catalogue_schema.AppFile)

#: Keys of an app file that belong to the app's own file, not to an extends file.
_OWN_KEYS = (
    "id",
    "name",
    "vendor",
    "parent",
    "category",
    "regimes",
    "completeness",
    "organisations",
)


@dataclass
class _Sink:
    """Problems and notes of one load, each file's at its own lines."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)

    def err(self, file: str | Path, line: int, message: str) -> None:
        self.problems.append(Problem(str(file), line, message))


@dataclass
class _AppDraft:
    """An app while the directories are read: its own file's fields, and the rules of that file
    and of every file that extends it."""

    head: App  # rules, lists, carve-outs and CIDRs left empty
    rules: list[DomainRule] = field(default_factory=list)
    lists: list[BulkList] = field(default_factory=list)
    carve_outs: list[CarveOut] = field(default_factory=list)
    cidrs: list[CidrRule] = field(default_factory=list)
    patterns: list[PatternRule] = field(default_factory=list)

    def extend(self, other: _AppDraft) -> None:
        self.rules.extend(other.rules)
        self.lists.extend(other.lists)
        self.carve_outs.extend(other.carve_outs)
        self.cidrs.extend(other.cidrs)
        self.patterns.extend(other.patterns)

    def freeze(self) -> App:
        return replace(
            self.head,
            rules=tuple(self.rules),
            lists=tuple(self.lists),
            carve_outs=tuple(self.carve_outs),
            cidrs=tuple(self.cidrs),
            patterns=tuple(self.patterns),
        )


def _read_bulk(
    data: bytes, path: Path, entry: EntryList, app: str, decl: tuple[str, int], sink: _Sink
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
            sink.err(
                path,
                lineno,
                f"{raw[:80]!r} is not a valid hostname ({why_invalid(raw) or 'has a port or an edge hyphen'})",
            )
            continue
        if name != raw:
            sink.notes.append(Problem(str(path), lineno, f"normalised {raw!r} to {name!r}"))
        names.append(name)
        lines.append(lineno)
    return BulkList(
        file=str(path),
        app=app,
        match=entry.match,
        source=entry.source,
        confidence=entry.confidence,
        tags=tuple(entry.tags),
        declared_in=decl[0],
        declared_line=decl[1],
        names=names,
        lines=lines,
    )


def _normalised(raw: str, doc: YamlDoc, at: YamlPath, sink: _Sink) -> str:
    """A name the schema accepted, normalised; the change is noted at its line."""
    name = normalise_host(raw)
    assert name is not None  # catalogue_schema checked it
    if name != raw:
        sink.notes.append(doc.problem(at, f"normalised {raw!r} to {name!r}"))
    return name


def _validate[M: BaseModel](
    model: type[M], doc: YamlDoc, describe: Describe, sink: _Sink
) -> M | None:
    try:
        return model.model_validate(doc.data)
    except ValidationError as e:
        sink.problems.extend(problems_from(e, doc, describe))
        return None


def _parse_app(
    path: Path, doc: YamlDoc, read_files: list[tuple[Path, bytes]], sink: _Sink
) -> tuple[_AppDraft | None, str | None]:
    """Parse one app file; returns (draft, extends-target)."""
    file = str(path)
    if doc.data is None and not doc.problems:
        sink.err(file, 1, "empty app file")
    sink.problems.extend(doc.problems)
    parsed = None
    if not doc.problems and doc.data is not None:
        parsed = _validate(AppFile, doc, describe_app, sink)
    if parsed is None:
        # Keep the app's name, so that the files and regimes naming it do not fail as well.
        raw_id = lookup(doc.data, ("id",))
        if not isinstance(raw_id, str) or lookup(doc.data, ("extends",)) is not None:
            return None, None
        stub = App(raw_id, "", "", "", "", (), "", file, doc.positions.line(()))
        return _AppDraft(stub), None
    extends = parsed.extends
    app_id = extends or parsed.id
    if extends:
        for key in _OWN_KEYS:
            if key in parsed.model_fields_set:
                sink.problems.append(
                    doc.problem(
                        (key,),
                        f"an extends file adds rules only; {key!r} belongs to the app's own file",
                    )
                )
    elif app_id is None:
        sink.problems.append(doc.problem((), "id is required"))
        return None, None
    elif path.stem != app_id:
        sink.problems.append(
            doc.problem(("id",), f"id {app_id!r} must equal the file name ({path.stem}.yaml)")
        )
    if not extends:
        for key in ("name", "category"):
            if not getattr(parsed, key):
                sink.problems.append(doc.problem((key,), f"{key} is required"))
    assert app_id is not None
    draft = _AppDraft(
        App(
            id=app_id,
            name=parsed.name or "",
            vendor=parsed.vendor or "",
            parent=parsed.parent or "",
            category=parsed.category or "",
            regimes=tuple(parsed.regimes),
            description=parsed.description or "",
            file=file,
            line=doc.positions.line(()),
            completeness=parsed.completeness or "",
            organisations=tuple(o.name for o in parsed.organisations or ()),
        )
    )
    for i, d in enumerate(parsed.domains or ()):
        at = ("domains", i, "domain")
        name = _normalised(d.domain, doc, at, sink)
        draft.rules.append(
            DomainRule(
                domain=name,
                match=d.match,
                app=app_id,
                source=d.source,
                confidence=d.confidence,
                tags=tuple(d.tags),
                note=d.note or "",
                shared_with=tuple(d.shared_with),
                file=file,
                line=doc.positions.line(at),
                raw=d.domain if d.domain != name else "",
            )
        )
    for i, entry in enumerate(parsed.lists or ()):
        list_path = (path.parent / entry.file).resolve()
        at = ("lists", i, "file")
        if not list_path.is_file():
            sink.problems.append(doc.problem(at, f"list file {entry.file!r} not found"))
            continue
        try:
            data = list_path.read_bytes()
            decl = (file, doc.positions.line(("lists", i)))
            bulk = _read_bulk(data, list_path, entry, app_id, decl, sink)
        except (OSError, UnicodeDecodeError) as e:
            sink.problems.append(doc.problem(at, f"cannot read list file {entry.file!r}: {e}"))
            continue
        read_files.append((list_path, data))  # the bytes parsed are the bytes hashed
        draft.lists.append(bulk)
    for i, c in enumerate(parsed.carve_outs or ()):
        at = ("carve_outs", i, "domain")
        name = _normalised(c.domain, doc, at, sink)
        draft.carve_outs.append(
            CarveOut(name, app_id, c.source, c.reason, file, doc.positions.line(at))
        )
    for i, pt in enumerate(parsed.patterns or ()):
        at = ("patterns", i, "parent")
        parent = _normalised(pt.parent, doc, at, sink)
        draft.patterns.append(
            PatternRule(
                parent,
                pt.label,
                pt.scope,
                app_id,
                pt.source,
                pt.confidence,
                tuple(pt.tags),
                pt.note or "",
                file,
                doc.positions.line(("patterns", i)),
            )
        )
    for i, n in enumerate(parsed.cidrs or ()):
        net = ipaddress.ip_network(n.cidr, strict=True)
        line = doc.positions.line(("cidrs", i, "cidr"))
        draft.cidrs.append(CidrRule(net, app_id, n.source, n.confidence, tuple(n.tags), file, line))
    return draft, extends


def _parse_regimes(doc: YamlDoc, sink: _Sink) -> list[Regime]:
    sink.problems.extend(doc.problems)
    if doc.problems:
        return []
    if doc.data is None:
        sink.err(doc.file, 1, "regimes must be a list")
        return []
    parsed = _validate(RegimesFile, doc, describe_regimes, sink)
    if parsed is None:
        return []
    out: list[Regime] = []
    for i, r in enumerate(parsed.regimes):
        signed, effective, revoked = regime_dates(r)
        if effective and revoked and revoked < effective:
            sink.problems.append(
                doc.problem(
                    ("regimes", i, "revoked"), f"regime {r.id}: revoked before it took effect"
                )
            )
        out.append(
            Regime(
                id=r.id,
                title=r.title,
                jurisdiction=r.jurisdiction or "",
                signed=signed,
                effective=effective,
                revoked=revoked,
                revoked_by=r.revoked_by or "",
                citation=r.citation or "",
                sources=tuple(r.sources),
                apps=tuple(r.apps),
                notes=r.notes or "",
                file=doc.file,
                line=doc.positions.line(("regimes", i)),
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# directories


class _Located(Protocol):
    @property
    def file(self) -> str: ...
    @property
    def line(self) -> int: ...


def _dangling(
    drafts: Mapping[str, _AppDraft], regimes: Mapping[str, Regime]
) -> Iterator[tuple[_Located, str]]:
    """Each name that points nowhere (an app's regime, a rule's ``shared_with``, a regime's app)
    with the entry that names it, in file order per app, then per regime."""
    for draft in drafts.values():
        head = draft.head
        for rid in head.regimes:
            if rid not in regimes:
                yield head, f"app {head.id}: regime {rid!r} is not defined in any regimes.yaml"
        for rule in draft.rules:
            for other in rule.shared_with:
                if other not in drafts:
                    yield rule, f"{rule.domain}: shared_with names unknown app {other!r}"
    for regime in regimes.values():
        for app_id in regime.apps:
            if app_id not in drafts:
                yield regime, f"regime {regime.id}: app {app_id!r} is not in the catalogue"


def load_catalogue(dirs: Sequence[Path | str]) -> Catalogue:
    """Load and merge catalogue directories in order; raise :class:`CatalogueError` on problems."""
    sink = _Sink()
    read_files: list[tuple[Path, bytes]] = []
    drafts: dict[str, _AppDraft] = {}
    extensions: list[tuple[str, _AppDraft]] = []
    regimes: dict[str, Regime] = {}

    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            sink.err(d, 0, "catalogue directory not found")
            continue
        regimes_file = d / "regimes.yaml"
        if regimes_file.is_file():
            data = regimes_file.read_bytes()
            read_files.append((regimes_file, data))
            doc = read_yaml(data.decode("utf-8", errors="replace"), str(regimes_file))
            for r in _parse_regimes(doc, sink):
                if r.id in regimes:
                    prev = regimes[r.id]
                    sink.err(
                        r.file,
                        r.line,
                        f"regime {r.id!r} already defined at {prev.file}:{prev.line}",
                    )
                    continue
                regimes[r.id] = r
        for path in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
            if path.name == "regimes.yaml":
                continue
            if path.name == "regimes.yml":
                sink.err(path, 1, "regimes are read from regimes.yaml only: rename this file")
                continue
            try:
                data = path.read_bytes()
                text = data.decode("utf-8")
            except (OSError, UnicodeDecodeError) as e:
                sink.err(path, 1, f"cannot read: {e}")
                continue
            read_files.append((path, data))
            draft, extends = _parse_app(path, read_yaml(text, str(path)), read_files, sink)
            if draft is None:
                continue
            head = draft.head
            if extends:
                extensions.append((extends, draft))
            elif head.id in drafts:
                sink.err(
                    head.file,
                    head.line,
                    f"app {head.id!r} already defined in {drafts[head.id].head.file} (use 'extends: {head.id}' to add to it)",
                )
            else:
                drafts[head.id] = draft

    for target, ext in extensions:
        base = drafts.get(target)
        if base is None:
            sink.err(ext.head.file, ext.head.line, f"extends {target!r}: no such app")
            continue
        base.extend(ext)

    for entry, message in _dangling(drafts, regimes):
        sink.err(entry.file, entry.line, message)

    if sink.problems:
        raise CatalogueError(sink.problems, sink.notes)

    digest = hashlib.sha256()
    for path, data in read_files:
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(data).digest())
    apps = {app_id: drafts[app_id].freeze() for app_id in sorted(drafts)}
    return Catalogue(
        apps=apps,
        regimes=dict(sorted(regimes.items())),
        version=digest.hexdigest(),
        files=tuple(p for p, _ in read_files),
        notes=tuple(sink.notes),
    )
