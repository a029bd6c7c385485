"""The policy file format, described once (``--policy FILE``; every key is optional).

:class:`PolicyFile` is the schema. :func:`egresswatch.policy.load_policy` validates a file's data
(read by :func:`egresswatch.yamlpos.read_yaml`) with it, passing the catalogue as validation
context so that unknown app and regime ids are errors too, and turns every error into
``file:line: reason`` with :func:`describe`. ``egresswatch schemas`` writes the same model as
``schemas/egresswatch-policy.schema.json`` for an editor's YAML language server (which has no
catalogue: it checks the shape, the loader checks the ids).

This module also owns the policy's label vocabularies, which :mod:`egresswatch.metrics` derives
its label values from: the actions (:class:`Mode`, :data:`MODE_LABELS`), the rule labels of a
decision (:data:`RULE_APP`, :data:`RULE_DEFAULT`) and the two reserved department names
(:data:`OTHER`, :data:`UNKNOWN`).

>>> PolicyFile.model_validate({"default": "off", "dry_run": "yes"}).default
<Mode.OFF: 'off'>
"""

from __future__ import annotations

import ipaddress
from datetime import UTC
from datetime import date
from datetime import datetime
from datetime import time
from datetime import timedelta
from enum import StrEnum
from typing import Annotated
from typing import Any
from typing import Literal

from pydantic import AfterValidator
from pydantic import BaseModel
from pydantic import BeforeValidator
from pydantic import ConfigDict
from pydantic import Field
from pydantic import ValidationInfo
from pydantic import field_validator
from pydantic import model_validator
from pydantic_core import PydanticCustomError

from .catalogue_model import CatalogueLike
from .yamlpos import YamlDoc
from .yamlpos import YamlPath
from .yamlpos import lookup

__all__ = [
    "DRY_RUN",
    "AltSvcMode",
    "EchScope",
    "EntryEch",
    "MODE_LABELS",
    "OTHER",
    "RESERVED_DEPARTMENTS",
    "RULE_APP",
    "RULE_DEFAULT",
    "RULE_LABELS",
    "UNKNOWN",
    "EntryDepartment",
    "EntryException",
    "Mode",
    "PolicyFile",
    "describe",
    "expiry",
]


class Mode(StrEnum):
    """A configured action (``monitor`` counts only, ``block`` blocks, ``off`` ignores)."""

    MONITOR = "monitor"
    BLOCK = "block"
    OFF = "off"


class AltSvcMode(StrEnum):
    """What to do with an ``Alt-Svc`` response header that advertises HTTP/3 for a designated
    name (seen where the proxy decrypts): ``count`` records it, ``strip`` also removes the
    HTTP/3 alternatives, ``off`` ignores it."""

    COUNT = "count"
    STRIP = "strip"
    OFF = "off"


class EchScope(StrEnum):
    """Where the ``ech`` action applies: every hidden-ECH connection, or only those whose public
    (outer) name is a designated vendor's client-facing name."""

    EVERYWHERE = "everywhere"
    DESIGNATED = "designated"


#: Per-app mode of a ``block`` staged by ``dry_run`` (``Policy.modes``).
DRY_RUN = "dry_run"
#: Values of the per-app mode metric label: each action, and ``dry_run``.
MODE_LABELS: tuple[str, ...] = (*(m.value for m in Mode), DRY_RUN)
#: ``Decision.regime`` of a hit decided by an ``apps:`` rule.
RULE_APP = "app"
#: ``Decision.regime`` of a hit no app or regime rule decided.
RULE_DEFAULT = "default"
#: Regime label values every app can get besides its regimes' ids.
RULE_LABELS: tuple[str, ...] = (RULE_APP, RULE_DEFAULT)
#: Department of a client that no configured department's CIDR contains.
OTHER = "other"
#: Department of a hit without a usable client address.
UNKNOWN = "unknown"
RESERVED_DEPARTMENTS = (OTHER, UNKNOWN)
DEPARTMENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_BOOLS = {"yes": True, "no": False, "on": True, "off": False}


def fail(message: str) -> PydanticCustomError:
    """A validation error whose message is ``message`` exactly (type ``egresswatch``)."""
    return PydanticCustomError("egresswatch", "{message}", {"message": message})


