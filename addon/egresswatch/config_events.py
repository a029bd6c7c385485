"""Typed ``detail`` of the lifecycle events: what a START and a CONFIG row record.

Writers build these and store :meth:`to_detail` (a JSON object: the stored bytes are its canonical
JSON); readers parse a stored detail once with :func:`parse_detail`, which raises
:class:`MalformedDetail` naming the event and the key when a stored value has the wrong shape.
STOP and HEARTBEAT rows carry no detail.

>>> d = CatalogueLoaded("c1", ("domains/tiktok.yaml",), (("tiktok", 12),)).to_detail()
>>> d
{'kind': 'catalogue', 'version': 'c1', 'files': ['domains/tiktok.yaml'], 'entries': {'tiktok': 12}}
>>> parse_detail(Event(ts=0.0, kind=EventKind.CONFIG, instance="p", event_id="c", detail=d))
CatalogueLoaded(version='c1', files=('domains/tiktok.yaml',), entries=(('tiktok', 12),))
>>> parse_detail(Event(ts=0.0, kind=EventKind.START, instance="p", event_id="s",
...                    detail={"client_identity": 3}))
Traceback (most recent call last):
  ...
egresswatch.config_events.MalformedDetail: start event p/s: detail.client_identity: expected text, got int
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import fields
from typing import Any

from .events import Event
from .events import EventKind

__all__ = [
    "CatalogueLoaded",
    "DepartmentDetail",
    "ExceptionDetail",
    "ExceptionTerms",
    "LifecycleDetail",
    "MalformedDetail",
    "PolicyLoaded",
    "StartDetail",
    "parse_detail",
]


class MalformedDetail(ValueError):
    """A stored lifecycle detail does not have the shape its writer gives it."""


@dataclass(frozen=True, slots=True)
class StartDetail:
    """A proxy instance started: its versions and how it identifies clients."""

    egresswatch: str = ""
    mitmproxy: str = ""
    catalogue_version: str = ""
    policy_version: str = ""
    client_identity: str = ""  # address | hash | none

    def to_detail(self) -> dict[str, object]:
        return _plain(self)


@dataclass(frozen=True, slots=True)
class CatalogueLoaded:
    """A catalogue version was loaded: its files and the entries per app."""

    version: str = ""
    files: tuple[str, ...] = ()
    entries: tuple[tuple[str, int], ...] = ()  # (app, entries), sorted by app

    def to_detail(self) -> dict[str, object]:
        return {"kind": "catalogue", **_plain(self)}


@dataclass(frozen=True, slots=True)
class ExceptionTerms:
    """What an exception covers and why: the part of it the stored detail and the report's
    register share."""

    id: str
    apps: tuple[str, ...] = ()
    regimes: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    reason: str = ""
    approver: str = ""


@dataclass(frozen=True, slots=True)
class ExceptionDetail(ExceptionTerms):
    """One exception of a policy, as the policy file grants it."""

    ticket: str | None = None
    expires: str = ""  # as written: a date (to the end of that day, UTC) or a datetime
    expires_at: str = ""  # the instant it stops applying, ISO 8601 with offset

    def to_detail(self) -> dict[str, object]:
        return _plain(self)


@dataclass(frozen=True, slots=True)
class DepartmentDetail:
    name: str
    cidrs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyLoaded:
    """A policy version was loaded: its rules, the modes in force then, and its exceptions."""

    version: str = ""
    file: str | None = None  # None: the built-in policy
    default: str = ""
    dry_run: bool | None = None
    only_in_force: bool | None = None
    contact: str | None = None
    regimes: tuple[tuple[str, str], ...] = ()  # (regime, mode)
    apps: tuple[tuple[str, str], ...] = ()  # (app, mode)
    modes: tuple[tuple[str, str], ...] = ()  # (app, effective mode)
    departments: tuple[DepartmentDetail, ...] = ()
    exceptions: tuple[ExceptionDetail, ...] = ()
    # (key, setting) of the evasion keys: encrypted_dns, ech, ech_scope, alt_svc
    evasion: tuple[tuple[str, str], ...] = ()

    def to_detail(self) -> dict[str, object]:
        return {"kind": "policy", **_plain(self)}


LifecycleDetail = StartDetail | CatalogueLoaded | PolicyLoaded

# The stored form follows each dataclass's fields, in order, by declared type (the annotations
# are strings here): a tuple of pairs is stored as an object, any other tuple as a list (of
# nested objects where it holds dataclasses), everything else as it is.
_NESTED: dict[str, type[DepartmentDetail | ExceptionDetail]] = {
    "tuple[DepartmentDetail, ...]": DepartmentDetail,
    "tuple[ExceptionDetail, ...]": ExceptionDetail,
}


def _plain(obj: Any) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in fields(obj):
        value, declared = getattr(obj, f.name), str(f.type)
        if declared.startswith("tuple[tuple["):
            out[f.name] = dict(value)
        elif declared in _NESTED:
            out[f.name] = [_plain(v) for v in value]
        elif declared.startswith("tuple["):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


class _Reader:
    """Typed access to one stored detail object; every error names the event and the key."""

    def __init__(self, data: Mapping[str, object], where: str, path: str = "detail.") -> None:
        self.data = data
        self.where = where  # the event
        self.path = path  # of this object in the detail

    def fail(self, key: str, expected: str, value: object) -> MalformedDetail:
        got = type(value).__name__
        return MalformedDetail(f"{self.where}: {self.path}{key}: expected {expected}, got {got}")

    def text(self, key: str) -> str:
        value = self.data.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.fail(key, "text", value)
        return value

    def opt_text(self, key: str) -> str | None:
        return self.text(key) if self.data.get(key) is not None else None

    def opt_bool(self, key: str) -> bool | None:
        value = self.data.get(key)
        if value is not None and not isinstance(value, bool):
            raise self.fail(key, "true or false", value)
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key, ())
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "a list of text", value)
        return tuple(value)

    def _table(self, key: str, ok: Callable[[object], bool], expected: str) -> Mapping[str, Any]:
        value = self.data.get(key, {})
        if not isinstance(value, Mapping) or not all(ok(v) for v in value.values()):
            raise self.fail(key, f"an object of {expected}", value)
        return value

    def modes(self, key: str) -> tuple[tuple[str, str], ...]:
        value = self._table(key, lambda v: isinstance(v, str), "text")
        return tuple(sorted((str(k), v) for k, v in value.items()))

    def counts(self, key: str) -> tuple[tuple[str, int], ...]:
        value = self._table(
            key, lambda v: isinstance(v, int) and not isinstance(v, bool), "whole numbers"
        )
        return tuple(sorted((str(k), v) for k, v in value.items()))

    def objects(self, key: str) -> list[_Reader]:
        value = self.data.get(key, ())
        if not isinstance(value, list | tuple) or not all(isinstance(v, Mapping) for v in value):
            raise self.fail(key, "a list of objects", value)
        return [_Reader(v, self.where, f"{self.path}{key}[{i}].") for i, v in enumerate(value)]


#: How a field of each declared type is read back.
_READS: dict[str, Callable[[_Reader, str], object]] = {
    "str": _Reader.text,
    "str | None": _Reader.opt_text,
    "bool | None": _Reader.opt_bool,
    "tuple[str, ...]": _Reader.texts,
    "tuple[tuple[str, str], ...]": _Reader.modes,
    "tuple[tuple[str, int], ...]": _Reader.counts,
}


def _parse[T](cls: type[T], r: _Reader) -> T:
    values: dict[str, object] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        declared = str(f.type)
        nested = _NESTED.get(declared)
        if nested is not None:
            values[f.name] = tuple(_parse(nested, x) for x in r.objects(f.name))
        else:
            values[f.name] = _READS[declared](r, f.name)
        if f.name == "id" and not values["id"]:  # an exception must name itself
            raise r.fail("id", "text", r.data.get("id"))
    return cls(**values)


def parse_detail(event: Event) -> LifecycleDetail | None:
    """The typed detail of a START or CONFIG event; ``None`` for other events, a START without
    detail, and a CONFIG of a kind this version does not know (a newer writer's)."""
    if event.detail is None or event.kind not in (EventKind.START, EventKind.CONFIG):
        return None
    where = f"{event.kind} event {event.instance}/{event.event_id}"
    if not isinstance(event.detail, Mapping):
        raise MalformedDetail(
            f"{where}: detail: expected an object, got {type(event.detail).__name__}"
        )
    r = _Reader(event.detail, where)
    if event.kind == EventKind.START:
        return _parse(StartDetail, r)
    kind = event.detail.get("kind")
    if kind == "catalogue":
        return _parse(CatalogueLoaded, r)
    if kind == "policy":
        return _parse(PolicyLoaded, r)
    return None
