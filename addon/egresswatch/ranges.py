"""Read a vendor's JSON file of address ranges (the ``ranges-json`` format of ``lists update``).

Vendors publish their address ranges as JSON of many shapes: a bare list of prefixes, a list of
objects with a prefix field (``{"prefixes": [{"ip_prefix": "..."}]}``), or nested groups with a
list of prefixes in each (``{"values": [{"name": ..., "properties": {"addressPrefixes": [...]}}]}``).
One small path language reaches the prefixes of any of them:

``key``
    the member ``key`` of an object;
``key[]``
    every element of the list ``key``; a leading ``[]`` is every element of a top-level list;
``key[field=value]``
    every element of the list ``key`` whose ``field`` (a string member) equals ``value``.

Steps are joined with ``.``; a value in a filter may itself hold dots
(``values[name=AzureFrontDoor.Frontend].properties.addressPrefixes[]``). A path ends on strings,
each a prefix (``192.0.2.0/24``, ``2001:db8::/32``) or a single address (taken as /32 or /128).
Several paths may be given (IPv4 and IPv6 often live in different fields); the default path
``[]`` reads a top-level list of strings.

>>> r = parse_ranges_json('{"p": [{"ip": "192.0.2.0/24"}, {"ip": "10.0.0.1/8"}]}', ["p[].ip"])
>>> [str(n) for n in r.networks], [s.reason for s in r.skipped]
(['192.0.2.0/24'], ['host bits set (did you mean 10.0.0.0/8?)'])
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from .importers import ListImportError

__all__ = [
    "DEFAULT_PATH",
    "PathStep",
    "RangesResult",
    "SkippedRange",
    "parse_path",
    "parse_ranges_json",
]

DEFAULT_PATH = "[]"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# As the catalogue loader: a shorter prefix is too broad to attribute to one app.
_MIN_PREFIX = {4: 8, 6: 16}


@dataclass(frozen=True, slots=True)
class PathStep:
    key: str | None  # None: the current value itself (a leading ``[]``)
    iterate: bool  # ``[]`` or ``[field=value]``
    where: tuple[str, str] | None = None  # (field, value) filter


@dataclass(frozen=True, slots=True)
class SkippedRange:
    where: str  # the JSON location, e.g. prefixes[3].ip_prefix
    text: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: skipped {self.text!r}: {self.reason}"


@dataclass(slots=True)
class RangesResult:
    networks: list[Network] = field(default_factory=list)
    skipped: list[SkippedRange] = field(default_factory=list)


def parse_path(path: str) -> list[PathStep]:
    """Split a path into steps; raise :class:`ValueError` for a malformed one."""
    steps: list[PathStep] = []
    i, n = 0, len(path)
    if not path:
        raise ValueError("empty path")
    while i < n:
        j = i
        while j < n and path[j] not in ".[":
            if path[j] == "]":
                raise ValueError(f"unexpected ']' at offset {j}")
            j += 1
        key = path[i:j] or None
        if key is None and steps:
            raise ValueError(f"empty step at offset {i}")
        iterate, where = False, None
        if j < n and path[j] == "[":
            end = path.find("]", j)
            if end < 0:
                raise ValueError(f"'[' at offset {j} is not closed")
            inner = path[j + 1 : end]
            iterate = True
            if inner:
                fname, eq, value = inner.partition("=")
                if not eq or not fname:
                    raise ValueError(f"filter {inner!r} must be [field=value]")
                where = (fname, value)
            j = end + 1
        elif key is None:
            raise ValueError(f"empty step at offset {i}")
        steps.append(PathStep(key, iterate, where))
        if j < n:
            if path[j] != ".":
                raise ValueError(f"expected '.' at offset {j}")
            j += 1
            if j == n:
                raise ValueError("path ends with '.'")
        i = j
    return steps


def _walk(value: Any, steps: Sequence[PathStep], where: str) -> Iterator[tuple[str, Any]]:
    if not steps:
        yield where, value
        return
    step, rest = steps[0], steps[1:]
    if step.key is not None:
        if not isinstance(value, dict) or step.key not in value:
            return
        value = value[step.key]
        where = f"{where}.{step.key}" if where else step.key
    if not step.iterate:
        yield from _walk(value, rest, where)
        return
    if not isinstance(value, list):
        return
    for i, item in enumerate(value):
        if step.where is not None:
            fname, wanted = step.where
            if not isinstance(item, dict) or item.get(fname) != wanted:
                continue
        yield from _walk(item, rest, f"{where}[{i}]")


def _network(text: str) -> tuple[Network | None, str]:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            return None, f"not an address range: {e}"
        return None, f"host bits set (did you mean {loose}?)"
    if net.prefixlen < _MIN_PREFIX[net.version]:
        return None, "too broad to attribute to one app"
    return net, ""


def parse_ranges_json(text: str, paths: Sequence[str] = (DEFAULT_PATH,)) -> RangesResult:
    """The networks found at ``paths`` in the JSON ``text``, first occurrence kept, in order.

    Raises :class:`~egresswatch.importers.ListImportError` when the text is not JSON or a path
    is malformed. Values that are not ranges are skipped and reported, not fatal.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ListImportError(f"not valid JSON: {e}") from e
    result = RangesResult()
    seen: set[Network] = set()
    for path in paths:
        try:
            steps = parse_path(path)
        except ValueError as e:
            raise ListImportError(f"bad JSON path {path!r}: {e}") from e
        for where, value in _walk(doc, steps, ""):
            if not isinstance(value, str):
                result.skipped.append(SkippedRange(where, repr(value)[:60], "not a string"))
                continue
            net, reason = _network(value.strip())
            if net is None:
                result.skipped.append(SkippedRange(where, value, reason))
            elif net not in seen:
                seen.add(net)
                result.networks.append(net)
    return result
