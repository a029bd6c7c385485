"""Hostile destination names for the fuzz tests (MITMPROXY.md section 13), from a seeded generator.

``hostile_names(rng, n, max_len)`` yields byte strings mixing the designated test names with what
fuzzing mitmproxy 12.3.1 found dangerous: NUL, bytes that are not UTF-8, labels IDNA rejects,
overlong labels and names, thousands of labels, trailing dots, mixed case, Unicode, IP-ish text.
``client_hello(sni)`` builds a TLS ClientHello carrying any SNI bytes.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Iterator

BASES = (
    b"www.tiktok.com",
    b"api.deepseek.com",
    b"pay.weixin.qq.com",
    b"example.test",
    b"neutral.test",
)
ODD = (
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\xe2\x80\x8b",
    "ß".encode(),
    "İ".encode(),
    "ﬀ".encode(),
    b"..",
    b".",
    b"-",
    b"_",
    b"*",
    b"%00",
    b"@",
    b":",
    b"[",
    b"]",
    b" ",
    b"\t",
    b"xn--",
    b"xn--zz",
    b"XN--BCHER-KVA",
    "bücher".encode(),
    "例え".encode(),
    b"\x7f",
    b"\\",
    b"/",
)


def _mutate(rng: random.Random, name: bytes, max_len: int) -> bytes:
    kind = rng.randrange(12)
    if kind == 0:
        out = name.upper() + b"." * rng.randrange(1, 4)
    elif kind == 1:
        i = rng.randrange(len(name) + 1)
        out = name[:i] + rng.choice(ODD) + name[i:]
    elif kind == 2:
        out = b"a" * rng.randrange(64, 300) + b"." + name
    elif kind == 3:
        out = b"a." * rng.randrange(64, max(65, max_len // 2)) + name
    elif kind == 4:
        out = rng.choice(ODD) * rng.randrange(1, 8) + b"." + name
    elif kind == 5:
        out = (
            b"xn--"
            + bytes(rng.choice(b"abcxyz-0189") for _ in range(rng.randrange(1, 30)))
            + b"."
            + name
        )
    elif kind == 6:
        out = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
    elif kind == 7:
        out = ".".join(str(rng.randrange(0, 1000)) for _ in range(rng.randrange(1, 7))).encode()
    elif kind == 8:
        out = (
            b"["
            + b":".join(b"%x" % rng.randrange(1 << 16) for _ in range(rng.randrange(1, 10)))
            + b"]"
        )
    elif kind == 9:
        out = name + b"\x00" + rng.choice(BASES)
    elif kind == 10:
        out = (
            "".join(chr(rng.randrange(0x80, 0x3000)) for _ in range(rng.randrange(1, 20))).encode(
                "utf-8", "surrogatepass"
            )
            + b"."
            + name
        )
    else:
        out = b".".join(rng.choice(ODD) + rng.choice(BASES).split(b".")[0] for _ in range(3))
    return out[:max_len]


def hostile_names(rng: random.Random, n: int, max_len: int = 255) -> Iterator[bytes]:
    """``n`` hostile names of at most ``max_len`` bytes, never empty."""
    for _ in range(n):
        out = _mutate(rng, rng.choice(BASES), max_len)
        yield out or b"."


def for_header(name: bytes) -> bytes:
    """A name usable inside one header line (no CR/LF; leading spaces would be stripped)."""
    return name.replace(b"\r", b"%").replace(b"\n", b"%").strip() or b"."


def client_hello(sni: bytes) -> bytes:
    """A minimal TLS 1.2/1.3 ClientHello record whose server_name extension holds ``sni``."""
    server_name = struct.pack("!BH", 0, len(sni)) + sni
    sni_ext = struct.pack("!HHH", 0x0000, len(server_name) + 2, len(server_name)) + server_name
    groups = struct.pack("!HHHH", 0x000A, 4, 2, 0x0017)
    sig = struct.pack("!HHHH", 0x000D, 4, 2, 0x0403)
    extensions = sni_ext + groups + sig
    body = (
        b"\x03\x03"
        + os.urandom(32)
        + b"\x00"
        + struct.pack("!H", 4)
        + b"\xc0\x2f\xc0\x2b"
        + b"\x01\x00"
        + struct.pack("!H", len(extensions))
        + extensions
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake
