"""How a client is named in the event store: its address, a keyed pseudonym, or nothing.

Client addresses are personal data. ``hash`` mode keeps events linkable (the same client gets
the same pseudonym) without storing the address: ``h:`` + the first 16 hex digits of
HMAC-SHA256(key, address). The key lives in a secret file (:func:`load_key`); without it the
pseudonyms cannot be reversed by trying every address.

>>> ident = ClientIdentity("hash", b"0123456789abcdef")
>>> ident.of("10.0.0.1") == ident.of("::ffff:10.0.0.1"), ident.of("10.0.0.1")[:2], ident.of(None)
(True, 'h:', None)
>>> ClientIdentity("address").of("[fd00::1]"), ClientIdentity("none").of("10.0.0.1")
('fd00::1', None)
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from typing import cast

__all__ = [
    "MIN_KEY_BYTES",
    "MODES",
    "ClientIdentity",
    "KeyFileError",
    "identity_from_options",
    "load_key",
]

logger = logging.getLogger(__name__)

MIN_KEY_BYTES = 16
"""Shortest accepted HMAC key, in bytes (after trailing whitespace is removed)."""

type IdentityMode = Literal["address", "hash", "none"]
MODES: tuple[IdentityMode, ...] = ("address", "hash", "none")

_HASH_PREFIX = "h:"
_HASH_HEX_CHARS = 16


class KeyFileError(ValueError):
    """The pseudonym key file is missing, unreadable, empty or too short."""


def _canonical(ip: str) -> str:
    """The address in canonical text (IPv4-mapped IPv6 unwrapped); other strings unchanged."""
    raw = ip[1:-1] if ip.startswith("[") and ip.endswith("]") else ip
    try:
        addr = ipaddress.ip_address(raw)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """Turns a client address into the ``client`` value stored with each event."""

    mode: IdentityMode = "address"
    key: bytes | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown client identity mode {self.mode!r} (one of {MODES})")
        if self.mode == "hash":
            if not self.key or len(self.key) < MIN_KEY_BYTES:
                raise ValueError(f"hash mode needs a key of at least {MIN_KEY_BYTES} bytes")
        elif self.key is not None:
            raise ValueError(f"a key is only used in hash mode, not {self.mode!r}")

    def of(self, ip: str | None) -> str | None:
        """The stored identity of ``ip``; None in ``none`` mode or when there is no address."""
        if ip is None or self.mode == "none" or not ip:
            return None
        canonical = _canonical(ip)
        if self.mode == "address":
            return canonical
        assert self.key is not None
        digest = hmac.new(self.key, canonical.encode("utf-8"), hashlib.sha256).hexdigest()
        return _HASH_PREFIX + digest[:_HASH_HEX_CHARS]


def load_key(path: str | Path) -> bytes:
    """Read the pseudonym key from ``path``; trailing whitespace (a final newline) is ignored.

    Raises :class:`KeyFileError` when the file is missing, unreadable, empty or shorter than
    :data:`MIN_KEY_BYTES`. Logs a warning when other users may read it.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
        mode = p.stat().st_mode
    except OSError as e:
        raise KeyFileError(f"{p}: cannot read key file: {e.strerror or e}") from e
    key = data.rstrip(b" \t\r\n")
    if not key:
        raise KeyFileError(f"{p}: key file is empty")
    if len(key) < MIN_KEY_BYTES:
        raise KeyFileError(
            f"{p}: key is {len(key)} bytes, at least {MIN_KEY_BYTES} are needed "
            "(for instance: head -c 32 /dev/urandom | base64 > FILE)"
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("%s: key file is accessible to other users (chmod 600 it)", p)
    return key


def identity_from_options(mode: str, key_file: str | Path | None) -> ClientIdentity:
    """Build a :class:`ClientIdentity` from option values; ValueError with a clear message."""
    if mode not in MODES:
        raise ValueError(f"client identity {mode!r}: use one of {', '.join(MODES)}")
    if mode == "hash":
        if not key_file:
            raise ValueError("client identity 'hash' needs a key file")
        return ClientIdentity("hash", load_key(key_file))
    return ClientIdentity(cast(IdentityMode, mode))
