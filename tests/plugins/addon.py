"""pytest fixtures and builders for the in-process addon tests (``tests/test_proxy_*.py``).

``env``: an :class:`~egresswatch.proxy.addon.EgressWatch` configured in mitmproxy's ``taddons``
context with a small catalogue (``APPS``), a policy (``POLICY``), an injected registry, memory
store and clock. The builders make the flows, connections and hook data the hooks take;
``ECH_FRONT`` is a category file of one ECH front end, and :func:`write_yaml` puts such a document
into the catalogue directory.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import pytest
import yaml
from egresswatch.events import Event
from egresswatch.events import EventKind
from egresswatch.proxy.addon import EgressWatch
from egresswatch.proxy.layers import PassThrough
from egresswatch.proxy.observe import ConnState
from egresswatch.proxy.observe import Observe
from egresswatch.proxy.observe import Observer
from egresswatch.store.memory import MemoryStore
from mitmproxy import dns
from mitmproxy import http
from mitmproxy.connection import Client
from mitmproxy.connection import Server
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.events import DataReceived
from mitmproxy.proxy.layer import NextLayer
from mitmproxy.proxy.layers.tls import parse_client_hello
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from mitmproxy.test import tutils
from mitmproxy.tls import ClientHelloData
from prometheus_client import CollectorRegistry

from tests.support.quic import padding_alpn

NOW = 1_790_000_000.0  # 2026-09-21, before the exception below expires

APPS: dict[str, dict[str, Any]] = {
    "blocky": {
        "name": "Blocky <Video>",
        "domains": [{"domain": "blocked.test"}, {"domain": "xn--bcher-kva.test"}],
        "cidrs": [{"cidr": "192.0.2.0/24", "source": "tests", "confidence": "high"}],
    },
    "watchy": {
        "name": "Watchy",
        "domains": [{"domain": "watched.test"}],
        "organisations": [{"name": "Watchy Example Co., Ltd.", "source": "tests"}],
    },
    "offy": {"name": "Offy", "domains": [{"domain": "off.test"}]},
}

POLICY = """\
default: monitor
contact: "Security <sec@example.org> & co"
apps:
  blocky: block
  offy: "off"
exceptions:
  - id: EXC-1
    apps: [blocky]
    clients: [10.9.9.9/32]
    reason: Supplier contact
    approver: CISO
    ticket: SEC-1
    expires: 2026-12-31
"""


@dataclass
class Env:
    addon: EgressWatch
    tctx: Any
    registry: CollectorRegistry
    cat_dir: Path
    policy: Path
    store: MemoryStore
    clock: list[float] = field(default_factory=lambda: [NOW])

    @property
    def observe(self) -> Observe:
        return self.addon.observe

    @property
    def layers(self) -> PassThrough:
        return self.addon.layers

    @property
    def observer(self) -> Observer:
        return self.addon.observer

    def conn(self, c: Client) -> ConnState | None:
        return self.addon.observer.connection(c)

    def refused(self, c: Client) -> bool:
        """Whether ``server_connect`` will refuse the upstream connection of ``c``."""
        conn = self.conn(c)
        return conn is not None and conn.refuse

    def hits(self, app: str, action: str, signal: str, regime: str = "app") -> float:
        v = self.registry.get_sample_value(
            "egresswatch_hits_total",
            {"app": app, "regime": regime, "action": action, "signal": signal},
        )
        return v or 0.0

    def events(self, kind: EventKind = EventKind.HIT) -> list[Event]:
        pending = [e for e in self.addon.journal.pending() if e.kind == kind]
        stored = [e for e in self.store.iter_events(0, 1e12) if e.kind == kind]
        return pending + stored


@pytest.fixture
def env(tmp_path: Path, catalogue_dir: Callable[..., Path]) -> Iterator[Env]:
    d = catalogue_dir(APPS, name="cat")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    registry = CollectorRegistry()
    store = MemoryStore("memory://")
    clock = [NOW]
    a = EgressWatch(registry=registry, clock=lambda: clock[0], store_opener=lambda url: store)
    with taddons.context(a) as tctx:
        tctx.configure(
            a,
            egresswatch_bundled=False,
            egresswatch_lists=[str(d)],
            egresswatch_policy=str(policy),
            egresswatch_metrics_listen="off",
            egresswatch_store="memory://",
            egresswatch_instance="test-proxy",
            egresswatch_reload_interval=0,
        )
        e = Env(a, tctx, registry, d, policy, store, clock)
        yield e
        if a.metrics is not None:
            a.metrics.close()


# -- builders ---------------------------------------------------------------------------------


#: An ``ech-frontend`` category file: one public name that fronts ECH connections.
ECH_FRONT = {
    "id": "example-ech",
    "name": "Example ECH",
    "vendor": "Example",
    "category": "ech-frontend",
    "regimes": [],
    "domains": [
        {"domain": "ech-front.test", "match": "exact", "source": "tests", "confidence": "high"}
    ],
}


def write_yaml(path: Path, doc: object) -> None:
    """``doc`` as YAML at ``path`` (parents created), keys in their order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def client(mode: str = "regular", ip: str = "10.0.0.1") -> Client:
    c = tflow.tclient_conn()
    c.peername = (ip, 50000)
    c.proxy_mode = ProxyMode.parse(mode)
    return c


