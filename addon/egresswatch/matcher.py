"""Hostname -> designated app, in time that does not grow with the catalogue.

The matcher keeps two dictionaries keyed by normalised names: exact rules, and suffix rules plus
carve-outs. The suffix dictionary also holds every proper suffix of a rule as an interior marker
(for ``pay.weixin.qq.com``: ``weixin.qq.com``, ``qq.com``, ``com``), so a lookup can walk the
name's suffixes from the TLD upwards (``com`` -> ``qq.com`` -> ``weixin.qq.com`` ...) and stop at
the first suffix that is absent: nothing longer can be a rule. A miss therefore costs one probe
per label the catalogue knows, plus one; a hit, one probe more than the rule's labels. The cost
depends on the name, never on the number of rules, and the probes near the root hit the same few
hot entries whatever the catalogue size. Suffixes are only ever taken at label boundaries:
``notalipay.com`` never matches ``alipay.com``.

Two backends hold the name tables. ``native`` (the C extension ``_suffixtable``, used when it
is built) keeps both in compact open-addressing tables with the suffix hashes computed in one
right-to-left pass, and runs the whole common case of :meth:`Matcher.match` in one call; bulk
list names cost no Python object. ``python`` is the same walk over two dictionaries, used when
the extension is missing or ``EGRESSWATCH_PURE_PYTHON=1`` is set. ``Matcher.backend`` says
which is in use; both decide alike (the tests run every case against both).

IP literals are matched against the catalogue's CIDR ranges, bucketed by prefix length (one probe
per distinct prefix length).

>>> from egresswatch.catalogue import load_catalogue, bundled_dir
>>> m = Matcher.from_catalogue(load_catalogue([bundled_dir()]))
>>> m.match("Pay.Weixin.QQ.com.").app
'wechat-pay'
>>> m.match("notalipay.com") is None
True
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Iterable
from typing import Literal
from typing import NamedTuple
from typing import cast

from .catalogue import BulkList
from .catalogue import CarveOut
from .catalogue import Catalogue
from .catalogue import CidrRule
from .catalogue import DomainRule
from .catalogue import PatternRule
from .catalogue_schema import PRIMARY_TAG
from .hostnames import is_matchable
from .hostnames import normalise_host
from .hostnames import parse_ip

try:
    from ._suffixtable import SuffixTable

    NATIVE_AVAILABLE = True
except ImportError:  # built without a C compiler: the pure-Python backend serves
    NATIVE_AVAILABLE = False

__all__ = ["NATIVE_AVAILABLE", "Backend", "Match", "Matcher"]

logger = logging.getLogger(__name__)

Backend = Literal["native", "python"]


# A dictionary value: one rule, a carve-out, a bulk-list reference (the list's index: one int
# object shared by every name of the list, so a million-name list costs no object per name), or
# a tuple of those when several apps claim the same name.
class _PatternSet:
    """The label patterns declared under one parent (``wx#`` under ``qq.com``), stored in the
    suffix table under the parent: a walk that reaches the parent hands the name to Python,
    which tries the patterns (catalogue order) on the label directly left of the parent."""

    __slots__ = ("domain", "patterns")

    def __init__(self, parent: str, patterns: list[PatternRule]) -> None:
        self.domain = parent
        self.patterns = tuple((re.compile(p.regex()), p) for p in patterns)

    def match(self, name: str, excluded: set[str] | None) -> tuple[PatternRule, str] | None:
        """The first pattern whose app is not excluded that covers ``name``, with the concrete
        ``<label>.<parent>`` it matched; None when ``name`` has no label under the parent."""
        head = len(name) - len(self.domain) - 1
        if head <= 0:
            return None
        start = name.rfind(".", 0, head) + 1
        label = name[start:head]
        for regex, p in self.patterns:
            if excluded and p.app in excluded:
                continue
            if p.scope == "name" and start:
                continue
            if regex.fullmatch(label):
                return p, name[start:]
        return None


_Entry = DomainRule | CarveOut | int | _PatternSet


def _pattern_sets(patterns: Iterable[PatternRule]) -> list[_PatternSet]:
    by_parent: dict[str, list[PatternRule]] = {}
    for p in patterns:
        by_parent.setdefault(p.parent, []).append(p)
    return [_PatternSet(parent, ps) for parent, ps in by_parent.items()]


class _Node:
    """Interior marker: a proper suffix of some rule that is not a rule itself."""

    __slots__ = ()


_Value = _Entry | tuple[_Entry, ...] | _Node
_NODE = _Node()


class Match(NamedTuple):
    """Why ``host`` belongs to ``app``: the rule that decided, and the app's regimes."""

    host: str
    app: str
    apps: tuple[str, ...]
    rule: DomainRule | CidrRule
    regimes: tuple[str, ...]


def _add(table: dict[str, _Value], key: str, entry: _Entry) -> None:
    prev = table.get(key)
    if prev is None or prev is _NODE:
        table[key] = entry
    else:
        table[key] = _merged(prev, entry)


def _merged(prev: _Value, entry: _Entry) -> _Value:
    """The value of a name claimed again: every claim, in catalogue order."""
    if type(prev) is tuple:  # rules are NamedTuples: only a plain tuple holds several
        return (*cast(tuple[_Entry, ...], prev), entry)
    return (cast(_Entry, prev), entry)


class _PyIndex(NamedTuple):
    """The pure-Python backend's tables."""

    exact: dict[str, _Value]
    suffix: dict[str, _Value]
    # Rules (or carve-outs) that have longer rules or carve-outs under them: only past these
    # can the walk find anything longer than a rule it has found.
    interior: frozenset[str]
    # Whether any rule or carve-out is a bare TLD (one label).
    tld_rules: bool


# What the native table returns when Python must decide (odd input, shared names, ...).
_DEFER = object()


class Matcher:
    """Immutable once built; safe to share between the event loop and threads."""

    __slots__ = (
        "_bulk",
        "_cidrs",
        "_exact",
        "_interior",
        "_prefixes",
        "_regimes",
        "_suffix",
        "_table",
        "_tld_rules",
        "_values",
        "backend",
        "entries",
    )

    def __init__(
        self,
        index: _PyIndex | tuple[SuffixTable, list[_Value]],
        bulk: list[BulkList],
        cidrs: dict[tuple[int, int], dict[int, CidrRule]],
        regimes: dict[str, tuple[str, ...]],
    ) -> None:
        self.backend: Backend
        self._table: SuffixTable | None
        if isinstance(index, _PyIndex):
            self.backend = "python"
            self._table = None
            self._values: list[_Value] = []
            self._exact, self._suffix, self._interior, self._tld_rules = index
            rules = len(index.exact) + sum(1 for v in index.suffix.values() if v is not _NODE)
        else:
            self.backend = "native"
            self._table, self._values = index
            self._exact, self._suffix, self._interior, self._tld_rules = {}, {}, frozenset(), True
            rules = self._table.rules
        self._bulk = bulk
        self._cidrs = cidrs
        # Longest prefix first, per IP version.
        self._prefixes = {
            v: sorted((plen for (ver, plen) in cidrs if ver == v), reverse=True) for v in (4, 6)
        }
        self._regimes = regimes
        self.entries = rules + sum(len(t) for t in cidrs.values())

    @classmethod
    def from_catalogue(cls, catalogue: Catalogue, backend: Backend | None = None) -> Matcher:
        entries: list[DomainRule | CarveOut | PatternRule] = []
        for app in catalogue.apps.values():
            entries.extend(app.rules)
            entries.extend(app.carve_outs)
            entries.extend(app.patterns)
        return cls.from_entries(
            entries,
            (b for app in catalogue.apps.values() for b in app.lists),
            (c for app in catalogue.apps.values() for c in app.cidrs),
            {app_id: app.regimes for app_id, app in catalogue.apps.items()},
            backend,
        )

    @classmethod
    def from_entries(
        cls,
        entries: Iterable[DomainRule | CarveOut | PatternRule],
        bulk: Iterable[BulkList] = (),
        cidrs: Iterable[CidrRule] = (),
        regimes: dict[str, tuple[str, ...]] | None = None,
        backend: Backend | None = None,
    ) -> Matcher:
        """Build a matcher; ``backend`` defaults to native when the extension is built (unless
        ``EGRESSWATCH_PURE_PYTHON=1``), else python."""
        given = list(entries)
        rules: list[DomainRule | CarveOut | _PatternSet] = [
            e for e in given if not isinstance(e, PatternRule)
        ]
        rules += _pattern_sets(e for e in given if isinstance(e, PatternRule))
        lists = list(bulk)
        regimes = dict(regimes or {})
        nets: dict[tuple[int, int], dict[int, CidrRule]] = {}
        for c in cidrs:
            bucket = nets.setdefault((c.network.version, c.network.prefixlen), {})
            bucket.setdefault(int(c.network.network_address), c)
        if backend is None:
            pure = os.environ.get("EGRESSWATCH_PURE_PYTHON", "") not in ("", "0")
            backend = "native" if NATIVE_AVAILABLE and not pure else "python"
        if backend == "native":
            if not NATIVE_AVAILABLE:
                raise RuntimeError(
                    "the native suffix table (egresswatch._suffixtable) is not built"
                )
            try:
                native = _native_index(rules, lists, regimes)
            except ValueError as exc:  # a key the C table refuses (not ASCII, over 255 chars)
                logger.warning("native matcher unavailable (%s); using the Python backend", exc)
            else:
                return cls(native, lists, nets, regimes)
        return cls(_python_index(rules, lists), lists, nets, regimes)

    # ----------------------------------------------------------------------------------------

    def match(self, host: str | bytes | None) -> Match | None:
        """Attribute a raw hostname (or IP literal) to an app, or ``None``."""
        table = self._table
        if table is not None:
            # The native table runs the fast path below in one call, or defers to it.
            native: Match | None = table.match(host)
            if native is not _DEFER:
                return native
        # Fast path for the common case, a plain ASCII name: lower-case it and strip the dot,
        # then look it up without validating it first. A name that is not in the catalogue is
        # no match whether valid or not (the common case costs no validation); a match is
        # returned only if the whole name is valid. Ports, brackets, IP literals and Unicode
        # take the careful path.
        if host.__class__ is str and 0 < len(host) <= _FAST_MAX and host.isascii():
            name = host.lower()
            if name[-1] == ".":
                name = name[:-1]
            # name[-1] > ":" rules out IP literals (digits, colons); brackets need no check here:
            # no rule holds one, and a name with one left of a rule fails validation below.
            if name and name[-1] > ":" and ":" not in name:
                found = self._lookup(name)
                if found is None:
                    return None
                # Only the labels left of the matched rule are unchecked.
                if is_matchable(name, len(name) - len(found.rule.domain) - 1):
                    return found
                return None
        normalised = normalise_host(host)
        if normalised is None:
            return None
        return self.match_normalised(normalised)

    def match_normalised(self, name: str) -> Match | None:
        """Like :meth:`match` for a name already passed through ``normalise_host``."""
        if name[-1] in _DIGITS_AND_COLON:
            ip = parse_ip(name)
            if ip is not None:
                return self.match_ip(ip)
        return self._lookup(name)

    def _lookup(self, name: str) -> Match | None:
        """Exact rules, then the longest suffix rule, for a lower-case name without a port."""
        table = self._table
        if table is not None:
            native: Match | None = table.lookup(name)
            if native is not _DEFER:
                return native
            return self._lookup_native(table, name)
        exact = self._exact
        if exact:
            ev = exact.get(name)
            if ev is not None:
                exact_match = self._resolve(name, name, ev, None)
                if exact_match is not None:
                    return exact_match
        # Bottom-up: collect the rules and carve-outs on the way; stop at the first absent
        # suffix, or at a rule nothing longer hangs under.
        get = self._suffix.get
        interior = self._interior
        node = _NODE
        found: list[tuple[str, _Value]] | None = None
        end = len(name)
        if not self._tld_rules:
            # No rule or carve-out is a bare TLD (the usual case): start at the last two labels,
            # one probe fewer per lookup. A one-label name can then match nothing.
            end = name.rfind(".")
            if end < 0:
                return None
        while True:
            dot = name.rfind(".", 0, end)
            s = name[dot + 1 :]
            v = get(s)
            if v is None:
                break
            if v is not node:
                if found is None and s not in interior:
                    # The common hit: the first rule on the way, nothing longer under it.
                    if v.__class__ is DomainRule:
                        app = v.app
                        return _new_match(Match, (name, app, (app,), v, self._regimes.get(app, ())))
                    if v.__class__ is int:
                        return self._bulk_match(name, s, v)
                if found is None:
                    found = [(s, v)]
                else:
                    found.append((s, v))
                if s not in interior:
                    break
            if dot < 0:
                break
            end = dot
        return self._decide(name, found)

    def _lookup_native(self, table: SuffixTable, name: str) -> Match | None:
        """The cases the native table leaves to Python: shared names, several rules or
        carve-outs on the way, and names that are not ASCII."""
        values = self._values
        shift = 0
        if name.isascii():
            ev = table.get(True, name)
            if ev >= 0:
                exact_match = self._resolve(name, name, values[ev], None)
                if exact_match is not None:
                    return exact_match
            walk = name
        else:
            # Keys are ASCII: only suffixes right of the last non-ASCII character can match.
            # The NUL keeps the walk from taking that remainder itself as a label boundary.
            last = max(i for i, ch in enumerate(name) if not ch.isascii())
            walk, shift = "\x00" + name[last + 1 :], last
        pairs = table.walk(walk)
        if not pairs:
            return None
        found = [(name[start + shift :], values[v]) for start, v in pairs]
        return self._decide(name, found)

    def _decide(self, name: str, found: list[tuple[str, _Value]] | None) -> Match | None:
        """The match among the rules and carve-outs met on the walk, shortest first."""
        if found is None:
            return None
        if len(found) == 1:
            key, only = found[0]
            if isinstance(only, CarveOut):
                return None
            return self._resolve(name, key, only, None)
        # Longest first: a carve-out excludes its app from every shorter rule.
        excluded: set[str] | None = None
        for key, value in reversed(found):
            match = self._resolve(name, key, value, excluded)
            if match is not None:
                return match
            entries = cast(tuple[_Entry, ...], value if type(value) is tuple else (value,))
            carved = {e.app for e in entries if isinstance(e, CarveOut)}
            if carved:
                excluded = (excluded or set()) | carved
        return None

    def _bulk_match(self, name: str, key: str, index: int) -> Match:
        # Line 0: the hot path does not look the line up; explain() does.
        rule = self._bulk[index].rule(key, 0)
        app = rule.app
        return _new_match(Match, (name, app, (app,), rule, self._regimes.get(app, ())))

    def _rule(self, key: str, e: DomainRule | int) -> DomainRule:
        if isinstance(e, int):
            return self._bulk[e].rule(key, 0)
        return e

    def _resolve(self, name: str, key: str, v: _Value, excluded: set[str] | None) -> Match | None:
        entries = cast(tuple[_Entry, ...], v if type(v) is tuple else (v,))
        for e in entries:
            # A pattern's name (<label>.<key>) is longer than any rule on the key itself: it
            # wins over them, and over the key's carve-outs (they are shorter than it).
            if isinstance(e, _PatternSet) and (hit := e.match(name, excluded)) is not None:
                p, domain = hit
                return Match(
                    name, p.app, (p.app,), p.rule_for(domain), self._regimes.get(p.app, ())
                )
        carved = {e.app for e in entries if isinstance(e, CarveOut)}
        rules = [self._rule(key, e) for e in entries if not isinstance(e, CarveOut | _PatternSet)]
        rules = [r for r in rules if r.app not in carved and not (excluded and r.app in excluded)]
        if not rules:
            return None
        if len(rules) == 1:
            r = rules[0]
            return Match(name, r.app, (r.app,), r, self._regimes.get(r.app, ()))
        apps = tuple(sorted({r.app for r in rules}))
        # The primary app of a shared name: the one whose entry is tagged "primary" (lint allows
        # one), else the first in sorted order.
        primary = next((r for r in rules if PRIMARY_TAG in r.tags), None)
        if primary is None:
            primary = next(r for r in rules if r.app == apps[0])
        return Match(name, primary.app, apps, primary, self._regimes_of(apps))

    def _regimes_of(self, apps: tuple[str, ...]) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for a in apps:
            for r in self._regimes.get(a, ()):
                seen[r] = None
        return tuple(seen)

    def match_ip(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | str) -> Match | None:
        """Attribute an IP literal via the catalogue's CIDR ranges."""
        if isinstance(ip, str):
            parsed = parse_ip(ip)
            if parsed is None:
                return None
            ip = parsed
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        bits = 32 if ip.version == 4 else 128
        value = int(ip)
        for plen in self._prefixes[ip.version]:
            net = (value >> (bits - plen)) << (bits - plen)
            rule = self._cidrs[(ip.version, plen)].get(net)
            if rule is not None:
                return Match(
                    ip.compressed, rule.app, (rule.app,), rule, self._regimes.get(rule.app, ())
                )
        return None

    def explain(self, rule: DomainRule | CidrRule) -> DomainRule | CidrRule:
        """``rule`` with its line number filled in.

        A match on a name from a bulk list file carries line 0: finding the line means scanning
        the list, which is left to explanations (``egresswatch match``), not done per lookup.
        """
        if not isinstance(rule, DomainRule) or rule.line:
            return rule
        for b in self._bulk:
            if b.file == rule.file and b.app == rule.app:
                line = b.line_of(rule.domain)
                if line:
                    return rule._replace(line=line)
        return rule

    def slim(self) -> Matcher:
        """This matcher holding slim bulk lists (:meth:`BulkList.slim`), so that a million-name
        list costs only its native table. Lookups are unchanged; :meth:`explain` can no longer
        find a bulk name's line. The Python backend keys its dictionary by the names
        themselves, so slimming it would free nothing: it is returned as it is."""
        if self._table is None or all(b.count >= 0 for b in self._bulk):
            return self
        return Matcher(
            (self._table, self._values),
            [b.slim() for b in self._bulk],
            self._cidrs,
            self._regimes,
        )

    def __len__(self) -> int:
        return self.entries


def _python_index(
    entries: list[DomainRule | CarveOut | _PatternSet], lists: list[BulkList]
) -> _PyIndex:
    exact: dict[str, _Value] = {}
    suffix: dict[str, _Value] = {}
    for e in entries:
        table = exact if isinstance(e, DomainRule) and e.match == "exact" else suffix
        _add(table, e.domain, e)
    for index, b in enumerate(lists):
        table = exact if b.match == "exact" else suffix
        get = table.get
        for name in b.names:
            prev = get(name)
            if prev is None:
                table[name] = index  # the common case, kept cheap for million-name lists
            else:
                _add(table, name, index)
    # Before the markers are added, every key is a rule or a carve-out.
    tld_rules = any("." not in name for name in suffix)
    # Interior markers for the bottom-up walk, and the rules that are also interior.
    setdefault = suffix.setdefault
    interior: set[str] = set()
    for name in list(suffix):
        i = name.find(".")
        while i >= 0:
            name = name[i + 1 :]
            if setdefault(name, _NODE) is not _NODE:
                interior.add(name)
            i = name.find(".")
    return _PyIndex(exact, suffix, frozenset(interior), tld_rules)


def _native_index(
    entries: list[DomainRule | CarveOut | _PatternSet],
    lists: list[BulkList],
    regimes: dict[str, tuple[str, ...]],
) -> tuple[SuffixTable, list[_Value]]:
    """The native table: keys map to indices into ``values`` (the same values the Python
    backend stores); interior markers are added by the table itself."""
    table = SuffixTable(_DEFER)
    values: list[_Value] = []

    def claim(exact: bool, key: str, entry: _Entry, prev: int) -> None:
        # A name claimed again: a new value holding every claim, in catalogue order.
        values.append(_merged(values[prev], entry))
        table.replace(exact, key, len(values) - 1)

    is_exact = [isinstance(e, DomainRule) and e.match == "exact" for e in entries]
    for exact in (True, False):
        n = sum(1 for x in is_exact if x is exact)
        n += sum(len(b.names) for b in lists if (b.match == "exact") is exact)
        table.reserve(exact, n)
    for e, exact in zip(entries, is_exact, strict=True):
        values.append(e)
        prev = table.insert(exact, e.domain, len(values) - 1)
        if prev >= 0:
            claim(exact, e.domain, e, prev)
    for index, b in enumerate(lists):
        exact = b.match == "exact"
        values.append(index)
        names = b.names if type(b.names) is list else list(b.names)
        # Names already present (rare: a name in two lists, or also a rule) merge in order.
        for pos in table.insert_many(exact, names, len(values) - 1):
            claim(exact, names[pos], index, table.get(exact, names[pos]))
    table.finish([_template(v, lists, regimes) for v in values], Match)
    return table, values


def _template(
    v: _Value, lists: list[BulkList], regimes: dict[str, tuple[str, ...]]
) -> tuple[int, object, object, object, object]:
    """How the native table builds a result for a value: (kind, app, apps, regimes, rule);
    kind 1 a rule, 2 a bulk list (the rule's domain is filled in per hit), 3 a carve-out
    (no match), 0 left to Python."""
    if isinstance(v, DomainRule):
        return (1, v.app, (v.app,), regimes.get(v.app, ()), v)
    if isinstance(v, int):
        rule = lists[v].rule("", 0)
        return (2, rule.app, (rule.app,), regimes.get(rule.app, ()), rule)
    if isinstance(v, CarveOut):
        return (3, None, None, None, None)
    return (0, None, None, None, None)


_DIGITS_AND_COLON = frozenset("0123456789:")
# Longest raw name the fast path takes (a 253-octet name plus a trailing dot).
_FAST_MAX = 254
# Building the hot-path result without the NamedTuple's Python-level __new__ saves a frame per hit.
_new_match = tuple.__new__
