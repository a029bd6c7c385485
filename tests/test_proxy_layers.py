"""``egresswatch.proxy.layers``: TLS/QUIC pass-through (``next_layer``, ``tls_clienthello``, the
QUIC ClientHello collector) and interception for block pages."""

from __future__ import annotations

import json
from typing import Any

from egresswatch.proxy.layers import QuicHello
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from mitmproxy.connection import Client
from mitmproxy.connection import Server
from mitmproxy.proxy.events import DataReceived
from mitmproxy.proxy.events import Start
from mitmproxy.proxy.layers import TCPLayer
from mitmproxy.proxy.layers import UDPLayer

from tests.plugins.addon import Env
from tests.plugins.addon import client
from tests.plugins.addon import connect_flow
from tests.plugins.addon import hello_data
from tests.plugins.addon import next_layer_of
from tests.plugins.addon import quic_initials
from tests.plugins.addon import raw_client_hello
from tests.plugins.addon import request_flow
from tests.plugins.addon import server_data


class FakeHandler:
    def __init__(self, c: Client, s: Server) -> None:
        self.transports: dict[Any, Any] = {c: object(), s: _IO()}
        self.closed: list[Any] = []

    def close_connection(self, conn: Any, half_close: bool = False) -> None:
        self.closed.append(conn)


class _IO:
    def __init__(self) -> None:
        self.writer = _Writer()


class _Writer:
    closing = False

    def close(self) -> None:
        self.closing = True


class FakeProxyserver:
    name = "proxyserver"

    def __init__(self) -> None:
        self.connections: dict[str, FakeHandler] = {}


def test_sni_monitor_passes_through(env: Env) -> None:
    data = hello_data(env, "WATCHED.test")
    env.layers.tls_clienthello(data)
    assert data.ignore_connection is True
    assert env.hits("watchy", "monitor", "sni", "default") == 1


def test_no_sni_passes_through_uncounted(env: Env) -> None:
    data = hello_data(env, None)
    env.layers.tls_clienthello(data)
    assert data.ignore_connection is True and env.events() == []


def test_sni_block_closes_before_server_bytes_eager(env: Env) -> None:
    c = client("socks5")
    server = Server(address=("198.51.100.7", 443))
    ps = FakeProxyserver()
    h = FakeHandler(c, server)
    ps.connections[c.id] = h
    env.tctx.master.addons.add(ps)
    data = hello_data(env, "video.blocked.test", c, server)
    env.layers.tls_clienthello(data)
    assert data.ignore_connection is True
    assert h.transports[server].writer.closing  # nothing can be written to the server
    assert h.closed == [server, c]
    assert env.hits("blocky", "blocked", "sni") == 1


def test_sni_block_lazy_refuses_server_connect(env: Env) -> None:
    c = client("transparent")
    data = hello_data(env, "blocked.test", c)
    env.layers.tls_clienthello(data)
    assert data.ignore_connection is True
    sd = server_data(c, "203.0.113.9")
    env.observe.server_connect(sd)
    assert sd.server.error == "egresswatch: blocked by policy"


def test_quic_block_is_dropped(env: Env) -> None:
    c = client("wireguard")
    c.transport_protocol = "udp"
    env.tctx.configure(env.addon, egresswatch_decrypt="blocked")
    data = hello_data(env, "blocked.test", c)
    env.layers.tls_clienthello(data)
    assert data.ignore_connection is True
    assert env.refused(c)
    assert env.hits("blocky", "blocked", "quic") == 1


# -- next_layer: pass-through decided before mitmproxy's TLS / QUIC layers ------------------------


def test_next_layer_passes_tls_through_before_the_tls_layers(env: Env) -> None:
    c = client("regular")
    nl = next_layer_of(env, c, [raw_client_hello("watched.test")])
    env.layers.next_layer(nl)
    assert isinstance(nl.layer, TCPLayer) and nl.layer.flow is None  # ignored: raw relay
    assert env.hits("watchy", "monitor", "sni", "default") == 1
    # tls_clienthello, should mitmproxy still ask, finds the same verdict: counted once.
    env.layers.tls_clienthello(hello_data(env, "watched.test", c))
    assert env.hits("watchy", "monitor", "sni", "default") == 1


