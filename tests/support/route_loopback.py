"""Test-only mitmproxy addon: keep every upstream connection on loopback.

Load it with ``-s`` AFTER the egresswatch entry script: mitmproxy runs ``-s`` scripts in order, so
egresswatch has matched (and possibly refused) the real destination name before this addon
rewrites ``server.address`` (later hooks see the rewritten address).

- ``route_loopback`` (JSON ``{"<dest port>": ["127.0.0.1", <port>]}``): a connection to a name or
  IP on a mapped port goes to that loopback upstream; one on an unmapped port is refused, so no
  test traffic can leave 127.0.0.0/8. Loopback destinations are left alone.
- Names that ``socket.getaddrinfo`` cannot even encode (IDNA failures, NUL) are left untouched: they
  cannot reach the network, and leaving them shows what egresswatch (or mitmproxy) does with them.
- DNS mode: A/AAAA questions egresswatch did not answer get 127.0.0.1 / ::1; other types an empty
  answer, so mitmproxy's resolver never asks a real name server.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from typing import Any

from mitmproxy import dns
from mitmproxy.proxy import server_hooks

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


class RouteLoopback:
    def __init__(self) -> None:
        self.routes: dict[int, tuple[str, int]] = {}

    def load(self, loader: Any) -> None:
        loader.add_option(
            "route_loopback", str, "{}", "JSON map: destination port -> [loopback host, port]."
        )

    def configure(self, updated: set[str]) -> None:
        if "route_loopback" in updated:
            from mitmproxy import ctx

            raw = json.loads(ctx.options.route_loopback or "{}")
            self.routes = {int(k): (str(v[0]), int(v[1])) for k, v in raw.items()}

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        if data.server.error or data.server.address is None:
            return
        host, port = data.server.address[0], data.server.address[1]
        try:
            if ipaddress.ip_address(host).is_loopback:
                return
        except ValueError:
            pass
        if not reaches_network(host):
            return
        target = self.routes.get(port)
        if target is None:
            data.server.error = f"route_loopback: no loopback upstream for port {port}"
            return
        data.server.address = target

    def dns_request(self, flow: dns.DNSFlow) -> None:
        if flow.response is not None or flow.error is not None:
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
