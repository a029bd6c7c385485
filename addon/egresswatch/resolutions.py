"""What the proxy learnt from DNS answers: CNAME chains and the addresses of designated names.

Where the proxy sees DNS (dns, transparent, WireGuard and local modes), an answer tells it two
things a later connection may not:

* **The chain.** ``cdn.example.net`` may be a CNAME for ``v16.tiktokcdn.com``: the query names a
  neutral host, the answer a designated one. :func:`follow_chain` walks the answer's CNAME
  records from the question to the final name, refusing loops and chains longer than
  ``MAX_CHAIN``, and returns the names in order with the final addresses and their TTLs.
* **The addresses.** A client that resolved a designated name and then connects to the address
  (an IP-literal CONNECT or SOCKS5 target, TLS without SNI or with an ECH outer name, a QUIC
  Initial without SNI) names nothing the matcher can use. :class:`ResolutionTable` remembers,
  for each answer address of a designated name, which app and which name it was, for the
  answer's TTL (clamped), in bounded memory: the least recently used entry goes first, and the
  table counts its evictions. The clock is injected.

>>> t = ResolutionTable(max_entries=2, clock=lambda: 100.0)
>>> t.remember("203.0.113.7", Resolution("tiktok", "v16.tiktokcdn.com", ("cdn.example.net",
...            "v16.tiktokcdn.com")), ttl=60)
>>> t.lookup("203.0.113.7").app
'tiktok'
>>> t.lookup("203.0.113.8") is None
True
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "MAX_CHAIN",
    "Answer",
    "Chain",
    "Resolution",
    "ResolutionTable",
    "follow_chain",
]

#: Longest CNAME chain followed (resolvers stop around 8 to 16; RFC 1034 sets no limit).
MAX_CHAIN = 16


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer record as the proxy saw it: owner name, type (``A``, ``AAAA``, ``CNAME``,
    other), value (an address or a target name) and TTL in seconds."""

    name: str
    type: str
    value: str
    ttl: int


@dataclass(frozen=True, slots=True)
class Chain:
    """The question's CNAME chain (``names[0]`` is the question) and the final name's
    addresses with their TTLs. ``broken`` says why the walk stopped early (loop, too long)."""

    names: tuple[str, ...]
    addresses: tuple[tuple[str, int], ...]
    broken: str | None = None


@dataclass(frozen=True, slots=True)
class Resolution:
    """Who an address belongs to: the app, the designated name that resolved to it, and the
    chain from the name the client asked for."""

    app: str
    name: str
    chain: tuple[str, ...]


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


def _address(kind: str, value: str) -> str | None:
    """``value`` in compressed form if it is an address of the record's kind (A: IPv4, AAAA:
    IPv6), else None. IPv4 goes through ``inet_pton`` (strict dotted quad; a tenth of what
    ``ipaddress`` costs: answers carry many)."""
    if kind == "A":
        try:
            return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, value))
        except (OSError, ValueError):
            return None
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    return ip.compressed if ip.version == 6 else None


def follow_chain(question: str, answers: Iterable[Answer], max_chain: int = MAX_CHAIN) -> Chain:
    """Walk CNAMEs from ``question`` through ``answers``; collect the last name's addresses.

    Records that do not hang off the chain (a forged or stray answer for another name) are
    ignored, and so are address values that are not IP addresses.
    """
    cnames: dict[str, str] = {}
    addrs: dict[str, list[tuple[str, int]]] = {}
    for a in answers:
        owner = _norm(a.name)
        kind = a.type.upper()
        if kind == "CNAME":
            cnames.setdefault(owner, _norm(a.value))
        elif kind in ("A", "AAAA"):
            address = _address(kind, a.value)
            if address is not None:
                addrs.setdefault(owner, []).append((address, max(0, int(a.ttl))))
    names = [_norm(question)]
    seen = {names[0]}
    broken = None
    while names[-1] in cnames:
        target = cnames[names[-1]]
        if target in seen:
            broken = f"CNAME loop at {target}"
            break
        if len(names) > max_chain:
            broken = f"CNAME chain longer than {max_chain}"
            break
        names.append(target)
        seen.add(target)
    return Chain(tuple(names), tuple(addrs.get(names[-1], ())), broken)


class ResolutionTable:
    """Address -> :class:`Resolution`, each for its TTL, at most ``max_entries`` (LRU out)."""

    def __init__(
        self,
        max_entries: int = 100_000,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_ttl: float = 30.0,
        max_ttl: float = 3600.0,
    ) -> None:
        if max_entries < 1:
            raise ValueError("the resolution table needs room for at least one entry")
        self.max_entries = max_entries
        self._clock = clock
        self._min_ttl, self._max_ttl = min_ttl, max_ttl
        self._entries: OrderedDict[str, tuple[float, Resolution]] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, address: str, resolution: Resolution, ttl: float) -> None:
        """Attribute ``address`` to ``resolution`` for ``ttl`` seconds (clamped to the table's
        bounds: a 0-second TTL still covers the connection that follows the answer)."""
        expires = self._clock() + min(max(ttl, self._min_ttl), self._max_ttl)
        entries = self._entries
        if address in entries:
            entries.move_to_end(address)
        entries[address] = (expires, resolution)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
            self.evictions += 1

    def lookup(self, address: str) -> Resolution | None:
        """The live resolution of ``address`` (an IP literal in compressed form), if any."""
        item = self._entries.get(address)
        if item is None:
            return None
        expires, resolution = item
        if expires <= self._clock():
            del self._entries[address]
            return None
        self._entries.move_to_end(address)
        return resolution

    def expire(self) -> int:
        """Drop expired entries (a periodic task, off the hot path); returns how many."""
        now = self._clock()
        dead = [a for a, (expires, _) in self._entries.items() if expires <= now]
        for a in dead:
            del self._entries[a]
        return len(dead)
