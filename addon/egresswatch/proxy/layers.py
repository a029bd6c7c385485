"""Pass-through TLS and QUIC: decided in ``next_layer``, before mitmproxy builds its own layers.

:class:`PassThrough` is the addon holding ``next_layer`` and ``tls_clienthello``; it reads the
SNI through the shared :class:`~egresswatch.proxy.observe.Observer`. :class:`QuicHello` is the
custom layer that collects a QUIC ClientHello spanning several datagrams (mitmproxy #8338
workaround: a QUIC flow cannot be passed through once mitmproxy's QUIC layers run).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from mitmproxy import ctx
from mitmproxy import tls
from mitmproxy.connection import Client
from mitmproxy.proxy import commands as proxy_commands
from mitmproxy.proxy import events as proxy_events
from mitmproxy.proxy import layer as proxy_layer
from mitmproxy.proxy import layers as proxy_layers
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers.quic import quic_parse_client_hello_from_datagrams
from mitmproxy.proxy.layers.tls import parse_client_hello

from egresswatch.events import Signal
from egresswatch.metrics import Hook
from egresswatch.proxy import evasion
from egresswatch.proxy.names import verifiable_sni
from egresswatch.proxy.observe import PROXY_MODES
from egresswatch.proxy.observe import TRANSPARENT_MODES
from egresswatch.proxy.observe import Observer
from egresswatch.proxy.observe import Stopping
from egresswatch.proxy.observe import Verdict

__all__ = ["DECRYPT_CHOICES", "PassThrough", "QuicHello", "client_datagrams", "mitmproxy_quic"]

#: TLS interception (the ``egresswatch_decrypt`` option's choices).
DECRYPT_CHOICES = ("off", "blocked", "all")


def client_datagrams(context: Context, events: Sequence[proxy_events.Event]) -> list[bytes]:
    """The data the client sent so far, one item per read (per datagram on UDP)."""
    client = context.client
    return [
        e.data
        for e in events
        if isinstance(e, proxy_events.DataReceived) and e.connection is client
    ]


def mitmproxy_quic(context: Context) -> proxy_layer.Layer:
    """The layer stack mitmproxy's own next-layer addon builds for QUIC."""
    server = proxy_layers.ServerQuicLayer(context)
    server.child_layer = proxy_layers.ClientQuicLayer(context)
    return server


class QuicHello(proxy_layer.Layer):
    """Holds a QUIC flow's events until its ClientHello (several datagrams) is complete, then
    hands them, and every later event, to the layer ``decide`` picks for it."""

    #: A ClientHello spanning more datagrams than this is not waited for: mitmproxy decides.
    MAX_DATAGRAMS = 16

    def __init__(
        self,
        context: Context,
        decide: Callable[[Context, tls.ClientHello | None], proxy_layer.Layer],
    ) -> None:
        super().__init__(context)
        self._decide = decide
        self._events: list[proxy_events.Event] = []
        self.child: proxy_layer.Layer | None = None

    def _handle_event(self, event: proxy_events.Event) -> proxy_layer.CommandGenerator[None]:
        if self.child is not None:
            yield from self.child.handle_event(event)
            return
        self._events.append(event)
        client = self.context.client
        if isinstance(event, proxy_events.ConnectionClosed) and event.connection is client:
            yield proxy_commands.CloseConnection(client)
            return
        if not isinstance(event, proxy_events.DataReceived) or event.connection is not client:
            return
        datagrams = client_datagrams(self.context, self._events)
        try:
            hello = quic_parse_client_hello_from_datagrams(datagrams)
        except Exception:
            hello = None
        else:
            if hello is None and len(datagrams) < self.MAX_DATAGRAMS:
                return  # wait for the rest of the ClientHello
        self.child = self._decide(self.context, hello)
        events, self._events = self._events, []
        for e in events:
            yield from self.child.handle_event(e)


