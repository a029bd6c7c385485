"""``egresswatch lists update``: fetch upstream lists, diff them, write them into a catalogue.

For each :class:`~egresswatch.sources.Source`, :func:`update_source` fetches the list
(:mod:`egresswatch.fetch`), checks its digest against the pin, parses it with the importers
(or :mod:`egresswatch.ranges` for ``ranges-json``), drops names the catalogue check would reject
and names another catalogue file already lists, compares the result with the file the previous update wrote, and writes the new file atomically
(a temporary file in the same directory, then ``os.replace``) when every guard passes:

- a pinned ``sha256`` must match the fetched bytes;
- the list must parse and yield at least one name or range;
- it must not remove more than the allowed share of the names and ranges the file held;
- the catalogue directory with the new file must not have a ``lists check`` error the directory
  did not have before (checked on a copy, merged after the bundled catalogue);
- a ``review`` source is written only when accepted.

A refused update leaves the old file as it was. A list whose entries did not change is not
rewritten (the running proxy has nothing to reload).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from datetime import date
from pathlib import Path
from typing import Any
from typing import Literal

import yaml

from .catalogue import CatalogueError
from .catalogue import load_catalogue
from .fetch import Fetched
from .fetch import FetchError
from .fetch import fetch
from .importers import Entry
from .importers import ImportResult
from .importers import ListImportError
from .importers import Skipped
from .importers import parse
from .importers import render_yaml
from .lint import NameChecker
from .lint import Severity
from .lint import check_catalogue
from .lint import check_dirs
from .ranges import parse_ranges_json
from .sources import Source

__all__ = [
    "Diff",
    "FetchOptions",
    "Item",
    "LockedError",
    "Outcome",
    "is_inside",
    "locked",
    "screen",
    "update_source",
]

# Every scalar as a string (no type resolution): the C parser when built, else the Python one.
_LOADER = getattr(yaml, "CBaseLoader", yaml.BaseLoader)

Status = Literal["written", "would-write", "unchanged", "needs-review", "refused"]


def screen(
    entries: Sequence[Entry], forced_match: str | None, tags: Sequence[str]
) -> tuple[list[Entry], list[Skipped], list[str]]:
    """Drop entries the catalogue check would reject; return (kept, dropped, warnings)."""
    checker = NameChecker()
    kept: list[Entry] = []
    dropped: list[Skipped] = []
    warnings: list[str] = []
    for e in entries:
        findings = checker.check(e.domain, forced_match or e.match, (*tags, *e.tags))
        errors = [m for s, m in findings if s is Severity.ERROR]
        if errors:
            dropped.append(Skipped(e.origin, e.line, e.domain, errors[0]))
            continue
        warnings.extend(f"{e.origin}:{e.line}: warning: {m}" for s, m in findings)
        kept.append(e)
    return kept, dropped, warnings


@dataclass(frozen=True, slots=True)
class Item:
    """One name or range of a list file: ``kind`` is suffix, exact or cidr."""

    kind: str
    value: str
    source: str = ""
    confidence: str = ""
    tags: tuple[str, ...] = ()

    def key(self) -> tuple[str, str, str, tuple[str, ...]]:
        return (self.kind, self.value, self.confidence, self.tags)


@dataclass(slots=True)
class Diff:
    added: list[Item] = field(default_factory=list)
    removed: list[Item] = field(default_factory=list)
    changed: list[tuple[Item, Item]] = field(default_factory=list)  # (old, new), same value
    unchanged: int = 0
    before: int = 0  # names and ranges in the old file

    @property
    def removed_share(self) -> float:
        return len(self.removed) / self.before if self.before else 0.0

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def diff_items(old: Sequence[Item], new: Sequence[Item]) -> Diff:
    old_by = {i.value: i for i in old}
    new_by = {i.value: i for i in new}
    d = Diff(before=len(old_by))
    for value, item in new_by.items():
        prev = old_by.get(value)
        if prev is None:
            d.added.append(item)
        elif prev.key() != item.key():
            d.changed.append((prev, item))
        else:
            d.unchanged += 1
    d.removed = [i for v, i in old_by.items() if v not in new_by]
    return d


@dataclass(frozen=True, slots=True)
class FetchOptions:
    timeout: float = 30.0
    max_bytes: int = 20 * 1024 * 1024
    retries: int = 2
    backoff: float = 1.0


@dataclass(slots=True)
class Outcome:
    source: Source
    path: Path
    status: Status
    message: str = ""
    fetched: Fetched | None = None
    diff: Diff | None = None
    extends: bool = True
    skipped: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)  # lists check errors that refused it

    @property
    def failed(self) -> bool:
        return self.status == "refused"


def is_inside(path: Path, directory: Path) -> bool:
    """Whether ``path`` resolves to ``directory`` or somewhere under it."""
    p, d = path.resolve(), directory.resolve()
    return p == d or d in p.parents


def _old_items(path: Path) -> list[Item]:
    """The names and ranges of a file written by a previous update (empty when absent).

    Raises :class:`ValueError` when the file exists but cannot be read as one: without its
    entries the removal share could not be enforced.
    """
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read the previous {path}: {err}") from err
    if not isinstance(doc, dict):
        raise ValueError(f"the previous {path} is not a catalogue file (not a mapping)")
    items: list[Item] = []
    for key, kind_key in (("domains", "match"), ("cidrs", None)):
        for e in doc.get(key) or ():
            if not isinstance(e, dict):
                continue
            value = e.get("domain" if kind_key else "cidr")
            if value is None:
                continue
            tags = e.get("tags") or ()
            items.append(
                Item(
                    str(e.get(kind_key, "suffix")) if kind_key else "cidr",
                    str(value),
                    str(e.get("source", "")),
                    str(e.get("confidence", "")),
                    tuple(str(t) for t in tags) if isinstance(tags, list) else (),
                )
            )
    return items


def provenance(src: Source, got: Fetched) -> str:
    """The ``source:`` of every entry written from ``got``: URL, fetch date and digest."""
    return f"{src.url} (retrieved {got.fetched_at.date().isoformat()}, sha256 {got.sha256})"


def _parse(
    src: Source, text: str, prov: str
) -> tuple[list[Entry], list[dict[str, Any]], list[str], str | None]:
    """(names, cidr entries, skipped lines, display name found in the input)."""
    tags = list(src.tags)
    if src.format == "ranges-json":
        r = parse_ranges_json(text, src.json_paths)
        cidrs: list[dict[str, Any]] = []
        for net in r.networks:
            c: dict[str, Any] = {"cidr": str(net), "source": prov, "confidence": src.confidence}
            if tags:
                c["tags"] = tags
            cidrs.append(c)
        return [], cidrs, [str(s) for s in r.skipped], None
    result: ImportResult = parse(src.format, text, origin=src.url)
    kept, dropped, _ = screen(result.entries, src.match, tags)
    skipped = sorted([*result.skipped, *dropped], key=lambda s: s.line)
    return kept, [], [str(s) for s in skipped], result.name


def _items(
    src: Source, names: Sequence[Entry], cidrs: Sequence[dict[str, Any]], prov: str
) -> list[Item]:
    items = [
        Item(
            src.match or e.match,
            e.domain,
            prov,
            src.confidence,
            tuple(dict.fromkeys([*src.tags, *e.tags])),
        )
        for e in names
    ]
    items.extend(Item("cidr", c["cidr"], prov, src.confidence, tuple(src.tags)) for c in cidrs)
    return items


class _Stage:
    """A copy of ``into`` in a temporary directory, to try a new file before writing it.

    ``claims`` maps every name the merged catalogue (bundled, then the copy) lists outside the
    target file to ``(app, "file:line")``; ``new_errors(text)`` gives the ``lists check`` errors
    that writing ``text`` as the target would add (file paths shown as under ``into``).
    """

    def __init__(self, tmp: Path, into: Path, bundled: Path, target: Path, today: date) -> None:
        self.into, self.bundled, self.today = into, bundled, today
        self.copy = tmp / "lists"
        if into.is_dir():
            shutil.copytree(into, self.copy, symlinks=True)
        else:
            self.copy.mkdir()
        self.staged = self.copy / target.name
        self.claims: dict[str, tuple[str, str]] = {}
        self.before: set[tuple[str, str]] = set()
        try:
            cat = load_catalogue([bundled, self.copy])
        except CatalogueError as e:
            self.before = {(p.file, p.message) for p in e.problems}
            return
        self.before = {
            (f.file, f.message)
            for f in check_catalogue(cat, today=today)
            if f.severity is Severity.ERROR
        }
        for app in cat.apps.values():
            for r in app.rules:
                if r.file != str(self.staged):
                    self.claims.setdefault(r.domain, (app.id, self.shown(r.where)))
            for b in app.lists:
                for name, line in zip(b.names, b.lines, strict=True):
                    self.claims.setdefault(name, (app.id, self.shown(f"{b.file}:{line}")))

    def shown(self, text: str) -> str:
        return text.replace(str(self.copy), str(self.into))

    def new_errors(self, text: str) -> list[str]:
        self.staged.write_text(text, encoding="utf-8")
        out = []
        for f in check_dirs([self.bundled, self.copy], today=self.today):
            if f.severity is not Severity.ERROR:
                continue
            if f.file == str(self.staged) or (f.file, f.message) not in self.before:
                out.append(self.shown(f"{f.file}:{f.line}: error: {f.message}"))
        return out


def _drop_claimed(
    src: Source, names: list[Entry], claims: dict[str, tuple[str, str]]
) -> tuple[list[Entry], list[str]]:
    """``names`` without those another file already lists (for this app or another one)."""
    kept: list[Entry] = []
    dropped: list[str] = []
    for e in names:
        claim = claims.get(e.domain)
        if claim is None:
            kept.append(e)
            continue
        app, where = claim
        reason = (
            f"already listed for app {app} at {where}"
            if app == src.app
            else f"listed for app {app} at {where}, not added to {src.app} (two apps "
            "sharing a name is declared by hand with shared_with)"
        )
        dropped.append(f"{e.origin}:{e.line}: skipped {e.domain!r}: {reason}")
    return kept, dropped


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one rename: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o644 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


_HEADER_FIRST = "# Written by egresswatch lists update"


def _written_by_update(path: Path) -> bool:
    """Whether ``path`` starts with the header :func:`_header` writes (so it may be replaced)."""
    try:
        with path.open(encoding="utf-8") as f:
            return f.readline().startswith(_HEADER_FIRST)
    except (OSError, UnicodeDecodeError):
        return False


def _header(src: Source, got: Fetched, n_names: int, n_cidrs: int, n_skipped: int) -> str:
    return "\n".join(
        [
            f"{_HEADER_FIRST.removeprefix('# ')} from source {src.id!r} ({src.where}).",
            "Do not edit: the next update replaces this file; change the sources file instead.",
            f"url: {src.url}",
            f"retrieved: {got.fetched_at.strftime('%Y-%m-%dT%H:%M:%SZ')}",
            f"sha256: {got.sha256}",
            f"format: {src.format}; {n_names} name(s), {n_cidrs} range(s), "
            f"{n_skipped} input item(s) skipped",
        ]
    )


def update_source(
    src: Source,
    into: Path,
    *,
    bundled: Path,
    bundled_apps: Iterable[str],
    max_removed_share: float,
    dry_run: bool = False,
    accept: bool = False,
    options: FetchOptions = FetchOptions(),
    today: date | None = None,
) -> Outcome:
    """Fetch, check and (unless refused, unchanged, dry-run or awaiting review) write one source."""
    extends = src.extends or src.app in set(bundled_apps)
    path = into / f"{src.id if extends else src.app}.yaml"
    out = Outcome(src, path, "refused", extends=extends)
    if not extends and src.id != src.app:
        out.message = (
            f"source {src.id!r} defines the new app {src.app!r}, whose file must be "
            f"{src.app}.yaml: drop its 'id:' or use 'extends:' for an app defined elsewhere"
        )
        return out
    if path.exists() and not _written_by_update(path):
        out.message = (
            f"{path} exists and was not written by 'lists update' (no header line "
            f"{_HEADER_FIRST!r}): it is left alone; give the source another id, or move the file"
        )
        return out
    try:
        got = fetch(
            src.url,
            timeout=options.timeout,
            max_bytes=options.max_bytes,
            retries=options.retries,
            backoff=options.backoff,
        )
    except FetchError as e:
        tries = f" after {e.attempts} attempt(s)" if e.attempts > 1 else ""
        out.message = f"cannot fetch {src.url}{tries}: {e}"
        return out
    out.fetched = got
    if src.sha256 is not None and got.sha256 != src.sha256:
        out.message = (
            f"checksum mismatch: {src.url} has sha256 {got.sha256}, the sources file pins "
            f"{src.sha256}; review the change, then pin the new digest"
        )
        return out
    try:
        text = got.body.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        out.message = f"the list is not UTF-8 text: {e}"
        return out
    prov = provenance(src, got)
    try:
        names, cidrs, out.skipped, found_name = _parse(src, text, prov)
    except ListImportError as e:
        out.message = f"the list does not parse as {src.format}: {e}"
        return out
    if not names and not cidrs:
        out.message = (
            f"the list yields no usable name or range ({len(out.skipped)} item(s) skipped); "
            f"is it really {src.format}?"
        )
        return out
    with tempfile.TemporaryDirectory(prefix="egresswatch-update-") as tmp:
        stage = _Stage(Path(tmp), into, bundled, path, today or date.today())
        names, dropped = _drop_claimed(src, names, stage.claims)
        out.skipped.extend(dropped)
        try:
            old_items = _old_items(path)
        except ValueError as e:
            out.message = f"{e}; repair or remove it"
            return out
        diff = diff_items(old_items, _items(src, names, cidrs, prov))
        out.diff = diff
        if diff.empty:
            out.status, out.message = "unchanged", "no change"
            return out
        share = src.max_removed_share if src.max_removed_share is not None else max_removed_share
        if diff.removed_share > share:
            out.message = (
                f"the update would remove {len(diff.removed)} of {diff.before} entries "
                f"({diff.removed_share:.0%}), more than the allowed {share:.0%}"
            )
            return out
        rendered = render_yaml(
            names,
            app=src.app,
            name=src.name or found_name,
            source=prov,
            confidence=src.confidence,
            match=src.match,
            tags=src.tags,
            extends=extends,
            header=_header(src, got, len(names), len(cidrs), len(out.skipped)),
            description=f"Fetched from {src.url} ({src.format}) by egresswatch lists update.",
            cidrs=cidrs,
            fast=True,
        )
        errors = stage.new_errors(rendered)
    if errors:
        out.findings = errors
        out.message = (
            f"the result would not pass 'egresswatch lists check' ({len(errors)} error(s))"
        )
        return out
    if src.sha256 is None and not accept:
        out.status = "needs-review"
        out.message = (
            "review source: not written; rerun with --accept to write it, or pin "
            f"sha256: {got.sha256}"
        )
        return out
    if dry_run:
        out.status, out.message = "would-write", "dry run: nothing written"
        return out
    write_atomically(path, rendered)
    out.status, out.message = "written", f"wrote {path}"
    return out


class LockedError(Exception):
    """Another ``lists update`` holds the directory."""


@contextmanager
def locked(into: Path) -> Iterator[None]:
    """Hold an exclusive lock on the directory ``into`` (created if missing) for one run, so
    that two updates never interleave their checks and writes."""
    into.mkdir(parents=True, exist_ok=True)
    fd = os.open(into, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise LockedError(f"another 'lists update' is writing {into}") from e
        yield
    finally:
        os.close(fd)


def bundled_app_ids(bundled: Path) -> set[str]:
    return set(load_catalogue([bundled]).apps)
