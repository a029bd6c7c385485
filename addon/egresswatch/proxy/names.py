"""Destination names mitmproxy cannot handle: refused before a connect, or never intercepted.

Pure functions of a name (no mitmproxy import); ``observe`` and ``layers`` call them per connection.
"""

from __future__ import annotations

import re

from egresswatch import hostnames

__all__ = ["codec_refusal_reason", "refusal_reason", "verifiable_sni"]

# Names the stdlib ``idna`` codec (which asyncio applies) accepts without further checks: ASCII
# labels of 1-63 characters, one optional trailing dot. For ASCII input the codec checks nothing
# but label lengths, so such a name needs no codec call and no IP parsing (IPv4 literals match too).
_PLAIN_NAME_RE = re.compile(r"(?:[A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?")
# A name mitmproxy can mint a certificate for and verify: LDH labels, no edge hyphens, no trailing
# dot (an ASCII-only character class, so non-ASCII names fail too).
_VERIFIABLE_RE = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def refusal_reason(name: str) -> str | None:
    """Why mitmproxy must not try to connect to ``name`` (None: let it try).

    mitmproxy 12.3.1 catches only ``OSError`` around ``asyncio.open_connection``; a name that the
    ``idna`` codec rejects or that holds NUL raises ``UnicodeError``/``ValueError`` there, and the
    client is never answered (MITMPROXY.md section 13 #1). Overlong names are refused too.
    ``server_connect`` runs this for every connection: a plain ASCII name costs one regex match.

    >>> refusal_reason("example.org"), refusal_reason("a\\x00b")
    (None, 'name holds a NUL byte')
    """
    if len(name) <= hostnames.MAX_NAME_LENGTH and _PLAIN_NAME_RE.fullmatch(name) is not None:
        return None
    return codec_refusal_reason(name)


def codec_refusal_reason(name: str) -> str | None:
    """:func:`refusal_reason` for every name, through the stdlib codec itself (no fast path)."""
    if "\x00" in name:
        return "name holds a NUL byte"
    if len(name) > hostnames.MAX_NAME_LENGTH + 1:
        return f"name is longer than {hostnames.MAX_NAME_LENGTH} bytes"
    if name.count(".") + 1 > hostnames.MAX_LABELS + 1:
        return f"name has more than {hostnames.MAX_LABELS} labels"
    if hostnames.parse_ip(name) is not None:
        return None
    try:
        encoded = name.encode("idna")
    except (UnicodeError, ValueError):
        return "name fails IDNA encoding"
    if len(encoded.rstrip(b".")) > hostnames.MAX_NAME_LENGTH:
        return f"name is longer than {hostnames.MAX_NAME_LENGTH} bytes"
    return None


def verifiable_sni(sni: str | None) -> bool:
    """Whether mitmproxy can mint and verify a certificate for ``sni`` when intercepting.

    ``X509_VERIFY_PARAM_set1_host`` fails on a trailing dot and on labels that are not LDH
    (``cdn-.x``), and the client handshake then stalls (MITMPROXY.md section 13 #5): such names are
    passed through (or refused) instead of intercepted. No SNI is fine (the address is used).

    >>> verifiable_sni("example.org"), verifiable_sni("example.org."), verifiable_sni(None)
    (True, False, True)
    """
    return sni is None or _VERIFIABLE_RE.fullmatch(sni) is not None