def close_passthrough(client: Client, server: Any) -> None:
    """Cut a pass-through connection before the buffered ClientHello reaches the server.

    Lazy strategy: ``server_connect`` refuses the connection (the caller marks it). Eager: the
    server is already connected, so close its writer first (nothing can be written after that)
    and then both connections, through mitmproxy's own connection handler.
    """
    try:
        ps = ctx.master.addons.get("proxyserver")  # type: ignore[no-untyped-call]
        handler = ps.connections.get(client.id) if ps is not None else None
    except Exception:
        handler = None
    if handler is None:
        return
    io = handler.transports.get(server)
    if io is not None and io.writer is not None:
        io.writer.close()
        handler.close_connection(server)
    if client in handler.transports:
        handler.close_connection(client)


class PassThrough:
    """The addon deciding, per TLS/QUIC connection, between pass-through, interception and block."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def next_layer(self, nextlayer: proxy_layer.NextLayer) -> None:
        """Pass-through decided before mitmproxy builds TLS or QUIC layers.

        Script addons see ``next_layer`` before mitmproxy's own next-layer addon, so a
        connection that egresswatch would pass through anyway can get its raw relay here, the
        way ``--ignore-hosts`` does it, instead of after ``tls_clienthello``:

        - TLS over TCP (``egresswatch_decrypt=off``, or ``blocked`` for names not blocked): the
          SNI is read from the ClientHello already buffered, counted, and the connection goes
          to a raw TCP relay. mitmproxy then builds no TLS layers and runs no ``tls_clienthello``
          for it, which is most of the cost of reading SNI (``bench/proxy.py``: the ``hook``
          config). Blocked names, block pages, decryption and a ClientHello that is not complete
          yet take the ``tls_clienthello`` path as before.
        - QUIC (transparent-type modes): mitmproxy 12.3.1 cannot pass a QUIC connection through
          once its QUIC layers run: ``ignore_connection`` in ``tls_clienthello`` stalls it for
          good (mitmproxy #8338). So the SNI is read from the Initial datagrams here (collected
          by :class:`QuicHello` when the ClientHello spans several), counted, and the flow goes
          to a raw UDP relay: untouched when monitored, refused at ``server_connect`` (nothing
          reaches the server) when blocked. With ``egresswatch_decrypt=all`` a flow that is not
          blocked goes to mitmproxy's QUIC interception.

        The proxy's own connections in regular, upstream and reverse modes (the explicit proxy
        protocol, an HTTPS proxy's TLS, a reverse proxy's TLS) are left to mitmproxy.
        """
        if nextlayer.layer is not None:
            return
        context = nextlayer.context
        client = context.client
        mode = client.proxy_mode.type_name
        if mode == "reverse" or (len(context.layers) <= 1 and mode in PROXY_MODES):
            return
        with self.observer.guard(Hook.NEXT_LAYER):
            if client.transport_protocol == "tcp":
                self._tls_passthrough(nextlayer, context)
                return
            if mode not in TRANSPARENT_MODES:
                return
            datagrams = client_datagrams(context, nextlayer.events)
            if not datagrams or not datagrams[0] or not datagrams[0][0] & 0x80:
                return  # no QUIC long header: not a QUIC Initial
            try:
                hello = quic_parse_client_hello_from_datagrams(datagrams)
            except Exception:  # not QUIC after all, or a broken Initial: mitmproxy decides
                return
            if hello is None:
                nextlayer.layer = QuicHello(context, self.quic_layer)
            else:
                nextlayer.layer = self.quic_layer(context, hello)

    def _tls_passthrough(self, nextlayer: proxy_layer.NextLayer, context: Context) -> None:
        obs = self.observer
        if obs.settings.decrypt == "all":
            return
        conn = obs.connection(context.client)
        if conn is not None and conn.block_page is not None:
            return
        data = b"".join(client_datagrams(context, nextlayer.events))
        if not data or data[0] != 0x16:  # not a TLS handshake record
            return
        try:
            hello = parse_client_hello(data)
        except Exception:  # not a ClientHello: mitmproxy decides
            return
        if hello is None:
            return  # incomplete: tls_clienthello will see the whole of it
        try:
            v = obs.observe(hello.sni, Signal.SNI, context.client)
            v = self.nameless(context, hello, v, count=True)
        except Stopping:
            return  # tls_clienthello refuses it
        if v is not None and v.blocked:
            # tls_clienthello blocks it; it finds this verdict (one hit) and counts no second
            # inspection of the same name.
            obs.conn_state(context.client).sni_counted = True
            return
        nextlayer.layer = proxy_layers.TCPLayer(context, ignore=True)

    def nameless(
        self,
        context: Context,
        hello: tls.ClientHello,
        v: Verdict | None,
        *,
        count: bool,
        why: str = "TLS without SNI",
    ) -> Verdict | None:
        """After the SNI: the ECH verdict (``evasion.ech``; ``count``: count a GREASE/capable
        extension, once per connection) and, for a ClientHello that names nothing usable (no
        SNI, or a hidden ECH name), the DNS correlation of its destination address. Returns the
        verdict that decides (a block first)."""
        obs = self.observer
        st = obs.state
        if st is None:
            return v
        hidden = evasion.ech(obs, st, hello, context, count=count)
        if v is None and (hidden is not None or not hello.sni):
            v = self.correlate(context, "ECH hides the name" if hidden is not None else why)
        if hidden is not None and (v is None or (hidden.blocked and not v.blocked)):
            return hidden
        return v

    def correlate(self, context: Context, why: str) -> Verdict | None:
        """A connection whose ClientHello names nothing: its destination address, if a
        designated name resolved to it (``DnsWatch.correlate``)."""
        correlator = self.observer.correlator
        server = context.server.address
        if correlator is None or server is None:
            return None
        return correlator(server[0], context.client, why)

    def quic_layer(self, context: Context, hello: tls.ClientHello | None) -> proxy_layer.Layer:
        """The layer for a QUIC flow once its ClientHello is known (None: it never parsed)."""
        if hello is None:
            return mitmproxy_quic(context)
        obs = self.observer
        try:
            v = obs.observe(hello.sni, Signal.QUIC, context.client)
            v = self.nameless(context, hello, v, count=True, why="QUIC Initial without SNI")
        except Stopping:
            obs.conn_state(context.client).refuse = True
            return proxy_layers.UDPLayer(context, ignore=True)
        if v is not None and v.blocked:
            obs.conn_state(context.client).refuse = True
        elif obs.settings.decrypt == "all" and verifiable_sni(hello.sni):
            return mitmproxy_quic(context)
        return proxy_layers.UDPLayer(context, ignore=True)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        obs = self.observer
        with obs.guard(Hook.TLS_CLIENTHELLO):
            client = data.context.client
            sni = data.client_hello.sni
            quic = client.transport_protocol == "udp"
            conn = obs.connection(client)
            seen = conn is not None and conn.sni_counted
            if seen and conn is not None:
                conn.sni_counted = False
            try:
                v = obs.observe(
                    sni, Signal.QUIC if quic else Signal.SNI, client, inspected=not seen
                )
                v = self.nameless(data.context, data.client_hello, v, count=not seen)
            except Stopping:
                obs.conn_state(client).refuse = True
                data.ignore_connection = True
                close_passthrough(client, data.context.server)
                return
            conn = obs.connection(client)
            page = conn.block_page if conn is not None else None
            blocked = v if v is not None and v.blocked else page
            verifiable = verifiable_sni(sni)
            decrypt = obs.settings.decrypt
            if blocked is not None:
                conn = obs.conn_state(client)
                conn.refuse = True
                if quic or decrypt == "off" or not verifiable:
                    data.ignore_connection = True
                    close_passthrough(client, data.context.server)
                    return
                # Intercept to serve the block page; never open the upstream connection.
                conn.block_page = blocked
                return
            if decrypt != "all" or not verifiable:
                data.ignore_connection = True
