"""The ``Alt-Svc`` response header (RFC 7838): which alternatives advertise HTTP/3, and the header
without them.

A server that answers ``Alt-Svc: h3=":443"`` invites the client to come back over QUIC, a path
the proxy does not decrypt. :func:`examine` parses every ``Alt-Svc`` field of one response and
returns the QUIC protocol ids advertised and the fields with those alternatives removed (the
others kept as they were sent; a field left empty is dropped), so the proxy can count the
advertisement and, by policy, strip it.

Grammar (RFC 7838 section 3, list rules of RFC 9110 section 5.6.1)::

    Alt-Svc       = clear / 1#alt-value
    alt-value     = alternative *( OWS ";" OWS parameter )
    alternative   = protocol-id "=" alt-authority      ; protocol-id: percent-encoded ALPN id
    alt-authority = quoted-string                      ; [ uri-host ] ":" port
    parameter     = token "=" ( token / quoted-string )

QUIC alternatives are ``h3`` and its drafts (``h3-29``, ``h3-Q050``...) and Google QUIC's
``quic``. A field that does not parse (or exceeds :data:`MAX_FIELD` characters or
:data:`MAX_ALTERNATIVES` entries) is *malformed*: strict clients ignore it whole, a lenient one
might still read an ``h3`` out of it, so it counts as a QUIC advertisement when its text names
one, and stripping drops the whole field (an ``Alt-Svc`` is only a hint: dropping one is safe).

>>> a = examine(['h3=":443"; ma=86400, h2=":443"'])
>>> a.quic, a.kept, a.changed
(('h3',), ('h2=":443"',), True)
>>> examine(['clear']).kept, examine(['clear']).quic
(('clear',), ())
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "MAX_ALTERNATIVES",
    "MAX_FIELD",
    "AltSvc",
    "Alternative",
    "Examined",
    "examine",
    "is_quic",
    "parse",
]

#: A longer field is not parsed (treated as malformed).
MAX_FIELD = 8192
#: More alternatives than this in one field: malformed.
MAX_ALTERNATIVES = 64
#: At most this many distinct QUIC protocol ids are reported per response.
MAX_REPORTED = 8

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_QUIC_HINT = re.compile(r"h3|quic|%68%33", re.IGNORECASE)
_OWS = " \t"


@dataclass(frozen=True, slots=True)
class Alternative:
    """One alternative service: its protocol id (percent-decoded), authority (unquoted) and
    parameters, and its text as sent (kept verbatim when the header is rewritten)."""

    protocol: str
    authority: str
    params: tuple[tuple[str, str], ...]
    text: str

    @property
    def quic(self) -> bool:
        return is_quic(self.protocol)


@dataclass(frozen=True, slots=True)
class AltSvc:
    """One parsed ``Alt-Svc`` field: ``clear``, a list of alternatives, or malformed (the
    reason)."""

    clear: bool = False
    alternatives: tuple[Alternative, ...] = ()
    malformed: str | None = None


@dataclass(frozen=True, slots=True)
class Examined:
    """What one response's ``Alt-Svc`` fields advertise, and the fields without QUIC."""

    #: QUIC protocol ids advertised (distinct, lower-cased, cut to 32 characters, in order, at
    #: most :data:`MAX_REPORTED`); ``malformed`` stands for a field that did not parse but names
    #: one.
    quic: tuple[str, ...]
    #: The fields to send instead (none: drop the header).
    kept: tuple[str, ...]
    #: Whether ``kept`` differs from the fields as received.
    changed: bool
    #: Whether any field was malformed.
    malformed: bool


def is_quic(protocol: str) -> bool:
    """Whether an ALPN protocol id runs over QUIC: ``h3``, a draft ``h3-*``, or ``quic``.

    >>> is_quic("h3"), is_quic("h3-29"), is_quic("quic"), is_quic("h2"), is_quic("h3x")
    (True, True, True, False, False)
    """
    p = protocol.lower()
    return p == "h3" or p.startswith("h3-") or p == "quic"


def _split(text: str, sep: str) -> list[str] | None:
    """``text`` split at ``sep`` outside quoted strings (None: an unterminated quote)."""
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == sep:
            parts.append(text[start:i])
            start = i + 1
    if quoted:
        return None
    parts.append(text[start:])
    return parts


