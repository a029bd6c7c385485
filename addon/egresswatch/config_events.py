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
from typing import Any

from .events import Event
from .events import EventKind

__all__ = [
    "CatalogueLoaded",
    "DepartmentDetail",
    "ExceptionDetail",
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
        return {
            "egresswatch": self.egresswatch,
            "mitmproxy": self.mitmproxy,
            "catalogue_version": self.catalogue_version,
            "policy_version": self.policy_version,
            "client_identity": self.client_identity,
        }


@dataclass(frozen=True, slots=True)
class CatalogueLoaded:
    """A catalogue version was loaded: its files and the entries per app."""

    version: str = ""
    files: tuple[str, ...] = ()
    entries: tuple[tuple[str, int], ...] = ()  # (app, entries), sorted by app

    def to_detail(self) -> dict[str, object]:
        return {
            "kind": "catalogue",
            "version": self.version,
            "files": list(self.files),
            "entries": dict(self.entries),
        }


@dataclass(frozen=True, slots=True)
class ExceptionDetail:
    """One exception of a policy, as the policy file grants it."""

    id: str
    apps: tuple[str, ...] = ()
    regimes: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    reason: str = ""
    approver: str = ""
    ticket: str | None = None
    expires: str = ""  # as written: a date (to the end of that day, UTC) or a datetime
    expires_at: str = ""  # the instant it stops applying, ISO 8601 with offset

    def to_detail(self) -> dict[str, object]:
        return {
            "id": self.id,
            "apps": list(self.apps),
            "regimes": list(self.regimes),
            "clients": list(self.clients),
            "users": list(self.users),
            "reason": self.reason,
            "approver": self.approver,
            "ticket": self.ticket,
            "expires": self.expires,
            "expires_at": self.expires_at,
        }


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

    def to_detail(self) -> dict[str, object]:
        return {
            "kind": "policy",
            "version": self.version,
            "file": self.file,
            "default": self.default,
            "dry_run": self.dry_run,
            "only_in_force": self.only_in_force,
            "contact": self.contact,
            "regimes": dict(self.regimes),
            "apps": dict(self.apps),
            "modes": dict(self.modes),
            "departments": [{"name": d.name, "cidrs": list(d.cidrs)} for d in self.departments],
            "exceptions": [x.to_detail() for x in self.exceptions],
        }


LifecycleDetail = StartDetail | CatalogueLoaded | PolicyLoaded


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


def _exception(r: _Reader) -> ExceptionDetail:
    xid = r.text("id")
    if not xid:
        raise r.fail("id", "text", r.data.get("id"))
    return ExceptionDetail(
        id=xid,
        apps=r.texts("apps"),
        regimes=r.texts("regimes"),
        clients=r.texts("clients"),
        users=r.texts("users"),
        reason=r.text("reason"),
        approver=r.text("approver"),
        ticket=r.opt_text("ticket"),
        expires=r.text("expires"),
        expires_at=r.text("expires_at"),
    )


def _policy(r: _Reader) -> PolicyLoaded:
    return PolicyLoaded(
        version=r.text("version"),
        file=r.opt_text("file"),
        default=r.text("default"),
        dry_run=r.opt_bool("dry_run"),
        only_in_force=r.opt_bool("only_in_force"),
        contact=r.opt_text("contact"),
        regimes=r.modes("regimes"),
        apps=r.modes("apps"),
        modes=r.modes("modes"),
        departments=tuple(
            DepartmentDetail(d.text("name"), d.texts("cidrs")) for d in r.objects("departments")
        ),
        exceptions=tuple(_exception(x) for x in r.objects("exceptions")),
    )


def _catalogue(r: _Reader) -> CatalogueLoaded:
    return CatalogueLoaded(
        version=r.text("version"),
        files=r.texts("files"),
        entries=r.counts("entries"),
    )


def _start(r: _Reader) -> StartDetail:
    return StartDetail(
        egresswatch=r.text("egresswatch"),
        mitmproxy=r.text("mitmproxy"),
        catalogue_version=r.text("catalogue_version"),
        policy_version=r.text("policy_version"),
        client_identity=r.text("client_identity"),
    )


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
        return _start(r)
    kind = event.detail.get("kind")
    if kind == "catalogue":
        return _catalogue(r)
    if kind == "policy":
        return _policy(r)
    return None
