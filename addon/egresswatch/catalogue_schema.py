"""The catalogue's file formats, described once: an app file (or an extends file) and regimes.yaml.

The pydantic models below are the schema. :func:`egresswatch.catalogue.load_catalogue` validates
each file's data (read by :func:`egresswatch.yamlpos.read_yaml`) with them and turns every error
into ``file:line: reason`` with :func:`describe_app` and :func:`describe_regimes`; ``egresswatch schemas`` writes the same models
as the JSON Schema files in ``schemas/`` that an editor's YAML language server checks against.
Checks that need more than one entry (an id equal to the file name, a regime that exists, a list
file that exists, names shared between apps) are the loader's.

>>> AppFile.model_validate({"id": "a1", "name": "A", "category": "other"}).regimes
()
>>> from pydantic import ValidationError
>>> try:
...     EntryDomain.model_validate({"domain": "x..y", "source": "s", "confidence": "low"})
... except ValidationError as e:
...     print(e.errors()[0]["msg"])
'x..y' is not a valid hostname (name has an empty label)
"""

from __future__ import annotations

import ipaddress
from datetime import date
from typing import Annotated
from typing import Any
from typing import Literal

from pydantic import AfterValidator
from pydantic import BaseModel
from pydantic import BeforeValidator
from pydantic import ConfigDict
from pydantic import Field
from pydantic import WithJsonSchema
from pydantic_core import PydanticCustomError

from .hostnames import is_ip_literal
from .hostnames import is_strict_hostname
from .hostnames import normalise_host
from .hostnames import why_invalid
from .yamlpos import YamlDoc
from .yamlpos import YamlPath
from .yamlpos import lookup

__all__ = [
    "CATEGORIES",
    "PRIMARY_TAG",
    "CONFIDENCES",
    "AppFile",
    "EntryCarveOut",
    "EntryCidr",
    "EntryDomain",
    "EntryList",
    "EntryOrganisation",
    "EntryRegime",
    "RegimesFile",
    "describe_app",
    "describe_regimes",
    "regime_dates",
]

CONFIDENCES = ("high", "medium", "low")
#: The tag that makes an app the primary (``Match.app``) of a name several apps claim.
PRIMARY_TAG = "primary"
CATEGORIES = (
    "payments",
    "messaging",
    "social-video",
    "productivity",
    "file-sharing",
    "ai",
    "other",
    # Categories of their own, never designated apps: loaded from domains/encrypted-dns and
    # domains/ech for the attribution signals (docs/attribution.md).
    "encrypted-dns",
    "ech-frontend",
)
APP_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
REGIME_ID_PATTERN = r"^[a-z0-9][a-z0-9.-]{0,62}$"
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_DATES = ("signed", "effective", "revoked")
_NOT_TEXT = {"dict_type", "list_type", "model_type", "string_type"}


def fail(message: str) -> PydanticCustomError:
    """A validation error whose message is ``message`` exactly (type ``egresswatch``)."""
    return PydanticCustomError("egresswatch", "{message}", {"message": message})


def _hostname(raw: str) -> str:
    """A catalogue name: checked here, normalised by the loader (which notes the change)."""
    if not raw:
        raise fail("empty name")
    if raw.startswith("*."):
        raise fail(f"{raw!r}: wildcards are not needed, a suffix rule covers subdomains")
    name = normalise_host(raw)
    if name is None or ":" in raw:
        raise fail(f"{raw!r} is not a valid hostname ({why_invalid(raw) or 'has a port'})")
    if not is_strict_hostname(name) and not is_ip_literal(name):
        raise fail(f"{raw!r} is not a valid hostname (a label starts or ends with a hyphen)")
    return raw


def _network(raw: str) -> str:
    try:
        net = ipaddress.ip_network(raw, strict=True)
    except ValueError as e:
        raise fail(f"cidr {raw!r} is not a network: {e}") from None
    if net.prefixlen < (8 if net.version == 4 else 16):
        raise fail(f"cidr {raw!r} is too broad to attribute to one app")
    return raw


def _iso_date(raw: str) -> str:
    try:
        date.fromisoformat(raw)
    except ValueError:
        raise fail(f"{raw!r} is not an ISO date (YYYY-MM-DD)") from None
    return raw


def _one_or_many(value: object) -> object:
    """``tags: vendor`` is ``tags: [vendor]``; null is an empty list."""
    if value is None:
        return []
    return [value] if isinstance(value, str | int | float) else value