def connect_flow(host: str, c: Client | None = None) -> http.HTTPFlow:
    f = tflow.tflow(client_conn=c or client())
    f.request.method = "CONNECT"
    f.request.host = host
    f.request.port = 443
    f.request.path = ""
    f.request.authority = f"{host}:443"
    return f


def request_flow(host: str, c: Client | None = None, **headers: str) -> http.HTTPFlow:
    f = tflow.tflow(client_conn=c or client())
    f.request.host = host
    f.request.headers["host"] = host
    for k, v in headers.items():
        f.request.headers[k.replace("_", "-")] = v
    return f


def raw_client_hello(sni: str | None) -> bytes:
    ctx = ssl.create_default_context()
    if sni is None:
        ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()  # one TLS record holding the ClientHello


def hello_data(
    env: Env, sni: str | None, c: Client | None = None, server: Server | None = None
) -> ClientHelloData:
    ch = parse_client_hello(raw_client_hello(sni))
    assert ch is not None
    ctx = Context(c or client(), env.tctx.options)
    if server is not None:
        ctx.server = server
    return ClientHelloData(ctx, ch)


def server_data(c: Client, host: str, port: int = 443) -> ServerConnectionHookData:
    return ServerConnectionHookData(server=Server(address=(host, port)), client=c)


def dns_flow(name: str, qtype: int = dns.types.A) -> dns.DNSFlow:
    req = tutils.tdnsreq(questions=[dns.Question(name, qtype, dns.classes.IN)])
    return tflow.tdnsflow(req=req)


def next_layer_of(
    env: Env, c: Client, reads: list[bytes], depth: int = 3, server: str = "198.51.100.7"
) -> NextLayer:
    """A NextLayer as mitmproxy asks about it: ``depth`` layers above it (1: the proxy's own
    connection in regular mode; more: a CONNECT tunnel or a transparent-type mode)."""
    ctx = Context(c, env.tctx.options)
    ctx.server = Server(address=(server, 443))
    nl = NextLayer(ctx)
    ctx.layers.extend([nl] * depth)  # only their number matters to the addon
    nl.events = [DataReceived(c, r) for r in reads]
    return nl


def quic_initials(sni: str, padding: int = 0) -> list[bytes]:
    """The Initial datagrams of a real aioquic client (``padding`` bytes of ALPN names make the
    ClientHello span several)."""
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    alpn = ["h3", *padding_alpn(padding)]
    conn = QuicConnection(
        configuration=QuicConfiguration(is_client=True, server_name=sni, alpn_protocols=alpn)
    )
    conn.connect(("198.51.100.7", 443), now=0.0)
    return [d for d, _ in conn.datagrams_to_send(now=0.0)]