type Found = list[tuple[YamlPath, str, YamlPath | None]]


def fail_at(found: Found) -> PydanticCustomError:
    """Several problems found by one validator, each at its own path below the validated value
    (``(path, message, path of the first occurrence or None)``)."""
    return PydanticCustomError("egresswatch", "{message}", {"message": "", "at": found})


def _yaml11_bool(value: object) -> object:
    """``yes``/``no``/``on``/``off`` are still true or false, as YAML 1.1 (PyYAML) reads them."""
    if isinstance(value, str) and value.lower() in _BOOLS:
        return _BOOLS[value.lower()]
    return value


def _version(value: object) -> object:
    return 1 if value == "1" else value


def _catalogue(info: ValidationInfo) -> CatalogueLike | None:
    context = info.context
    return context.get("catalogue") if isinstance(context, dict) else None


def _known_app(value: str, info: ValidationInfo) -> str:
    catalogue = _catalogue(info)
    if catalogue is not None and value not in catalogue.apps:
        raise fail(f"unknown app {value!r} (not in the catalogue)")
    return value


def _known_regime(value: str, info: ValidationInfo) -> str:
    catalogue = _catalogue(info)
    if catalogue is not None and value not in catalogue.regimes:
        raise fail(f"unknown regime {value!r} (not in the catalogue)")
    return value


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value)
    except ValueError as e:
        raise fail(f"bad CIDR {value!r} ({e})") from None
    return value


def _client(value: str) -> str:
    net = ipaddress.ip_network(_cidr(value))
    if net.prefixlen == 0:
        raise fail(f"{net} is every address (a blanket exception)")
    return value


def _user(value: str) -> str:
    if value == "*":
        raise fail("'*' is not a user (a blanket exception)")
    return value


def _department_name(value: str) -> str:
    if value in RESERVED_DEPARTMENTS:
        raise fail(f"department name {value!r} is reserved")
    return value


def expiry(text: str) -> datetime:
    """The instant an exception stops applying: a date means the end of that day (UTC).

    >>> expiry("2026-12-31"), expiry("2026-07-01T12:00:00+02:00")
    (datetime.datetime(2027, 1, 1, 0, 0, tzinfo=datetime.timezone.utc), datetime.datetime(2026, 7, 1, 10, 0, tzinfo=datetime.timezone.utc))
    """
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day, time(), tzinfo=UTC) + timedelta(days=1)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"{text!r} is not a date (YYYY-MM-DD) or ISO datetime") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _expiry_text(value: str) -> str:
    expiry(value)
    return value


