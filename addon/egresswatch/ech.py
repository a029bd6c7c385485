"""Encrypted ClientHello (ECH): is the name the client really asked for hidden?

With ECH (IETF draft-ietf-tls-esni, "TLS Encrypted Client Hello") a client sends an *outer* ClientHello whose
SNI is a client-facing server's public name, and the real (inner) name encrypted in the
``encrypted_client_hello`` extension (type 0xfe0d). Browsers also send that extension on
connections without ECH, filled with random bytes ("GREASE", as the draft asks of clients), so that real
ECH does not stand out; on the wire the two look alike. So the extension alone says only "this
client can do ECH", never "something is hidden". :func:`classify` calls the inner name hidden
only when there is evidence:

* the outer name is a client-facing ECH server's public name (a bundled, sourced list such as
  Cloudflare's ``cloudflare-ech.com``), or
* DNS answers seen by the proxy advertised an ECH configuration (the ``ech`` parameter of an
  HTTPS record) for the outer name, or
* the client asked for another name than the outer SNI (a CONNECT or SOCKS5 target, or a DNS
  query just before) — then the outer SNI is a public name standing in for it.

Otherwise the extension is at most ``capable`` (GREASE, or real ECH to a server nobody told the
proxy about). Malformed extensions are reported as such and never raise.

>>> classify("cloudflare-ech.com", outer_extension(), public_names={"cloudflare-ech.com"}).verdict
'hidden'
>>> classify("www.example.org", outer_extension()).verdict
'capable'
>>> classify("www.example.org", None).verdict
'none'
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from collections.abc import Collection
from dataclasses import dataclass

__all__ = ["ECH_EXTENSION", "EchSeen", "classify", "outer_extension", "parse_extension"]

#: The ``encrypted_client_hello`` extension's code point.
ECH_EXTENSION = 0xFE0D


@dataclass(frozen=True, slots=True)
class EchSeen:
    """What the proxy concluded about one ClientHello's ECH.

    ``verdict``: ``none`` (no extension), ``capable`` (extension, nothing shows a hidden name:
    GREASE or undetectable), ``hidden`` (evidence that the real name is encrypted),
    ``malformed`` (an extension that does not parse). ``public_name`` is the outer SNI when the
    name is hidden; ``reason`` says which evidence decided."""

    verdict: str
    public_name: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class OuterECH:
    """The fields of an outer ``ECHClientHello`` (draft-ietf-tls-esni, "The ECH extension")."""

    kdf_id: int
    aead_id: int
    config_id: int
    enc: bytes
    payload_length: int


def parse_extension(data: bytes) -> OuterECH | None:
    """The outer ECHClientHello in ``data`` (the extension's body), or None when ``data`` is an
    inner marker or does not parse."""
    try:
        if len(data) < 1 or data[0] != 0:  # 0 = outer, 1 = inner
            return None
        kdf_id, aead_id, config_id, enc_len = struct.unpack_from("!HHBH", data, 1)
        pos = 8
        enc = data[pos : pos + enc_len]
        if len(enc) != enc_len:
            return None
        pos += enc_len
        (payload_len,) = struct.unpack_from("!H", data, pos)
        pos += 2
        if payload_len == 0 or pos + payload_len != len(data):
            return None
    except struct.error:
        return None
    return OuterECH(kdf_id, aead_id, config_id, bytes(enc), payload_len)


def classify(
    outer_sni: str | None,
    extension: bytes | None,
    *,
    public_names: Collection[str] = (),
    advertised: Callable[[str], bool] = lambda _name: False,
    asked_name: str | None = None,
) -> EchSeen:
    """Decide what an ECH extension (its body, or None when absent) means for this connection."""
    if extension is None:
        return EchSeen("none")
    if parse_extension(extension) is None:
        return EchSeen("malformed", reason="encrypted_client_hello does not parse as outer ECH")
    if outer_sni:
        if outer_sni in public_names:
            return EchSeen("hidden", outer_sni, "outer name is a client-facing ECH server")
        if advertised(outer_sni):
            return EchSeen("hidden", outer_sni, "DNS advertised an ECH configuration for it")
        if asked_name and asked_name != outer_sni:
            return EchSeen("hidden", outer_sni, f"client asked for {asked_name}")
    return EchSeen("capable")


def outer_extension(
    *, config_id: int = 7, enc: bytes = b"\x11" * 32, payload: bytes = b"\x22" * 144
) -> bytes:
    """A well-formed outer ECHClientHello body (HKDF-SHA256, AES-128-GCM), as a client or a
    GREASE generator would send it: for tests and benchmarks."""
    head = struct.pack("!BHHBH", 0, 0x0001, 0x0001, config_id, len(enc))
    return head + enc + struct.pack("!H", len(payload)) + payload
