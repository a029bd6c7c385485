"""``bench/load.py``: the replayed TLS session is a real one, and the proxy does for a replayed
CONNECT what it does for a real handshake: the same events and metrics per connection, and the
session's bytes pass through unchanged both ways."""

from __future__ import annotations

import socket
import ssl
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy.proxy.layers.tls import parse_client_hello

from bench import load as bl
from tests.plugins.proxy import ProxyFactory
from tests.plugins.proxy import RunningProxy
from tests.support.clients import read_http_response
from tests.support.upstreams import UpstreamPKI
from tests.support.upstreams import make_test_pki


def test_the_captured_session_is_real_tls_for_the_hit_name(test_pki: UpstreamPKI) -> None:
    f = bl.capture_tls(bl.HIT_HOST, test_pki.ca_cert, test_pki.cert, test_pki.key)
    hello = parse_client_hello(f.client_hello)
    assert hello is not None and hello.sni == bl.HIT_HOST
    assert hello.alpn_protocols == [b"http/1.1"]
    # Every flight is TLS records: handshake from the client, then handshake from the server,
    # then (TLS 1.3 hides the rest) application-data records both ways.
    assert f.client_hello[0] == 0x16 and f.server_hello[0] == 0x16
    assert f.client_finish[0] in (0x14, 0x17) and f.server_final[0] == 0x17
    assert len(f.server_hello) > 300  # the certificate travels in it
    assert bl.HTTP_RESPONSE not in f.server_final  # encrypted


def test_the_capture_verifies_the_certificate(test_pki: UpstreamPKI, tmp_path: Path) -> None:
    other = make_test_pki(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        bl.capture_tls(bl.HIT_HOST, other.ca_cert, test_pki.cert, test_pki.key)


def test_flights_round_trip_through_their_file(test_pki: UpstreamPKI, tmp_path: Path) -> None:
    f = bl.capture_tls(bl.HIT_HOST, test_pki.ca_cert, test_pki.cert, test_pki.key)
    f.save(tmp_path / "f.json")
    assert bl.Flights.load(tmp_path / "f.json") == f


# -- against a real proxy -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def load(tmp_path_factory: pytest.TempPathFactory) -> Iterator[bl.Load]:
    ld = bl.Load(tmp_path_factory.mktemp("load"), procs=1)
    yield ld
    ld.close()


def real_tls_connect(port: int, ca: Path) -> None:
    """What ``bench/proxy.py`` does: CONNECT, a verified TLS handshake, one request."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"CONNECT {bl.HIT_HOST}:443 HTTP/1.1\r\nHost: {bl.HIT_HOST}:443\r\n\r\n".encode()
        )
        assert read_http_response(sock).status == 200
        with ctx.wrap_socket(sock, server_hostname=bl.HIT_HOST) as tls:
            tls.sendall(
                f"GET /bench HTTP/1.1\r\nHost: {bl.HIT_HOST}\r\nConnection: close\r\n\r\n".encode()
            )
            assert read_http_response(tls).status == 200


def hit_fields(proxy: RunningProxy) -> Counter[tuple[object, ...]]:
    return Counter(
        (e.signal, e.host, e.app, e.regimes, e.action, e.rule, e.decided_by, e.decided_id)
        for e in proxy.events()
        if e.kind.value == "hit"
    )


def per_connection(proxy: RunningProxy, n: int) -> dict[tuple[str, str], float]:
    """Every ``inspected`` and ``hits`` sample, divided by the connections made."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(proxy.metrics_text()):
        for s in family.samples:
            if s.name in ("egresswatch_inspected_total", "egresswatch_hits_total") and s.value:
                out[(s.name, repr(sorted(s.labels.items())))] = s.value / n
    return out


def test_a_replayed_connect_is_a_real_one_to_the_proxy(
    start_proxy: ProxyFactory, load: bl.Load, test_pki: UpstreamPKI
) -> None:
    real = start_proxy()
    replay = start_proxy(routes=load.routes())
    n = 6
    for _ in range(n):
        real_tls_connect(real.ports["regular"], test_pki.ca_cert)
    before = load.upstream_stats()
    s = load.run(replay.ports["regular"], "connect-hit", 0.5, 2, [replay.pid])
    after = load.upstream_stats()
    assert s.total > 0 and s.ops <= s.total
    # The upstream got every client flight unchanged, and the client every server flight
    # (``run`` raises on a flight that arrived altered).
    assert after.sessions - before.sessions == s.total
    assert after.mismatches == 0
    m_real, m_replay = per_connection(real, n), per_connection(replay, s.total)
    real.stop(), replay.stop()
    assert m_real == m_replay and m_real  # the same signals inspected, the same hits counted
    real_hits, replay_hits = hit_fields(real), hit_fields(replay)
    assert sum(real_hits.values()) == n and sum(replay_hits.values()) == s.total
    assert set(real_hits) == set(replay_hits)  # the same verdict path: one event per connection


def test_each_keep_alive_request_is_one_hit(start_proxy: ProxyFactory, load: bl.Load) -> None:
    proxy = start_proxy(routes=load.routes())
    before = load.upstream_stats()
    s = load.run(proxy.ports["regular"], "http-hit", 0.5, 3, [proxy.pid])
    assert s.total > 3
    assert load.upstream_stats().requests - before.requests == s.total
    proxy.stop()
    hits = hit_fields(proxy)
    assert sum(hits.values()) == s.total
    assert {k[0] for k in hits} == {"http_host"}
