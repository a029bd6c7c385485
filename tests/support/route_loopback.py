"""Test-only mitmproxy addon: every upstream connection mitmdump opens goes to a loopback server.

mitmproxy opens server connections with ``asyncio.open_connection(*server.address)`` in
``mitmproxy.proxy.server``; this addon swaps that module's ``asyncio`` for a thin wrapper whose
``open_connection`` translates the destination. The flow keeps its real destination
(``server.address`` is untouched), so egresswatch and every hook see what the client asked for,
and mitmproxy's connection reuse, which compares addresses, still works for keep-alive.

- ``route_loopback`` (JSON ``{"<dest port>": ["127.0.0.1", <port>]}``): a connection to a name or
  IP on a mapped port goes to that loopback server; any other destination fails with an
  ``OSError`` (mitmproxy answers 502 / a SOCKS error), so no test traffic leaves 127.0.0.0/8.
  Loopback destinations are left alone.
- ``route_loopback_udp`` (same format): the same for UDP (QUIC) server connections, which
  mitmproxy opens with ``mitmproxy_rs.udp.open_udp_connection``; unmapped ones fail likewise.
- Names that ``socket.getaddrinfo`` cannot even encode (IDNA failures, NUL) are passed on
  unchanged: they cannot reach the network, and leaving them shows what mitmproxy does with them.
- DNS mode: A/AAAA questions that egresswatch did not answer get 127.0.0.1 / ::1, other types an
  empty answer, so mitmproxy's resolver never asks a real name server. Load this script after the
  egresswatch entry script (``-s`` scripts run in order) so egresswatch sees the query first.
  ``route_loopback_dns=false`` leaves DNS alone (a ``reverse:dns://`` mode to a loopback
  resolver answers instead).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import types
from typing import Any

import mitmproxy_rs
from mitmproxy import ctx
from mitmproxy import dns
from mitmproxy.proxy import server as proxy_server

logger = logging.getLogger(__name__)


def reaches_network(host: str) -> bool:
    """Whether ``asyncio.open_connection(host, …)`` would get as far as a DNS lookup."""
    if "\x00" in host:
        return False
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


class _RoutedAsyncio(types.ModuleType):
    """``asyncio`` as seen by ``mitmproxy.proxy.server``, with a routing ``open_connection``."""

    def __init__(self, route: RouteLoopback) -> None:
        super().__init__("asyncio")
        self._route = route

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def open_connection(self, host: Any = None, port: Any = None, **kw: Any) -> Any:
        target = self._route.translate(host, port)
        return await asyncio.open_connection(*target, **kw)


class _RoutedUdp(types.ModuleType):
    """``mitmproxy_rs.udp`` with a routing ``open_udp_connection``."""

    def __init__(self, route: RouteLoopback) -> None:
        super().__init__("mitmproxy_rs.udp")
        self._route = route

    def __getattr__(self, name: str) -> Any:
        return getattr(mitmproxy_rs.udp, name)

    async def open_udp_connection(self, host: Any, port: Any, **kw: Any) -> Any:
        target = self._route.translate(host, port, self._route.udp_routes)
        return await mitmproxy_rs.udp.open_udp_connection(*target, **kw)


class _RoutedRs(types.ModuleType):
    """``mitmproxy_rs`` as seen by ``mitmproxy.proxy.server``, with a routing ``udp``."""

    def __init__(self, route: RouteLoopback) -> None:
        super().__init__("mitmproxy_rs")
        self.udp = _RoutedUdp(route)

    def __getattr__(self, name: str) -> Any:
        return getattr(mitmproxy_rs, name)


class RouteLoopback:
    def __init__(self) -> None:
        self.routes: dict[int, tuple[str, int]] = {}
        self.udp_routes: dict[int, tuple[str, int]] = {}

    def load(self, loader: Any) -> None:
        loader.add_option(
            "route_loopback", str, "{}", "JSON map: destination port -> [loopback host, port]."
        )
        loader.add_option(
            "route_loopback_dns", bool, True, "Answer DNS queries egresswatch did not answer."
        )
        loader.add_option(
            "route_loopback_udp", str, "{}", "JSON map for UDP: destination port -> [host, port]."
        )
        proxy_server.asyncio = _RoutedAsyncio(self)  # type: ignore[attr-defined]
        proxy_server.mitmproxy_rs = _RoutedRs(self)  # type: ignore[attr-defined]

    def done(self) -> None:
        proxy_server.asyncio = asyncio  # type: ignore[attr-defined]
        proxy_server.mitmproxy_rs = mitmproxy_rs  # type: ignore[attr-defined]

    def configure(self, updated: set[str]) -> None:
        if "route_loopback" in updated:
            raw = json.loads(ctx.options.route_loopback or "{}")
            self.routes = {int(k): (str(v[0]), int(v[1])) for k, v in raw.items()}
        if "route_loopback_udp" in updated:
            raw = json.loads(ctx.options.route_loopback_udp or "{}")
            self.udp_routes = {int(k): (str(v[0]), int(v[1])) for k, v in raw.items()}

    def translate(
        self, host: Any, port: Any, routes: dict[int, tuple[str, int]] | None = None
    ) -> tuple[Any, Any]:
        if not isinstance(host, str):
            return host, port
        try:
            if ipaddress.ip_address(host).is_loopback:
                return host, port
        except ValueError:
            pass
        if not reaches_network(host):
            return host, port
        target = (self.routes if routes is None else routes).get(port)
        if target is None:
            raise OSError(f"route_loopback: no loopback upstream for {host}:{port}")
        return target

    def dns_request(self, flow: dns.DNSFlow) -> None:
        if (
            flow.response is not None
            or flow.error is not None
            or not ctx.options.route_loopback_dns
        ):
            return
        q = flow.request.question
        if q is None:
            flow.response = flow.request.fail(dns.response_codes.REFUSED)
        elif q.type == dns.types.A:
            flow.response = flow.request.succeed(
                [dns.ResourceRecord.A(q.name, ipaddress.IPv4Address("127.0.0.1"))]
            )
        elif q.type == dns.types.AAAA:
            flow.response = flow.request.succeed(
                [dns.ResourceRecord.AAAA(q.name, ipaddress.IPv6Address("::1"))]
            )
        else:
            flow.response = flow.request.succeed([])


addons = [RouteLoopback()]