def _unquote(text: str) -> str | None:
    """The content of a quoted-string (None: not one)."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return None
    out: list[str] = []
    escaped = False
    for ch in text[1:-1]:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            return None
        else:
            out.append(ch)
    return None if escaped else "".join(out)


def _pct_decode(token: str) -> str | None:
    """A percent-encoded protocol id decoded (None: a stray ``%``)."""
    if "%" not in token:
        return token
    if token.count("%") != len(_PCT.findall(token)):
        return None
    return _PCT.sub(lambda m: chr(int(m.group(1), 16)), token)


def _authority_ok(authority: str) -> bool:
    """``[ uri-host ] ":" port`` with a port from 1 to 65535."""
    host, sep, port = authority.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        return False
    return not any(c in host for c in " \t\r\n/?#@")


def _alternative(text: str) -> Alternative | str:
    """One ``alt-value`` (the alternative or the reason it is malformed)."""
    parts = _split(text, ";")
    if parts is None:
        return "unterminated quoted string"
    proto, eq, authority = parts[0].strip(_OWS).partition("=")
    if not eq or not _TOKEN.fullmatch(proto):
        return f"not protocol-id=authority: {parts[0].strip(_OWS)[:40]!r}"
    decoded = _pct_decode(proto)
    if decoded is None:
        return f"bad percent-encoding in {proto[:40]!r}"
    host = _unquote(authority.strip(_OWS))
    if host is None or not _authority_ok(host):
        return f"bad alt-authority {authority.strip(_OWS)[:40]!r}"
    params: list[tuple[str, str]] = []
    for p in parts[1:]:
        name, eq, value = p.strip(_OWS).partition("=")
        if not eq or not _TOKEN.fullmatch(name):
            return f"bad parameter {p.strip(_OWS)[:40]!r}"
        if value.startswith('"'):
            unq = _unquote(value)
            if unq is None:
                return f"bad parameter {p.strip(_OWS)[:40]!r}"
            value = unq
        elif not _TOKEN.fullmatch(value):
            return f"bad parameter {p.strip(_OWS)[:40]!r}"
        params.append((name.lower(), value))
    return Alternative(decoded, host, tuple(params), text.strip(_OWS))


def parse(field: str) -> AltSvc:
    """One ``Alt-Svc`` field value.

    >>> parse('h3-29=":8443"; ma=60; persist=1').alternatives[0].params
    (('ma', '60'), ('persist', '1'))
    >>> parse('h3=:443').malformed
    "bad alt-authority ':443'"
    """
    if len(field) > MAX_FIELD:
        return AltSvc(malformed=f"longer than {MAX_FIELD} characters")
    value = field.strip(_OWS)
    if value == "clear":
        return AltSvc(clear=True)
    elements = _split(value, ",")
    if elements is None:
        return AltSvc(malformed="unterminated quoted string")
    alternatives: list[Alternative] = []
    for element in elements:
        if not element.strip(_OWS):
            continue  # empty list elements are allowed (RFC 9110 section 5.6.1)
        if len(alternatives) >= MAX_ALTERNATIVES:
            return AltSvc(malformed=f"more than {MAX_ALTERNATIVES} alternatives")
        alt = _alternative(element)
        if isinstance(alt, str):
            return AltSvc(malformed=alt)
        alternatives.append(alt)
    if not alternatives:
        return AltSvc(malformed="empty")
    return AltSvc(alternatives=tuple(alternatives))


def examine(fields: Iterable[str]) -> Examined:
    """Every ``Alt-Svc`` field of one response: the QUIC ids advertised and the fields to send
    when they are stripped (see the module text for malformed fields)."""
    quic: dict[str, None] = {}
    kept: list[str] = []
    changed = malformed = False
    for field in fields:
        parsed = parse(field)
        if parsed.malformed is not None:
            malformed = True
            if _QUIC_HINT.search(field) is not None:
                if len(quic) < MAX_REPORTED:
                    quic.setdefault("malformed", None)
                changed = True
            else:
                kept.append(field)
            continue
        if parsed.clear:
            kept.append(field)
            continue
        others = [a.text for a in parsed.alternatives if not a.quic]
        for a in parsed.alternatives:
            if a.quic and len(quic) < MAX_REPORTED:
                quic.setdefault(a.protocol.lower()[:32], None)
        if len(others) == len(parsed.alternatives):
            kept.append(field)
            continue
        changed = True
        if others:
            kept.append(", ".join(others))
    return Examined(tuple(quic), tuple(kept), changed, malformed)
