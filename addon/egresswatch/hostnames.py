"""Hostname normalisation: one canonical form for every name a client sends.

mitmproxy passes names through as the client wrote them (trailing dots, mixed case, Unicode,
ports, brackets). Everything that matches or records a name goes through :func:`normalise_host`
first. Invalid input gives ``None``, never an exception, and hostile input is rejected before any
per-label work (a 32k-label Host header costs one length check).

>>> normalise_host("WWW.TikTok.COM.")
'www.tiktok.com'
>>> normalise_host("bücher.example:443")
'xn--bcher-kva.example'
>>> normalise_host("[2001:db8::1]:443")
'2001:db8::1'
>>> normalise_host("a..b") is None, normalise_host("x" * 300) is None
(True, True)
"""

from __future__ import annotations

import ipaddress
import re

import idna

__all__ = [
    "MAX_LABELS",
    "MAX_NAME_LENGTH",
    "is_ip_literal",
    "is_matchable",
    "is_strict_hostname",
    "normalise_host",
    "parse_ip",
    "why_invalid",
]

MAX_NAME_LENGTH = 253
MAX_LABELS = 127
# Room for brackets, ":65535" and a trailing dot around a maximal name: anything longer is
# rejected before it is even lower-cased.
_MAX_RAW_LENGTH = MAX_NAME_LENGTH + 10

# LDH plus underscore (seen in real service names); labels 1-63 octets, no empty labels.
_STRICT_RE = re.compile(
    r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*"
)
# What matching accepts: labels of 1-63 LDH/underscore characters, hyphens anywhere.
_FAST_RE = re.compile(r"(?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}")
_DIGITS = frozenset("0123456789")
_LOOSE_LABEL_RE = re.compile(r"[a-z0-9_-]{1,63}")


def _strip_port(h: str) -> str | None:
    """Remove ``[...]`` brackets and a ``:port`` suffix; ``None`` if malformed."""
    if h.startswith("["):
        end = h.find("]")
        if end < 0:
            return None
        rest = h[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        return h[1:end]
    colons = h.count(":")
    if colons == 1:
        host, _, port = h.partition(":")
        if port and not port.isdigit():
            return None
        return host
    return h  # no port, or a bare IPv6 literal


def parse_ip(raw: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address in ``raw`` (brackets, port and zone id allowed), else ``None``."""
    if len(raw) > _MAX_RAW_LENGTH:
        return None
    h = _strip_port(raw.strip())
    if not h:
        return None
    h = h.split("%", 1)[0]
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        return None


def is_ip_literal(name: str) -> bool:
    """True for a normalised name that is an IPv4 or IPv6 literal."""
    if ":" in name:
        return True
    return name[-1:].isdigit() and parse_ip(name) is not None


def _to_ascii(h: str) -> str | None:
    try:
        return idna.encode(h, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        pass
    # IDNA 2008 refuses some names that IDNA 2003 (and browsers' UTS 46 transitional mode)
    # accept, e.g. symbols; fall back to the stdlib codec before giving up.
    try:
        return h.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None


def normalise_host(raw: str | bytes | None) -> str | None:
    """Canonical form of a hostname or IP literal, or ``None`` if it is not one.

    Port and brackets are removed, one trailing dot is stripped, the name is lower-cased and
    Unicode labels become IDNA A-labels. IP literals come back in their compressed form.
    """
    # Fast path for the common case (plain ASCII name, no port): one regex over the lower-cased
    # name. Anything it does not accept takes the careful path below.
    if raw.__class__ is str and 0 < len(raw) <= MAX_NAME_LENGTH + 1:
        h = raw.lower()
        if h[-1] == ".":
            h = h[:-1]
        if h.isascii() and _FAST_RE.fullmatch(h) is not None and len(h) <= MAX_NAME_LENGTH:
            if h[-1] in _DIGITS:
                return _numeric(h)
            return h
    return _normalise_slow(raw)


def _numeric(h: str) -> str | None:
    ip = parse_ip(h)
    if ip is not None:
        return ip.compressed
    if h.rpartition(".")[2].isdigit():
        return None  # all-numeric TLD: a malformed IPv4 literal, not a name
    return h


def _normalise_slow(raw: str | bytes | None) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, bytes):
        if len(raw) > _MAX_RAW_LENGTH * 4:
            return None
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if len(raw) > _MAX_RAW_LENGTH or not raw:
        return None
    h = raw
    if ":" in h or "[" in h:
        if "%" in h or h.count(":") > 1:
            ip = parse_ip(h)
            return None if ip is None else ip.compressed
        stripped = _strip_port(h)
        if not stripped:
            return None
        h = stripped
    if h.endswith("."):
        h = h[:-1]
    if not h.isascii():
        encoded = _to_ascii(h)
        if encoded is None:
            return None
        h = encoded
    else:
        h = h.lower()
    if not h or len(h) > MAX_NAME_LENGTH or _FAST_RE.fullmatch(h) is None:
        return None
    if h[-1] in _DIGITS:
        return _numeric(h)
    return h


def is_matchable(name: str, end: int | None = None) -> bool:
    """True for a lower-case ASCII name (no port, no trailing dot) that matching accepts.

    With ``end``, only ``name[:end]`` is checked: the labels left of a suffix already known to
    be valid, which starts at ``end + 1``. A negative ``end`` means the name is that suffix.
    """
    if len(name) > MAX_NAME_LENGTH:
        return False
    if end is None:
        return _FAST_RE.fullmatch(name) is not None
    return end < 0 or (end > 0 and _FAST_RE.fullmatch(name, 0, end) is not None)


def is_strict_hostname(name: str) -> bool:
    """True for a normalised name whose labels also follow the LDH rule (no edge hyphens).

    Matching accepts ``cdn-.example`` (such names occur in the wild); catalogue entries must not.
    """
    return _STRICT_RE.fullmatch(name) is not None


def why_invalid(raw: str) -> str | None:
    """A short reason why ``raw`` does not normalise (for error messages), or ``None``."""
    name = normalise_host(raw)
    if name is not None and (is_strict_hostname(name) or is_ip_literal(name)):
        return None
    if not raw:
        return "empty name"
    if "\x00" in raw:
        return "name holds a NUL byte"
    if len(raw) > _MAX_RAW_LENGTH:
        return f"name is {len(raw)} characters long (limit {MAX_NAME_LENGTH})"
    h = raw.rstrip(".")
    if h.count(".") + 1 > MAX_LABELS:
        return f"name has more than {MAX_LABELS} labels"
    if not h.isascii() and _to_ascii(h) is None:
        return "name fails IDNA encoding"
    if ".." in h or h.startswith("."):
        return "name has an empty label"
    for label in h.lower().split("."):
        if len(label) > 63:
            return f"label {label[:20]}... is longer than 63 octets"
        if label.isascii() and not _LOOSE_LABEL_RE.fullmatch(label):
            return f"label {label!r} holds characters not allowed in a hostname"
        if label.startswith("-") or label.endswith("-"):
            return f"label {label!r} starts or ends with a hyphen"
    return "not a valid hostname"
