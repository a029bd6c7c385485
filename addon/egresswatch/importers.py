"""Import external domain lists into catalogue YAML with provenance (``egresswatch lists import``).

Five input formats are understood; each parser reads text that is already on disk (or stdin) and
never fetches anything:

``hosts``
    ``0.0.0.0 a.example b.example  # comment``: every name after the address; localhost-style
    names are skipped silently. Entries are ``exact`` (a hosts file maps whole names).
``adblock``
    ``||a.example^`` is a ``suffix`` entry and ``|a.example^`` an ``exact`` one. Rules with a path,
    a wildcard, an exception (``@@``) or an option other than ``$important`` cannot be expressed
    as a catalogue entry: they are skipped and reported. ``!`` comments and ``[Adblock ...]``
    headers are ignored.
``plain``
    One name per line, ``#`` comments; ``*.a.example`` and ``.a.example`` are accepted as
    ``a.example``. Entries are ``suffix``.
``v2fly``
    v2fly/domain-list-community data files: ``domain:`` and bare names are ``suffix``, ``full:``
    is ``exact``, ``include:NAME [@attr ...]`` reads ``NAME`` from the same directory (with its
    attribute filter), ``regexp:``/``keyword:`` are skipped and reported, ``@attr`` become tags.
``adguard``
    AdguardTeam/HostlistsRegistry service YAML (``id``, ``name``, ``rules:``): each rule is read
    as an ``adblock`` rule, with the YAML line number.

Every entry keeps the file and line it came from, so the catalogue file written by
:func:`render_yaml` can cite ``<path>:<line>`` as its source. Names are normalised with
:func:`egresswatch.hostnames.normalise_host`; invalid names and IP literals are dropped and
reported with their input line numbers.

>>> r = parse("hosts", "0.0.0.0 Ads.Example.  # tracker\\n127.0.0.1 localhost\\n", origin="h")
>>> [(e.domain, e.match, e.line) for e in r.entries]
[('ads.example', 'exact', 1)]
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

from .hostnames import is_ip_literal
from .hostnames import is_strict_hostname
from .hostnames import normalise_host
from .hostnames import parse_ip
from .hostnames import why_invalid

__all__ = [
    "FORMATS",
    "Entry",
    "ListImportError",
    "ImportResult",
    "Skipped",
    "parse",
    "parse_file",
    "render_yaml",
]

logger = logging.getLogger(__name__)

FORMATS = ("hosts", "adblock", "plain", "v2fly", "adguard")

# Names a hosts file maps for the machine itself, never a destination worth cataloguing.
_HOSTS_LOCAL_NAMES = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "local",
        "broadcasthost",
        "ip6-localhost",
        "ip6-loopback",
        "ip6-localnet",
        "ip6-mcastprefix",
        "ip6-allnodes",
        "ip6-allrouters",
        "ip6-allhosts",
        "0.0.0.0",
    }
)

# AdBlock options that do not change which host a rule names (AdGuard DNS syntax).
_HARMLESS_OPTIONS = frozenset({"important"})

_ADBLOCK_RE = re.compile(r"(?P<anchor>\|\|?)(?P<name>[^/^$|*]+)\^(?:\|)?(?:\$(?P<opts>.*))?")
_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # as the catalogue's app ids


class ListImportError(ValueError):
    """The input cannot be imported at all (unreadable, wrong format, bad YAML)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One name taken from the input, with where it came from."""

    domain: str
    match: str  # "suffix" | "exact"
    origin: str  # the input path as given (or "<stdin>"); included v2fly files: their path
    line: int
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Skipped:
    """An input line that was not imported, and why."""

    origin: str
    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"{self.origin}:{self.line}: skipped {self.text!r}: {self.reason}"


@dataclass(slots=True)
class ImportResult:
    """Entries in input order (first occurrence wins) and the lines that were skipped."""

    entries: list[Entry] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    name: str | None = None  # a display name found in the input (AdGuard ``name``)
    service_id: str | None = None  # AdGuard ``id``


class _Collector:
    """Accumulates entries, de-duplicating names and reporting what it drops."""

    def __init__(self) -> None:
        self.result = ImportResult()
        self._seen: dict[str, int] = {}  # domain -> index in entries

    def skip(self, origin: str, line: int, text: str, reason: str) -> None:
        self.result.skipped.append(Skipped(origin, line, text, reason))

    def add(
        self,
        raw: str,
        match: str,
        origin: str,
        line: int,
        tags: Sequence[str] = (),
        *,
        text: str | None = None,
    ) -> None:
        shown = raw if text is None else text
        name, reason = _normalise_entry(raw)
        if name is None:
            self.skip(origin, line, shown, reason or "not a valid hostname")
            return
        entry = Entry(name, match, origin, line, tuple(dict.fromkeys(tags)))
        prev_i = self._seen.get(name)
        if prev_i is None:
            self._seen[name] = len(self.result.entries)
            self.result.entries.append(entry)
            return
        prev = self.result.entries[prev_i]
        if prev.match == "exact" and match == "suffix":
            # The suffix entry covers the exact one: keep the broader, report the narrower.
            self.result.entries[prev_i] = entry
            self.skip(
                prev.origin,
                prev.line,
                prev.domain,
                f"covered by {name} (suffix) at {origin}:{line}",
            )
        else:
            self.skip(origin, line, shown, f"duplicate of {prev.origin}:{prev.line}")


def _normalise_entry(raw: str) -> tuple[str | None, str | None]:
    """(normalised name, None) or (None, reason) for one list entry."""
    raw = raw.strip()
    if not raw:
        return None, "empty name"
    # normalise_host accepts ports and brackets (it serves the proxy); a list entry must not.
    if parse_ip(raw) is not None:
        return None, "IP literal, not a hostname"
    if any(c in raw for c in ":/[]*@ \t"):
        return None, "not a hostname (holds ':', '/', '*', '@', brackets or spaces)"
    name = normalise_host(raw)
    if name is None:
        return None, why_invalid(raw) or "not a valid hostname"
    if is_ip_literal(name):
        return None, "IP literal, not a hostname"
    if not is_strict_hostname(name):
        # The proxy tolerates such names from clients; catalogue entries must be proper LDH.
        return None, "not a valid hostname (a label starts or ends with a hyphen)"
    return name, None


def _strip_comment(line: str, marker: str = "#") -> str:
    return line.split(marker, 1)[0].strip()


def _lines(text: str) -> Iterator[tuple[int, str]]:
    yield from enumerate(text.splitlines(), start=1)


# --- formats -----------------------------------------------------------------------------------


def _parse_hosts(text: str, origin: str, c: _Collector) -> None:
    for lineno, line in _lines(text):
        body = _strip_comment(line)
        if not body:
            continue
        fields = body.split()
        if parse_ip(fields[0]) is None:
            c.skip(origin, lineno, body, "not a hosts line (first field is not an IP address)")
            continue
        for name in fields[1:]:
            if name.lower().rstrip(".") in _HOSTS_LOCAL_NAMES:
                continue
            c.add(name, "exact", origin, lineno)


def _adblock_rule(rule: str, origin: str, lineno: int, c: _Collector) -> None:
    rule = rule.strip()
    if not rule or rule.startswith("!") or (rule.startswith("[") and rule.endswith("]")):
        return
    if rule.startswith("#") and not rule.startswith("##"):
        return  # hosts-style comment, common in DNS lists
    if rule.startswith("@@"):
        c.skip(origin, lineno, rule, "exception rule (@@) cannot be expressed")
        return
    m = _ADBLOCK_RE.fullmatch(rule)
    if m is None:
        c.skip(origin, lineno, rule, "not a ||domain^ rule (path, wildcard, regex or cosmetic)")
        return
    opts = m.group("opts")
    if opts is not None:
        names = {o.strip().split("=", 1)[0] for o in opts.split(",") if o.strip()}
        unknown = sorted(names - _HARMLESS_OPTIONS)
        if unknown:
            c.skip(
                origin,
                lineno,
                rule,
                f"option(s) {', '.join('$' + o for o in unknown)} cannot be expressed",
            )
            return
    match = "suffix" if m.group("anchor") == "||" else "exact"
    c.add(m.group("name"), match, origin, lineno, text=rule)


def _parse_adblock(text: str, origin: str, c: _Collector) -> None:
    for lineno, line in _lines(text):
        _adblock_rule(line, origin, lineno, c)


def _parse_plain(text: str, origin: str, c: _Collector) -> None:
    for lineno, line in _lines(text):
        body = _strip_comment(line)
        if not body:
            continue
        if len(body.split()) > 1:
            c.skip(origin, lineno, body, "more than one field (use --format hosts?)")
            continue
        name = body.removeprefix("*.") if body.startswith("*.") else body.removeprefix(".")
        c.add(name, "suffix", origin, lineno, text=body)


def _v2fly_attrs(tokens: Sequence[str]) -> tuple[list[str], list[str]]:
    """``@attr`` tokens as tags; other trailing tokens (``&affiliation``) are returned apart."""
    attrs = [t[1:] for t in tokens if t.startswith("@") and len(t) > 1]
    other = [t for t in tokens if not t.startswith("@")]
    return attrs, other


def _parse_v2fly(
    path: Path | None,
    text: str,
    origin: str,
    c: _Collector,
    *,
    want: Sequence[str] = (),
    exclude: Sequence[str] = (),
    stack: tuple[str, ...] = (),
) -> None:
    """One v2fly file; ``want``/``exclude`` is the attribute filter of the ``include:`` line."""
    for lineno, line in _lines(text):
        body = _strip_comment(line)
        if not body:
            continue
        head, *rest = body.split()
        kind, sep, value = head.partition(":")
        if not sep:
            kind, value = "domain", head
        attrs, other = _v2fly_attrs(rest)
        if kind == "include":
            inc_want = [a for a in attrs if not a.startswith("-")]
            inc_excl = [a[1:] for a in attrs if a.startswith("-")]
            _v2fly_include(path, value, origin, lineno, c, inc_want, inc_excl, stack)
            continue
        if want and not all(a in attrs for a in want):
            continue
        if exclude and any(a in attrs for a in exclude):
            continue
        if kind in ("regexp", "regex", "keyword"):
            c.skip(origin, lineno, body, f"{kind}: rules cannot be expressed as catalogue entries")
            continue
        if kind not in ("domain", "full"):
            c.skip(origin, lineno, body, f"unknown v2fly rule type {kind!r}")
            continue
        if other and not all(t.startswith("&") for t in other):
            c.skip(origin, lineno, body, "unexpected text after the name")
            continue
        match = "exact" if kind == "full" else "suffix"
        c.add(value, match, origin, lineno, attrs, text=body)


def _v2fly_include(
    path: Path | None,
    name: str,
    origin: str,
    lineno: int,
    c: _Collector,
    want: Sequence[str],
    exclude: Sequence[str],
    stack: tuple[str, ...],
) -> None:
    line_text = f"include:{name}"
    if path is None:
        c.skip(origin, lineno, line_text, "include: needs a file path (not stdin)")
        return
    if not name or "/" in name or name.startswith("."):
        c.skip(origin, lineno, line_text, "include: must name a file in the same directory")
        return
    target = path.parent / name
    key = str(target.resolve())
    if key in stack:
        c.skip(origin, lineno, line_text, "include cycle")
        return
    try:
        text = target.read_text(encoding="utf-8")
    except OSError as e:
        c.skip(origin, lineno, line_text, f"cannot read {target}: {e.strerror or e}")
        return
    _parse_v2fly(target, text, str(target), c, want=want, exclude=exclude, stack=(*stack, key))


def _parse_adguard(text: str, origin: str, c: _Collector) -> None:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise ListImportError(f"{origin}: not valid YAML: {e}") from e
    if not isinstance(node, yaml.MappingNode):
        raise ListImportError(f"{origin}: an AdGuard service file is a YAML mapping")
    rules_node: yaml.Node | None = None
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            continue
        if key.value == "rules":
            rules_node = value
        elif key.value == "name" and isinstance(value, yaml.ScalarNode):
            c.result.name = str(value.value)
        elif key.value == "id" and isinstance(value, yaml.ScalarNode):
            c.result.service_id = str(value.value)
    if not isinstance(rules_node, yaml.SequenceNode):
        raise ListImportError(f"{origin}: no 'rules:' list (is this an AdGuard service file?)")
    for item in rules_node.value:
        lineno = item.start_mark.line + 1
        if not isinstance(item, yaml.ScalarNode):
            c.skip(origin, lineno, "<non-string rule>", "rule is not a string")
            continue
        _adblock_rule(str(item.value), origin, lineno, c)


# --- entry points --------------------------------------------------------------------------------


def parse(fmt: str, text: str, *, origin: str, path: Path | None = None) -> ImportResult:
    """Parse ``text`` in format ``fmt``; ``origin`` names it in provenance and messages.

    ``path`` is the file the text came from; v2fly ``include:`` is resolved next to it.
    Raises :class:`ListImportError` for an unknown format or input that is not that format at all.
    """
    c = _Collector()
    if fmt == "hosts":
        _parse_hosts(text, origin, c)
    elif fmt == "adblock":
        _parse_adblock(text, origin, c)
    elif fmt == "plain":
        _parse_plain(text, origin, c)
    elif fmt == "v2fly":
        stack = (str(path.resolve()),) if path is not None else ()
        _parse_v2fly(path, text, origin, c, stack=stack)
    elif fmt == "adguard":
        _parse_adguard(text, origin, c)
    else:
        raise ListImportError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return c.result


def parse_file(fmt: str, path: Path) -> ImportResult:
    """Parse the file at ``path`` (never a URL)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ListImportError(f"cannot read {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ListImportError(f"{path}: not UTF-8 text: {e}") from e
    return parse(fmt, text, origin=str(path), path=path)


class _FlowList(list[str]):
    """A list written in flow style (``tags: [a, b]``)."""


class _Dumper(yaml.SafeDumper):
    """Block style with indented sequences, the layout of the bundled catalogue files."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_flow(dumper: yaml.SafeDumper, data: _FlowList) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


_Dumper.add_representer(_FlowList, _represent_flow)

# The C emitter (when PyYAML has it): ten times faster on long lists; its sequences are not
# indented under their key, which is the same YAML.
_FastDumper: type[yaml.SafeDumper] | type[yaml.CSafeDumper] = _Dumper
if hasattr(yaml, "CSafeDumper"):

    class _CDumper(yaml.CSafeDumper):
        pass

    _CDumper.add_representer(_FlowList, _represent_flow)  # type: ignore[arg-type]
    _FastDumper = _CDumper


def _entry_yaml(
    e: Entry,
    *,
    source: str | None,
    confidence: str,
    match: str | None,
    tags: Sequence[str],
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "domain": e.domain,
        "match": match or e.match,
        "source": source if source else f"{e.origin}:{e.line}",
        "confidence": confidence,
    }
    all_tags = list(dict.fromkeys([*tags, *e.tags]))
    if all_tags:
        d["tags"] = _FlowList(all_tags)
    return d


def render_yaml(
    entries: Iterable[Entry],
    *,
    app: str,
    name: str | None = None,
    source: str | None = None,
    confidence: str = "medium",
    match: str | None = None,
    tags: Sequence[str] = (),
    extends: bool = False,
    header: str = "",
    description: str | None = None,
    cidrs: Sequence[Mapping[str, Any]] = (),
    fast: bool = False,
) -> str:
    """A catalogue app file (or an ``extends:`` file) holding ``entries``.

    Every entry's ``source`` is ``source`` when given, else ``<origin>:<line>``; ``match``
    forces one match kind for every entry. ``header`` becomes leading ``#`` comment lines.
    ``cidrs`` are written as given (``cidr``, ``source``, ``confidence``, optional ``tags``)
    under ``cidrs:``; ``domains:`` is left out when there are only ranges. ``fast`` uses the C
    emitter when there is one (long lists; sequences are then not indented under their key).
    """
    if not _ID_RE.fullmatch(app):
        raise ListImportError(f"app id {app!r} must be 1-63 lower-case letters, digits and hyphens")
    doc: dict[str, Any] = {}
    if extends:
        doc["extends"] = app
    else:
        doc["id"] = app
        doc["name"] = name or app
        doc["vendor"] = "unknown"
        doc["parent"] = "unknown"
        doc["category"] = "other"
        doc["regimes"] = _FlowList()
        doc["description"] = (
            description or "Imported with egresswatch lists import; review before use."
        )
    domains = [
        _entry_yaml(e, source=source, confidence=confidence, match=match, tags=tags)
        for e in entries
    ]
    if domains or not cidrs:
        doc["domains"] = domains
    if cidrs:
        doc["cidrs"] = [
            {k: _FlowList(v) if k == "tags" else v for k, v in c.items()} for c in cidrs
        ]
    body = yaml.dump(
        doc,
        Dumper=_FastDumper if fast else _Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
        default_flow_style=False,
    )
    lines = [f"# {h}".rstrip() for h in header.splitlines()]
    return "\n".join([*lines, body]) if lines else body
