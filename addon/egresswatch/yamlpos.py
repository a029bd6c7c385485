"""The one YAML reader of the catalogue and the policy: plain data plus the line of every node.

:func:`read_yaml` composes a document with PyYAML, refuses duplicate and non-text keys, and turns
the node tree into plain data (``dict``, ``list``, ``str``, ``int``, ``float``, ``bool``,
``None``) together with a :class:`Positions` table that maps each path (``("domains", 0,
"source")``) to the line of its node (``start_mark``). The data is what a schema validates (the
pydantic models of :mod:`egresswatch.catalogue_schema` and :mod:`egresswatch.policy_schema`, or
the JSON Schema files generated from them); the table turns each validation error back into
``file:line: reason``.

Scalars are read as the YAML 1.2 core schema reads them, which is what the YAML language server
in an editor uses: ``true``/``false`` are booleans, plain integers and floats are numbers, ``~``,
``null`` and nothing are null, and everything else (``off``, ``yes``, ``2026-12-31``) is text.

>>> doc = read_yaml("a: 1\\nb:\\n  - off\\n  - x: 2026-01-01\\n", "f.yaml")
>>> doc.data, doc.problems
({'a': 1, 'b': ['off', {'x': '2026-01-01'}]}, [])
>>> doc.positions.line(("b", 1, "x")), doc.positions.line(("b", 1, "nope"))
(4, 4)
>>> [str(p) for p in read_yaml("a: 1\\na: 2\\n", "f.yaml").problems]
["f.yaml:2: duplicate key 'a' (first on line 1)"]
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import yaml
from pydantic import ValidationError

__all__ = [
    "Describe",
    "Positions",
    "Problem",
    "YamlDoc",
    "YamlPath",
    "lookup",
    "problems_from",
    "read_yaml",
]

type YamlPath = tuple[str | int, ...]

_BASE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_PLAIN = "egresswatch:implicit"  # a scalar without an explicit tag: typed by _scalar
_KIND_TAGS = {
    yaml.ScalarNode: _PLAIN,
    yaml.SequenceNode: "tag:yaml.org,2002:seq",
    yaml.MappingNode: "tag:yaml.org,2002:map",
}


class _Loader(_BASE_LOADER):  # type: ignore[misc,valid-type]
    """Composes without PyYAML's YAML 1.1 tag resolution (a regex walk per scalar, most of the
    time of a load): :func:`_scalar` types plain scalars itself, the YAML 1.2 way."""

    def resolve(self, kind: type[yaml.Node], value: object, implicit: object) -> str:
        return _KIND_TAGS[kind]

    def descend_resolver(self, current_node: object, current_index: object) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass


# YAML 1.2 core schema: the plain scalars that are not text.
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_NUMBER_START = frozenset("0123456789+-.tTfF")  # the first characters of non-text scalars
_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a file cannot be used; line 0 means the file as a whole (e.g. unreadable)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class Positions:
    """Line (1-based) of each node of a document, by path; a missing path takes its parent's."""

    lines: dict[YamlPath, int] = field(default_factory=dict)

    def line(self, path: Sequence[str | int]) -> int:
        path = tuple(path)
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)


@dataclass
class YamlDoc:
    """A read document: its data (None when empty or unreadable), node lines and problems."""

    file: str
    data: object
    positions: Positions
    problems: list[Problem]

    def problem(self, path: Sequence[str | int], message: str) -> Problem:
        return Problem(self.file, self.positions.line(path), message)


def _scalar(node: yaml.ScalarNode) -> object:
    value = str(node.value)
    if node.style:  # quoted or block text (plain is None, or "" with the C loader)
        return value
    if node.tag != _PLAIN:  # explicitly tagged (``!!str 12``): text as written
        return value
    if value in _NULLS:
        return None
    if value[0] not in _NUMBER_START:
        return value
    if value in _BOOL:
        return _BOOL[value]
    if _INT.fullmatch(value):
        return int(value, 0) if value[:2] in ("0o", "0x") else int(value)
    if _FLOAT.fullmatch(value):
        return float(value)
    return value


def _convert(node: yaml.Node, path: YamlPath, doc: YamlDoc) -> object:
    lines = doc.positions.lines
    lines[path] = node.start_mark.line + 1
    if node.__class__ is yaml.ScalarNode:
        return _scalar(node)
    if node.__class__ is yaml.SequenceNode:
        return [_convert(item, (*path, i), doc) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.MappingNode)
    out: dict[str, object] = {}
    first: dict[str, int] = {}
    for knode, vnode in node.value:
        line = knode.start_mark.line + 1
        if not isinstance(knode, yaml.ScalarNode):
            doc.problems.append(Problem(doc.file, line, "keys must be plain names"))
            continue
        key = str(knode.value)
        if key in first:
            doc.problems.append(
                Problem(doc.file, line, f"duplicate key {key!r} (first on line {first[key]})")
            )
            continue
        first[key] = line
        where = (*path, key)
        value = out[key] = _convert(vnode, where, doc)
        # A null value written as nothing (``reason:``) has no node of its own: its key's line.
        if value is None:
            lines[where] = line
    return out


def read_yaml(text: str, file: str) -> YamlDoc:
    """Compose ``text``; a syntax error, a duplicate key or a non-text key is a problem."""
    doc = YamlDoc(file, None, Positions(), [])
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        doc.problems.append(
            Problem(file, line, f"YAML syntax error: {e.problem or e.context or e}")
        )
        return doc
    except yaml.YAMLError as e:
        doc.problems.append(Problem(file, 1, f"YAML error: {e}"))
        return doc
    if root is not None:
        doc.data = _convert(root, (), doc)
    return doc


#: Turns one pydantic error (its ``loc``, ``type``, ``input`` and the document) into a message;
#: None drops the error (another error of the same entry says it better).
type Describe = Callable[[YamlPath, str, dict[str, Any], YamlDoc], str | None]


def problems_from(error: ValidationError, doc: YamlDoc, describe: Describe) -> list[Problem]:
    """The problems of a failed validation, each at the line of the node it is about."""
    out: list[Problem] = []
    for e in error.errors(include_url=False):
        loc = tuple(e["loc"])
        found = (e.get("ctx") or {}).get("at")
        if found:  # one validator, several problems below ``loc``: (path, message, first)
            for rel, message, first in found:
                if first is not None:
                    message += f" (first on line {doc.positions.line((*loc, *first))})"
                out.append(doc.problem((*loc, *rel), message))
            continue
        message = describe(loc, e["type"], dict(e), doc)
        if message is None:
            continue
        problem = doc.problem(loc, message)
        if problem not in out:
            out.append(problem)
    return out


def lookup(data: object, path: Sequence[str | int]) -> object:
    """The value at ``path`` in plain data, None where the path does not lead."""
    for step in path:
        if isinstance(data, dict) and isinstance(step, str):
            data = data.get(step)
        elif isinstance(data, list) and isinstance(step, int) and 0 <= step < len(data):
            data = data[step]
        else:
            return None
    return data