Text = Annotated[str, Field(min_length=1)]
Hostname = Annotated[str, AfterValidator(_hostname)]
IsoDate = Annotated[str, Field(pattern=DATE_PATTERN), AfterValidator(_iso_date)]
Texts = Annotated[
    tuple[str, ...],
    BeforeValidator(_one_or_many),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "array", "items": {"type": "string"}},
                {"type": "string"},
                {"type": "null"},
            ]
        }
    ),
]
Confidence = Literal["high", "medium", "low"]
MatchKind = Literal["suffix", "exact"]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class EntryDomain(_Entry):
    """One name of an app, with its provenance."""

    domain: Hostname = Field(description="Lower-case A-label (punycode), no trailing dot.")
    match: MatchKind = Field("suffix", description="suffix: the name and every name under it.")
    source: Text = Field(description="Where the entry comes from: repo:path@commit or URL.")
    confidence: Confidence
    tags: Texts = ()
    note: str | None = None
    shared_with: Texts = Field((), description="Other apps that list the same name.")


class EntryList(_Entry):
    """A bulk list file (one name per line, ``#`` comments) sharing one provenance."""

    file: Text = Field(description="Path relative to the app file.")
    match: MatchKind = "suffix"
    source: Text
    confidence: Confidence
    tags: Texts = ()


class EntryCarveOut(_Entry):
    """A name under one of the app's suffixes that is NOT the app."""

    domain: Hostname
    source: Text
    reason: Text


class EntryOrganisation(_Entry):
    """A legal name the vendor's TLS certificates carry as subject organisation (``O=``): a
    name whose upstream certificate names it becomes a discovery candidate for the app."""

    name: Text = Field(description="As written in the certificate's subject O= attribute.")
    source: Text = Field(description="Where a certificate with this O= was seen (public).")
    note: str | None = None


LABEL_PATTERN = r"^[a-z0-9*#-]{1,63}$"


class EntryPattern(_Entry):
    """Names whose label directly under a declared parent matches a pattern (``wx#`` under
    ``qq.com``: ``wx.qq.com``, ``wx2.qq.com``, ``wx8.qq.com``...). ``*`` stands for any run of
    letters, digits and hyphens, ``#`` for any run of digits (both may be empty)."""

    parent: Hostname = Field(description="The shared parent the pattern's label sits under.")
    label: Annotated[str, Field(pattern=LABEL_PATTERN)] = Field(
        description="One label: letters, digits, hyphens, * (any run) and # (any digits)."
    )
    scope: Literal["name", "subtree"] = Field(
        "subtree", description="name: only <label>.<parent>; subtree: also every name under it."
    )
    source: Text
    confidence: Confidence
    tags: Texts = ()
    note: str | None = None


class EntryCidr(_Entry):
    """A network, for IP-literal destinations."""

    cidr: Annotated[str, AfterValidator(_network)]
    source: Text
    confidence: Confidence
    tags: Texts = ()
    note: str | None = None


class AppFile(_Entry):
    """``<id>.yaml``: one designated app; or, with ``extends``, rules added to another app."""

    model_config = ConfigDict(
        title="egresswatch app file",
        json_schema_extra={
            "if": {"required": ["extends"]},
            "then": {"not": {"anyOf": [{"required": [k]} for k in ("id", "name", "category")]}},
            "else": {"required": ["id", "name", "category"]},
        },
    )

    id: Annotated[str, Field(pattern=APP_ID_PATTERN)] | None = Field(
        None, description="Equal to the file name without .yaml."
    )
    extends: Annotated[str, Field(pattern=APP_ID_PATTERN)] | None = Field(
        None, description="Instead of id: the app this file adds rules to."
    )
    name: Text | None = None
    vendor: str | None = None
    parent: str | None = None
    category: Literal[CATEGORIES] | None = None  # type: ignore[valid-type]
    regimes: Texts = Field((), description="Regime ids from any regimes.yaml.")
    description: str | None = None
    completeness: str | None = Field(
        None,
        description="How complete the list is believed to be, when it is known to be thin or "
        "partial; the monthly report repeats it.",
    )
    domains: list[EntryDomain] | None = None
    lists: list[EntryList] | None = None
    carve_outs: list[EntryCarveOut] | None = None
    patterns: list[EntryPattern] | None = None
    cidrs: list[EntryCidr] | None = None
    organisations: list[EntryOrganisation] | None = Field(
        None,
        description="Subject organisation names of the vendor's certificates (discovery "
        "evidence only: never a rule).",
    )


class EntryRegime(_Entry):
    """One legal basis."""

    id: Annotated[str, Field(pattern=REGIME_ID_PATTERN)]
    title: Text
    jurisdiction: str | None = None
    signed: IsoDate | None = None
    effective: IsoDate | None = Field(None, description="Defaults to signed.")
    revoked: IsoDate | None = None
    revoked_by: str | None = None
    citation: str | None = None
    sources: Texts = ()
    apps: Texts = Field((), description="App ids of the catalogue.")
    notes: str | None = None