def test_next_layer_leaves_blocks_and_special_cases_to_tls_clienthello(env: Env) -> None:
    blocked = next_layer_of(env, c := client("transparent"), [raw_client_hello("blocked.test")])
    env.layers.next_layer(blocked)
    assert blocked.layer is None  # mitmproxy builds the TLS layers; tls_clienthello blocks
    assert env.hits("blocky", "blocked", "sni") == 1
    data = hello_data(env, "blocked.test", c)
    env.layers.tls_clienthello(data)
    assert data.ignore_connection is True and env.refused(c)
    assert env.hits("blocky", "blocked", "sni") == 1
    inspected = env.registry.get_sample_value("egresswatch_inspected_total", {"signal": "sni"})
    assert inspected == 1  # one name, examined once, though both hooks looked at it
    hello = raw_client_hello("watched.test")
    cases = {
        "proxy's own connection": next_layer_of(env, client("regular"), [hello], depth=1),
        "reverse proxy": next_layer_of(env, client("reverse:https://example.test"), [hello]),
        "incomplete ClientHello": next_layer_of(env, client(), [hello[:40]]),
        "not TLS": next_layer_of(env, client(), [b"GET / HTTP/1.1\r\n\r\n"]),
        "no data yet": next_layer_of(env, client(), []),
    }
    for why, nl in cases.items():
        env.layers.next_layer(nl)
        assert nl.layer is None, why
    env.tctx.configure(env.addon, egresswatch_decrypt="all")
    nl = next_layer_of(env, client(), [hello])
    env.layers.next_layer(nl)
    assert nl.layer is None  # decrypting everything: mitmproxy's TLS layers
    assert env.hits("watchy", "monitor", "sni", "default") == 0  # not counted here then


def test_next_layer_quic_monitored_goes_to_a_raw_udp_relay(env: Env) -> None:
    c = client("wireguard")
    c.transport_protocol = "udp"
    nl = next_layer_of(env, c, quic_initials("watched.test"))
    env.layers.next_layer(nl)
    assert isinstance(nl.layer, UDPLayer) and nl.layer.flow is None
    assert env.hits("watchy", "monitor", "quic", "default") == 1
    assert not env.refused(c)


def test_next_layer_quic_blocked_is_refused_upstream(env: Env) -> None:
    c = client("wireguard")
    c.transport_protocol = "udp"
    nl = next_layer_of(env, c, quic_initials("video.blocked.test"))
    env.layers.next_layer(nl)
    assert isinstance(nl.layer, UDPLayer)
    assert env.refused(c)  # server_connect refuses: not one datagram upstream
    sd = server_data(c, "198.51.100.7")
    env.observe.server_connect(sd)
    assert sd.server.error == "egresswatch: blocked by policy"
    assert env.hits("blocky", "blocked", "quic") == 1


def test_next_layer_quic_hello_over_several_datagrams_is_collected(env: Env) -> None:
    c = client("wireguard")
    c.transport_protocol = "udp"
    initials = quic_initials("watched.test", padding=4000)
    assert len(initials) >= 3
    nl = next_layer_of(env, c, initials[:1])
    env.layers.next_layer(nl)
    waiting = nl.layer
    assert isinstance(waiting, QuicHello)
    assert env.hits("watchy", "monitor", "quic", "default") == 0
    # mitmproxy replays what NextLayer saw into the new layer, then the rest arrives through it;
    # the decision comes with the last piece.
    for e in [Start(), *nl.events]:
        assert list(waiting.handle_event(e)) == []
    cmds = [list(waiting.handle_event(DataReceived(c, d))) for d in initials[1:]]
    assert isinstance(waiting.child, UDPLayer)
    assert env.hits("watchy", "monitor", "quic", "default") == 1
    assert any(cmds[-1])  # the relay started (it asks to open the server connection)


