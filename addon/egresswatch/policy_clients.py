"""Who a policy applies to: departments by client network, the exceptions register, and the
client-address parsing and longest-prefix tables both use (:mod:`egresswatch.policy` decides)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime

from egresswatch.config_events import ExceptionDetail
from egresswatch.timeutil import as_utc

__all__ = ["Department", "ExceptionRule", "IPAddress", "IPNetwork", "PrefixTable", "parse_client"]

type IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
type IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Department:
    """A department name and the client networks that belong to it."""

    name: str
    cidrs: tuple[str, ...]


@dataclass(frozen=True)
class ExceptionRule:
    """One entry of the exceptions register.

    It applies to a hit on any of ``apps`` (or any app of ``regimes``) when every criterion it
    lists holds: the client address is in one of ``clients`` (if any are listed) and the proxy
    user is one of ``users`` (if any are listed), and ``now < expires``. ``expires`` is the
    instant the exception stops applying (a date in the file means the end of that day, UTC).
    """

    id: str
    reason: str
    approver: str
    expires: datetime
    apps: tuple[str, ...] = ()
    regimes: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    ticket: str | None = None
    line: int | None = None
    expires_text: str = ""  # as written in the file (a date means the end of that day, UTC)
    _networks: tuple[tuple[int, int, int], ...] = field(default=(), repr=False, compare=False)
    _users: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.clients and not self.users:
            raise ValueError(f"exception {self.id}: a blanket exception (no clients, no users)")
        if not self.apps and not self.regimes:
            raise ValueError(f"exception {self.id}: lists neither apps nor regimes")
        if self.expires.tzinfo is None:
            object.__setattr__(self, "expires", self.expires.replace(tzinfo=UTC))
        # (version, mask, network) integers: membership is one AND and one compare
        nets = tuple(
            (n.version, int(n.netmask), int(n.network_address))
            for n in (ipaddress.ip_network(c) for c in self.clients)
        )
        object.__setattr__(self, "_networks", nets)
        object.__setattr__(self, "_users", frozenset(self.users))

    def in_force(self, now: datetime) -> bool:
        """Whether the exception still applies at ``now`` (it stops at ``expires``)."""
        return as_utc(now) < self.expires

    def covers(self, address: IPAddress | None, user: str | None) -> bool:
        """Whether the client (address and proxy user) is within the exception's scope."""
        if self._networks:
            if address is None:
                return False
            version, value = address.version, int(address)
            if not any(v == version and value & m == n for v, m, n in self._networks):
                return False
        return not self._users or (user is not None and user in self._users)

    def detail(self) -> ExceptionDetail:
        """As stored in the event store's CONFIG rows.

        ``expires`` is the expiry as written (``2026-12-31``); ``expires_at`` the instant it
        stops applying, in ISO form with its UTC offset (``2027-01-01T00:00:00+00:00``).
        """
        return ExceptionDetail(
            id=self.id,
            apps=tuple(self.apps),
            regimes=tuple(self.regimes),
            clients=tuple(self.clients),
            users=tuple(self.users),
            reason=self.reason,
            approver=self.approver,
            ticket=self.ticket,
            expires=self.expires_text or self.expires.isoformat(),
            expires_at=self.expires.isoformat(),
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-able form of :meth:`detail`."""
        return self.detail().to_detail()


def parse_client(raw: str | None) -> IPAddress | None:
    """A client address as mitmproxy reports it, unwrapped from IPv4-mapped IPv6; None if unusable.

    >>> parse_client("::ffff:10.1.2.3"), parse_client("[fd00::1]"), parse_client("nope")
    (IPv4Address('10.1.2.3'), IPv6Address('fd00::1'), None)
    """
    if not raw:
        return None
    if ":" not in raw:  # fast path: most clients are IPv4
        try:
            return ipaddress.IPv4Address(raw)
        except ValueError:
            return None
    if raw.startswith("[") and raw.endswith("]"):
        raw = raw[1:-1]
    try:
        addr = ipaddress.ip_address(raw)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr.scope_id is not None:
            addr = ipaddress.IPv6Address(int(addr))
    return addr


class PrefixTable:
    """Longest-prefix lookup over integer networks, one dict per distinct prefix length.

    A lookup costs one mask and one dict probe per distinct prefix length in use, whatever the
    number of networks.
    """

    def __init__(self, bits: int, entries: Iterable[tuple[IPNetwork, str]]) -> None:
        by_len: dict[int, dict[int, str]] = {}
        for net, name in entries:
            by_len.setdefault(net.prefixlen, {})[int(net.network_address)] = name
        full = (1 << bits) - 1
        self._buckets = tuple(
            (full ^ ((1 << (bits - plen)) - 1), by_len[plen])
            for plen in sorted(by_len, reverse=True)
        )

    def lookup(self, value: int) -> str | None:
        for mask, nets in self._buckets:
            name = nets.get(value & mask)
            if name is not None:
                return name
        return None