class RegimesFile(_Entry):
    """``regimes.yaml``: the legal bases."""

    model_config = ConfigDict(title="egresswatch regimes file")

    regimes: list[EntryRegime]


# --- error messages ---------------------------------------------------------------------------

_SECTIONS: dict[str, tuple[type[BaseModel], str, str]] = {
    # section: (model, what an entry is called, the key that names it)
    "domains": (EntryDomain, "domain entry", "domain"),
    "lists": (EntryList, "lists entry", "file"),
    "carve_outs": (EntryCarveOut, "carve-out", "domain"),
    "cidrs": (EntryCidr, "cidr entry", "cidr"),
    "organisations": (EntryOrganisation, "organisation", "name"),
}
_LABEL = {
    "domains": "domain",
    "lists": "list",
    "carve_outs": "carve-out",
    "cidrs": "cidr",
    "organisations": "organisation",
}


def _describe(
    top: type[BaseModel], loc: YamlPath, kind: str, err: dict[str, Any], doc: YamlDoc
) -> str:
    if kind == "egresswatch":
        message = str(err["ctx"]["message"])
        if loc[-1] in _DATES:
            return f"{loc[-1]}: {message}"
        if loc[-1] == "domain" and loc[0] in _LABEL:
            return f"{_LABEL[str(loc[0])]}: {message}"  # "domain: 'x' is not a valid hostname"
        return message
    value = err.get("input")
    model: type[BaseModel] = top
    what = label = "regimes file" if top is RegimesFile else "app file"
    key: str | int = loc[0] if loc else ""
    name_key = ""
    section = str(loc[0]) if loc else ""
    if len(loc) >= 2 and isinstance(loc[1], int):
        if top is RegimesFile:
            model, what, name_key = EntryRegime, "regime", "id"
        elif section in _SECTIONS:
            model, what, name_key = _SECTIONS[section]
        if len(loc) == 2:
            return (
                f"{what} must be a mapping"
                if top is RegimesFile
                else f"{section} entry must be a mapping"
            )
        key = loc[2]
        named = lookup(doc.data, (loc[0], loc[1], name_key))
        if named is None:
            label = what
        elif model is EntryRegime:
            label = f"regime {named}"
        else:
            label = f"{_LABEL[section]} {named!r}"
    if not loc:
        return f"{what} must be a mapping"
    prefix = f"{label}: " if model is not top else ""
    if kind == "extra_forbidden":
        allowed = ", ".join(sorted(model.model_fields))
        return f"{what}: unknown key {key!r} (allowed: {allowed})"
    if kind == "missing":
        if key == name_key:
            return (
                f"{what}: {key!r} is required"
                if model is not EntryRegime
                else f"{what}: id is required"
            )
        if key == "source" and model in (EntryDomain, EntryList):
            return f"{label}: source is required (provenance)"
        if key == "confidence":
            return f"{label}: confidence is required (high, medium or low)"
        return f"{prefix}{key} is required"
    if kind == "literal_error" and key == "confidence":
        return f"{label}: confidence {value!r} is not high, medium or low"
    if kind == "literal_error" and key == "match":
        return f"{label}: match {value!r} is not suffix or exact"
    if kind == "literal_error" and key == "category":
        return f"category {value!r} is not one of {', '.join(CATEGORIES)}"
    if kind == "string_pattern_mismatch":
        if key in _DATES:
            return f"{key}: {value!r} is not an ISO date (YYYY-MM-DD)"
        if model is EntryRegime:
            return f"regime id {value!r} must be lower-case letters, digits, dots and hyphens"
        return f"{key} {value!r} must be lower-case letters, digits and hyphens"
    if kind == "string_too_short" or (kind in _NOT_TEXT and value is None):
        return f"{prefix}{key} must not be empty"
    if kind == "list_type":
        return f"{prefix}{key} must be a list"
    if kind in _NOT_TEXT:
        return f"{prefix}{key} must be a single value"
    return f"{prefix}{key}: {err['msg']}"


def describe_app(loc: YamlPath, kind: str, err: dict[str, Any], doc: YamlDoc) -> str:
    """The message of one validation error of an app file (see :func:`yamlpos.problems_from`)."""
    return _describe(AppFile, loc, kind, err, doc)


def describe_regimes(loc: YamlPath, kind: str, err: dict[str, Any], doc: YamlDoc) -> str:
    """The message of one validation error of regimes.yaml."""
    return _describe(RegimesFile, loc, kind, err, doc)


def regime_dates(entry: EntryRegime) -> tuple[date | None, date | None, date | None]:
    """(signed, effective, revoked) as dates; effective defaults to signed."""

    def day(text: str | None) -> date | None:
        return date.fromisoformat(text) if text else None

    signed = day(entry.signed)
    return signed, day(entry.effective) or signed, day(entry.revoked)