def test_next_layer_leaves_dns_and_other_udp_to_mitmproxy(env: Env) -> None:
    c = client("wireguard")
    c.transport_protocol = "udp"
    # A DNS query for blocked.test (header, question), as a WireGuard client sends it.
    query = (
        b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07blocked\x04test\x00\x00\x01\x00\x01"
    )
    for reads in ([query], [b"\xc0garbage that is not QUIC"]):
        nl = next_layer_of(env, c, reads)
        env.layers.next_layer(nl)
        assert nl.layer is None
    assert env.events() == []


def _corrupt_hello(flips: list[tuple[int, int]]) -> bytes:
    hello = bytearray(raw_client_hello("a.test"))
    for pos, value in flips:
        hello[pos % len(hello) or 5] = value
    return bytes(hello)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    transport=st.sampled_from(["tcp", "udp"]),
    reads=st.lists(
        st.one_of(
            st.binary(max_size=300),
            # Starts that take the parsers furthest: a TLS handshake record, a QUIC long header.
            st.binary(max_size=300).map(lambda b: b"\x16\x03\x01" + b),
            st.binary(max_size=1300).map(lambda b: b"\xc0\x00\x00\x00\x01" + b),
            st.binary(min_size=5, max_size=200).map(lambda b: raw_client_hello("a.test")[:5] + b),
            # A whole ClientHello record with some bytes of its body overwritten.
            st.lists(st.tuples(st.integers(5, 250), st.integers(0, 255)), min_size=1).map(
                _corrupt_hello
            ),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_next_layer_survives_arbitrary_client_bytes(
    env: Env, transport: str, reads: list[bytes]
) -> None:
    """Whatever the client sends first, next_layer decides or defers without an error."""
    c = client("wireguard" if transport == "udp" else "transparent")
    c.transport_protocol = transport  # type: ignore[assignment]
    nl = next_layer_of(env, c, reads)
    env.layers.next_layer(nl)
    assert nl.layer is None or isinstance(nl.layer, (TCPLayer, UDPLayer, QuicHello))
    errors = env.registry.get_sample_value("egresswatch_hook_errors_total", {"hook": "next_layer"})
    assert errors == 0.0


# -- decryption ------------------------------------------------------------------------------


def test_decrypt_blocked_intercepts_only_blocked(env: Env) -> None:
    env.tctx.configure(env.addon, egresswatch_decrypt="blocked")
    mon = hello_data(env, "watched.test")
    env.layers.tls_clienthello(mon)
    assert mon.ignore_connection is True
    c = client()
    blk = hello_data(env, "blocked.test", c)
    env.layers.tls_clienthello(blk)
    assert blk.ignore_connection is False  # intercepted, to show the block page
    sd = server_data(c, "blocked.test")
    env.observe.server_connect(sd)
    assert sd.server.error is not None  # and never connected upstream
    f = request_flow("blocked.test", c, accept="text/html")
    env.observe.requestheaders(f)
    assert f.response is not None and f.response.status_code == 403
    assert b"Blocky &lt;Video&gt;" in f.response.content
    assert [e.app for e in env.events()] == ["watchy", "blocky"]  # SNI + Host: one blocky hit


def test_decrypt_blocked_connect_opens_tunnel_for_block_page(env: Env) -> None:
    env.tctx.configure(env.addon, egresswatch_decrypt="blocked")
    c = client()
    f = connect_flow("blocked.test", c)
    env.observe.http_connect(f)
    assert f.response is not None and f.response.status_code == 200
    data = hello_data(env, "blocked.test", c)
    env.layers.tls_clienthello(data)
    assert data.ignore_connection is False
    r = request_flow("blocked.test", c, accept="application/json")
    env.observe.requestheaders(r)
    assert r.response is not None and r.response.status_code == 403
    doc = json.loads(r.response.content or b"")
    assert doc["app"] == "blocky" and doc["event_id"] == env.events()[0].event_id


def test_decrypt_all_passes_through_unverifiable_names(env: Env) -> None:
    env.tctx.configure(env.addon, egresswatch_decrypt="all")
    ok = hello_data(env, "example.org")
    env.layers.tls_clienthello(ok)
    assert ok.ignore_connection is False
    odd = hello_data(env, "example.org.")
    env.layers.tls_clienthello(odd)
    assert odd.ignore_connection is True
