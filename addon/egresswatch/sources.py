"""The sources file of ``egresswatch lists update``: which upstream lists feed which apps.

The format is documented in ``domains/README.md`` ("Updating: egresswatch lists update")::

    sources:
      - id: tiktok-adguard          # optional: names the written file (default: the app id)
        url: https://example.org/tiktok.yml
        format: adguard             # hosts | adblock | plain | v2fly | adguard | ranges-json
        app: tiktok                 # or  extends: tiktok
        sha256: review              # or the 64 hex digits of the expected body
        confidence: medium          # optional (default medium)
        tags: [community]           # optional, added to every entry
        match: suffix               # optional: force this match kind on every name
        max_removed_share: 0.1      # optional: overrides --max-removed-share
        name: TikTok                # optional: display name when the source defines a new app
        json_path: prefixes[].ip_prefix   # ranges-json only: a path or a list of paths

A small hand-written validator (every problem reported as ``file:line: message``); the schema
belongs with the other format models once those exist.

Errors::

    SourcesError(ValueError)   .problems: list[Problem]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from .catalogue import CONFIDENCES
from .catalogue import Problem
from .fetch import check_url
from .importers import FORMATS as IMPORT_FORMATS
from .ranges import DEFAULT_PATH
from .ranges import parse_path

__all__ = ["FORMATS", "Source", "SourcesError", "load_sources", "parse_share", "parse_sources"]

FORMATS = (*IMPORT_FORMATS, "ranges-json")

_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_KEYS = frozenset(
    {
        "id",
        "url",
        "format",
        "app",
        "extends",
        "sha256",
        "confidence",
        "tags",
        "match",
        "max_removed_share",
        "name",
        "json_path",
    }
)


class SourcesError(ValueError):
    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True)
class Source:
    id: str  # the written file is <id>.yaml
    url: str
    format: str
    app: str
    extends: bool  # ``extends:`` given: always an extends file
    sha256: str | None  # None: "review"
    confidence: str
    tags: tuple[str, ...]
    match: str | None
    max_removed_share: float | None
    name: str | None
    json_paths: tuple[str, ...]
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


class _Reader:
    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def err(self, node: yaml.Node, message: str) -> None:
        self.problems.append(Problem(self.file, node.start_mark.line + 1, message))

    def scalar(self, node: yaml.Node | None, what: str) -> str | None:
        if node is None:
            return None
        if not isinstance(node, yaml.ScalarNode) or node.tag == "tag:yaml.org,2002:null":
            self.err(node, f"{what} must be a single value")
            return None
        return str(node.value).strip()

    def str_list(self, node: yaml.Node | None, what: str) -> tuple[str, ...]:
        if node is None:
            return ()
        if isinstance(node, yaml.ScalarNode):
            value = self.scalar(node, what)
            return (value,) if value else ()
        if not isinstance(node, yaml.SequenceNode):
            self.err(node, f"{what} must be a value or a list of values")
            return ()
        out = []
        for item in node.value:
            value = self.scalar(item, what)
            if value:
                out.append(value)
        return tuple(out)

    def mapping(self, node: yaml.Node, what: str) -> dict[str, yaml.Node] | None:
        if not isinstance(node, yaml.MappingNode):
            self.err(node, f"{what} must be a mapping")
            return None
        out: dict[str, yaml.Node] = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                self.err(k, f"{what}: keys must be plain names")
                continue
            if k.value in out:
                self.err(k, f"{what}: duplicate key {k.value!r}")
            out[str(k.value)] = v
        return out


def parse_share(text: str) -> float | None:
    """A share from 0 to 1 (``0.2``), or ``None`` when ``text`` is not one."""
    try:
        share = float(text)
    except ValueError:
        return None
    return share if 0.0 <= share <= 1.0 else None


def _share(r: _Reader, node: yaml.Node | None) -> float | None:
    text = r.scalar(node, "max_removed_share")
    if text is None or node is None:
        return None
    share = parse_share(text)
    if share is None:
        r.err(node, f"max_removed_share {text!r} must be a number from 0 to 1")
    return share


def _source(r: _Reader, item: yaml.Node, m: dict[str, yaml.Node]) -> Source | None:
    for key, value in m.items():
        if key not in _KEYS:
            r.err(value, f"unknown key {key!r} (expected one of {', '.join(sorted(_KEYS))})")
    n0 = len(r.problems)
    url = r.scalar(m.get("url"), "url")
    if not url:
        r.err(item, "url is required")
    elif (why := check_url(url)) is not None:
        r.err(m["url"], f"url {url!r}: {why}")
    fmt = r.scalar(m.get("format"), "format")
    if not fmt:
        r.err(item, f"format is required ({', '.join(FORMATS)})")
    elif fmt not in FORMATS:
        r.err(m["format"], f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    app = r.scalar(m.get("app"), "app")
    ext = r.scalar(m.get("extends"), "extends")
    if app and ext:
        r.err(m["extends"], "give either app or extends, not both")
    target = app or ext
    if not target:
        r.err(item, "app (or extends) is required: the app this list feeds")
    elif not _ID_RE.fullmatch(target):
        r.err(m["app" if app else "extends"], f"app id {target!r} must be [a-z0-9-]+")
    sid = r.scalar(m.get("id"), "id") or target or ""
    if "id" in m and not _ID_RE.fullmatch(sid):
        r.err(m["id"], f"id {sid!r} must be lower-case letters, digits and hyphens")
    sha = (r.scalar(m.get("sha256"), "sha256") or "").lower()
    if not sha:
        r.err(item, "sha256 is required: the pinned digest of the list, or 'review'")
    elif sha != "review" and not _SHA_RE.fullmatch(sha):
        r.err(m["sha256"], "sha256 must be 64 hex digits or 'review'")
    conf = r.scalar(m.get("confidence"), "confidence") or "medium"
    if conf not in CONFIDENCES:
        r.err(m["confidence"], f"confidence {conf!r} is not one of {', '.join(CONFIDENCES)}")
    match = r.scalar(m.get("match"), "match")
    if match is not None and match not in ("suffix", "exact"):
        r.err(m["match"], f"match {match!r} must be suffix or exact")
    if match is not None and fmt == "ranges-json":
        r.err(m["match"], "match applies to names, not to ranges-json")
    paths = r.str_list(m.get("json_path"), "json_path")
    if paths and fmt != "ranges-json":
        r.err(m["json_path"], "json_path applies to the ranges-json format only")
    for p in paths:
        try:
            parse_path(p)
        except ValueError as e:
            r.err(m["json_path"], f"json_path {p!r}: {e}")
    share = _share(r, m.get("max_removed_share"))
    if len(r.problems) > n0:
        return None
    assert url and fmt and target
    return Source(
        id=sid,
        url=url,
        format=fmt,
        app=target,
        extends=bool(ext),
        sha256=None if sha == "review" else sha,
        confidence=conf,
        tags=r.str_list(m.get("tags"), "tags"),
        match=match,
        max_removed_share=share,
        name=r.scalar(m.get("name"), "name"),
        json_paths=paths or ((DEFAULT_PATH,) if fmt == "ranges-json" else ()),
        file=r.file,
        line=item.start_mark.line + 1,
    )


def parse_sources(text: str, file: str) -> list[Source]:
    """The sources in ``text``; raise :class:`SourcesError` listing every problem."""
    r = _Reader(file)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise SourcesError(
            [Problem(file, mark.line + 1 if mark else 1, f"YAML syntax error: {e.problem or e}")]
        ) from e
    if root is None:
        raise SourcesError([Problem(file, 1, "empty sources file (expected 'sources:')")])
    top = r.mapping(root, "sources file")
    sources: list[Source] = []
    if top is not None:
        for key, value in top.items():
            if key != "sources":
                r.err(value, f"unknown key {key!r} (expected 'sources')")
        node = top.get("sources")
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            r.err(node or root, "'sources' must be a non-empty list")
        else:
            seen: dict[str, Source] = {}
            for item in node.value:
                m = r.mapping(item, "source")
                s = _source(r, item, m) if m is not None else None
                if s is None:
                    continue
                if s.id in seen:
                    r.err(
                        item,
                        f"source id {s.id!r} already used at line {seen[s.id].line}: both "
                        f"would write {s.id}.yaml (give one an 'id:')",
                    )
                    continue
                seen[s.id] = s
                sources.append(s)
    if r.problems:
        raise SourcesError(r.problems)
    return sources


def load_sources(path: Path) -> list[Source]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SourcesError([Problem(str(path), 0, f"cannot read the sources file: {e}")]) from e
    return parse_sources(text, str(path))