Text = Annotated[str, Field(min_length=1)]
Flag = Annotated[bool, BeforeValidator(_yaml11_bool), Field(strict=True)]
AppId = Annotated[str, AfterValidator(_known_app)]
RegimeId = Annotated[str, AfterValidator(_known_regime)]
Cidr = Annotated[str, AfterValidator(_cidr)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class EntryDepartment(_Entry):
    """A department: a metric label value and the client networks that belong to it."""

    name: Annotated[
        str,
        Field(
            pattern=DEPARTMENT_PATTERN,
            json_schema_extra={"not": {"enum": list(RESERVED_DEPARTMENTS)}},
        ),
        AfterValidator(_department_name),
    ]
    cidrs: list[Cidr] = Field(min_length=1)


class EntryException(_Entry):
    """One entry of the exceptions register: never blanket, always expiring."""

    id: Text
    apps: list[AppId] | None = Field(None, description="Apps it covers.")
    regimes: list[RegimeId] | None = Field(None, description="Or every app of these regimes.")
    clients: list[Annotated[str, AfterValidator(_client)]] | None = None
    users: list[Annotated[str, Field(min_length=1), AfterValidator(_user)]] | None = None
    reason: Text
    approver: Text
    ticket: Text | None = None
    expires: Annotated[str, AfterValidator(_expiry_text)] = Field(
        description="YYYY-MM-DD (the end of that day, UTC) or an ISO datetime."
    )

    @model_validator(mode="after")
    def _scope(self) -> EntryException:
        if self.apps is None and self.regimes is None:
            raise fail("list the apps or regimes it covers")
        if not self.apps and not self.regimes:
            raise fail("apps and regimes are empty")
        if not self.clients and not self.users:
            raise fail(
                "no clients and no users: blanket exceptions are not allowed "
                "(OMB M-23-13); list client CIDRs and/or proxy users"
            )
        return self


class EntryEch(_Entry):
    """The ``ech`` key in its long form (the short form ``ech: block`` is ``{action: block}``)."""

    action: Mode = Field(
        Mode.MONITOR,
        description="Encrypted ClientHello that hides the real name: monitor, block (refuse the "
        "connection) or off.",
    )
    scope: EchScope = Field(
        EchScope.EVERYWHERE,
        description="everywhere, or designated: block only where the public (outer) name is a "
        "designated name of the catalogue or an ECH front end of a designated app's vendor "
        "(elsewhere a hidden name is monitored).",
    )


def _ech_short(value: object) -> object:
    """``ech: block`` is ``ech: {action: block}``."""
    return {"action": value} if isinstance(value, str) else value


class PolicyFile(_Entry):
    """A policy file: what to do with a hit, per regime and per app."""

    model_config = ConfigDict(title="egresswatch policy file")

    version: Annotated[Literal[1], BeforeValidator(_version)] | None = Field(
        None, description="The format version: 1."
    )
    default: Mode = Field(Mode.MONITOR, description="The action for an app no rule names.")
    dry_run: Flag = Field(False, description="Record block as would_block; traffic passes.")
    only_in_force: Flag = Field(
        False, description="Regimes revoked or not yet effective on the day set no action."
    )
    regimes: dict[RegimeId, Mode] | None = Field(
        None, description="An action per regime id (the strictest of an app's regimes wins)."
    )
    apps: dict[AppId, Mode] | None = Field(
        None, description="An action per app id; overrides the regimes."
    )
    encrypted_dns: Mode = Field(
        Mode.MONITOR,
        description="Connections to public encrypted-DNS resolvers (DoH/DoT/DoQ): monitor, "
        "block or off.",
    )
    ech: Annotated[
        EntryEch, BeforeValidator(_ech_short, json_schema_input_type=Mode | EntryEch)
    ] = Field(
        EntryEch(action=Mode.MONITOR, scope=EchScope.EVERYWHERE),
        description="Encrypted ClientHello that hides the real name: monitor, block (refuse "
        "the connection) or off; or {action: ..., scope: everywhere | designated}.",
    )
    alt_svc: AltSvcMode = Field(
        AltSvcMode.COUNT,
        description="Alt-Svc response headers advertising HTTP/3 for a designated name (where "
        "the proxy decrypts): count, strip (remove the HTTP/3 alternatives, so clients stay on "
        "the inspected TCP path) or off.",
    )
    contact: Text | None = Field(None, description="Who to ask, shown on the block page.")
    departments: list[EntryDepartment] | None = Field(
        None, description="Client networks per department (the metrics' department label)."
    )
    exceptions: list[EntryException] | None = Field(
        None, description="The exceptions register: scoped, approved, expiring."
    )

    @field_validator("departments")
    @classmethod
    def _distinct_departments(cls, value: list[EntryDepartment] | None) -> object:
        found: Found = []
        names: dict[str, int] = {}
        seen: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, str] = {}
        for i, dept in enumerate(value or ()):
            if dept.name in names:
                found.append(
                    ((i, "name"), f"duplicate department {dept.name!r}", (names[dept.name], "name"))
                )
            names.setdefault(dept.name, i)
            for j, cidr in enumerate(dept.cidrs):
                net = ipaddress.ip_network(cidr)
                if net in seen:
                    where = f"department {dept.name}"
                    found.append(
                        (
                            (i, "cidrs", j),
                            f"{where}: {net} is already in department {seen[net]}",
                            None,
                        )
                    )
                    continue
                seen[net] = dept.name
        if found:
            raise fail_at(found)
        return value

    @field_validator("exceptions")
    @classmethod
    def _distinct_ids(cls, value: list[EntryException] | None) -> object:
        found: Found = []
        ids: dict[str, int] = {}
        for i, exc in enumerate(value or ()):
            if exc.id in ids:
                found.append(((i, "id"), f"duplicate exception id {exc.id!r}", (ids[exc.id], "id")))
            ids.setdefault(exc.id, i)
        if found:
            raise fail_at(found)
        return value


# --- error messages ---------------------------------------------------------------------------

_NOT_TEXT = {"dict_type", "list_type", "model_type", "string_type", "string_too_short"}


def _label(loc: YamlPath, doc: YamlDoc) -> str:
    """What the error is about, as the messages name it (``exception E1``, ``department eng``)."""
    if len(loc) >= 2 and loc[0] == "exceptions" and isinstance(loc[1], int):
        exc_id = lookup(doc.data, ("exceptions", loc[1], "id"))
        return f"exception {exc_id if isinstance(exc_id, str) and exc_id else '?'}"
    if len(loc) >= 2 and loc[0] == "departments" and isinstance(loc[1], int):
        return f"department {lookup(doc.data, ('departments', loc[1], 'name'))}"
    return str(loc[0]) if loc else "policy"


def _evasion_message(loc: YamlPath, kind: str, value: object) -> str:
    """The message of a bad ``alt_svc`` or ``ech`` value."""
    if loc[0] == "alt_svc":
        return f"alt_svc: {value!r} is not a setting (count, strip or off)"
    if kind == "extra_forbidden":
        return f"ech: unknown key {loc[-1]!r} (known: action, scope)"
    if kind == "model_type":
        return "ech must be an action (monitor, block or off) or a mapping (action, scope)"
    if loc[-1] == "scope":
        return f"ech.scope: {value!r} is not a scope (everywhere or designated)"
    return f"ech: {value!r} is not an action (monitor, block or off)"


def describe(loc: YamlPath, kind: str, err: dict[str, Any], doc: YamlDoc) -> str | None:
    """The message of one validation error of a policy file."""
    value = err.get("input")
    label = _label(loc, doc)
    in_entry = len(loc) >= 2 and loc[0] in ("exceptions", "departments") and isinstance(loc[1], int)
    key = loc[2] if in_entry and len(loc) >= 3 else (loc[-1] if loc else "")
    if kind == "egresswatch":
        message = str(err["ctx"]["message"])
        if key == "name" and loc[0] == "departments":
            return message
        if in_entry and key == "expires":
            return f"{label} expires: {message}"
        return f"{label}: {message}"
    if not loc:
        return "policy must be a mapping"
    if loc[0] in ("alt_svc", "ech") and kind in ("enum", "extra_forbidden", "model_type"):
        return _evasion_message(loc, kind, value)
    if kind == "extra_forbidden":
        model: type[BaseModel] = PolicyFile
        if in_entry:
            model = EntryDepartment if loc[0] == "departments" else EntryException
        what = str(loc[0]).rstrip("s") if in_entry else "policy"
        known = ", ".join(sorted(model.model_fields))
        return f"{what}: unknown key {key!r} (known: {known})"
    if loc[0] == "version":
        return "version: only version 1 is supported"
    if loc[0] in ("dry_run", "only_in_force"):
        return f"{loc[0]} must be true or false"
    if kind == "enum":
        shown = ".".join(str(p) for p in loc)
        return f"{shown}: {value!r} is not an action (monitor, block or off)"
    if in_entry and len(loc) == 2:
        return f"{str(loc[0]).rstrip('s')} must be a mapping"
    if loc[0] == "departments" and in_entry:
        if kind == "missing":
            return "department needs a name and cidrs"
        if key == "name" and kind == "string_pattern_mismatch":
            return f"department name {value!r}: use letters, digits, '_', '.', '-' (max 64)"
        if key == "cidrs" and kind == "too_short":
            return f"{label} has no cidrs"
    if loc[0] == "exceptions" and in_entry and kind == "missing":
        suffix = " (every exception must expire)" if key == "expires" else ""
        return f"{label}: missing {key}{suffix}"
    if kind == "dict_type":
        return f"{'.'.join(str(p) for p in loc)} must be a mapping"
    if kind == "list_type":
        return f"{'.'.join(str(p) for p in loc)} must be a list"
    if kind in _NOT_TEXT:
        where = f"{label} {key}" if in_entry else str(loc[0])
        return f"{where} must be a value"
    return f"{'.'.join(str(p) for p in loc)}: {err['msg']}"
