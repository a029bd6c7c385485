"""End to end, the policy's evasion keys with a real mitmdump and loopback upstreams:

- ``alt_svc``: the proxy decrypts (``egresswatch_decrypt=all``), the upstream answers
  ``Alt-Svc: h3=":443"; ma=86400, h2=":443"``; ``count`` keeps the header and counts it once per
  connection and host, ``strip`` removes the h3 alternative and keeps h2.
- ``ech: {action: block, scope: designated}``: built Encrypted ClientHellos through a CONNECT
  tunnel (curl cannot send them); the tunnel names another host than the outer SNI, so the name
  is hidden. The outer name the catalogue designates is refused before any byte reaches the
  upstream; a neutral outer name is recorded and passes.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
from egresswatch.ech import outer_extension

from tests.plugins.proxy import ProxyFactory
from tests.plugins.proxy import RunningProxy
from tests.support import clients
from tests.support.upstreams import Upstreams
from tests.test_proxy_ech import client_hello

pytestmark = pytest.mark.e2e

OPTIONS = {"egresswatch_bundled": "false", "egresswatch_reload_interval": "0"}
ALT = "egresswatch_alt_svc_total"
ECH = "egresswatch_ech_total"
POLICY = "default: monitor\n"


def _proxy(factory: ProxyFactory, catalogue: Path, policy: str, **options: str) -> RunningProxy:
    return factory(options={**OPTIONS, **options}, policy=policy, lists=[catalogue])


@pytest.fixture(scope="module")
def counting(start_proxy_module: ProxyFactory, e2e_catalogue: Path) -> RunningProxy:
    return _proxy(
        start_proxy_module, e2e_catalogue, POLICY + "alt_svc: count\n", egresswatch_decrypt="all"
    )


@pytest.fixture(scope="module")
def stripping(start_proxy_module: ProxyFactory, e2e_catalogue: Path) -> RunningProxy:
    return _proxy(
        start_proxy_module, e2e_catalogue, POLICY + "alt_svc: strip\n", egresswatch_decrypt="all"
    )


@pytest.fixture(scope="module")
def ech_scoped(start_proxy_module: ProxyFactory, e2e_catalogue: Path) -> RunningProxy:
    return _proxy(
        start_proxy_module, e2e_catalogue, POLICY + "ech:\n  action: block\n  scope: designated\n"
    )


def _client(p: RunningProxy) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(p.mitmproxy_ca))
    return httpx.Client(proxy=p.proxy_url, trust_env=False, timeout=10, verify=ctx)


def test_count_keeps_the_header_and_counts_once_per_connection(counting: RunningProxy) -> None:
    before = counting.metric_sum(ALT, app="tiktok", action="monitor")
    with _client(counting) as c:  # one connection, three responses
        for _ in range(3):
            r = c.get("https://www.tiktok.com/alt-svc/feed")
            assert r.status_code == 200
            assert r.headers.get_list("alt-svc") == ['h3=":443"; ma=86400, h2=":443"']
        assert r.json()["path"] == "/alt-svc/feed"  # the upstream's answer, decrypted
        plain = c.get("https://www.tiktok.com/other")
        assert "alt-svc" not in plain.headers
    assert counting.metric_sum(ALT, app="tiktok", action="monitor") == before + 1


def test_count_ignores_neutral_names(counting: RunningProxy) -> None:
    before = counting.metric_sum(ALT)
    with _client(counting) as c:
        r = c.get("https://neutral.test/alt-svc")
    assert r.headers.get_list("alt-svc") == ['h3=":443"; ma=86400, h2=":443"']
    assert counting.metric_sum(ALT) == before


def test_strip_removes_h3_and_keeps_h2(stripping: RunningProxy) -> None:
    before = stripping.metric_sum(ALT, app="tiktok", action="blocked")
    with _client(stripping) as c:
        for _ in range(2):
            r = c.get("https://www.tiktok.com/alt-svc")
            assert r.status_code == 200
            assert r.headers.get_list("alt-svc") == ['h2=":443"']
        neutral = c.get("https://neutral.test/alt-svc")  # not designated: left alone
        assert neutral.headers.get_list("alt-svc") == ['h3=":443"; ma=86400, h2=":443"']
    assert stripping.metric_sum(ALT, app="tiktok", action="blocked") == before + 1
    assert stripping.metric_sum("egresswatch_hook_errors_total", hook="responseheaders") == 0


def test_strip_event_reaches_the_store(start_proxy: ProxyFactory, e2e_catalogue: Path) -> None:
    p = _proxy(start_proxy, e2e_catalogue, POLICY + "alt_svc: strip\n", egresswatch_decrypt="all")
    with _client(p) as c:
        assert c.get("https://www.tiktok.com/alt-svc").headers.get_list("alt-svc") == ['h2=":443"']
    assert p.stop() == 0
    (ev,) = [e for e in p.events() if e.signal == "alt_svc"]
    assert ev.app is None and ev.host == "www.tiktok.com" and ev.action == "blocked"
    assert ev.decided_by == "policy" and ev.decided_id == "alt_svc"
    assert ev.detail["app"] == "tiktok" and ev.detail["advertised"] == ["h3"]
    assert ev.detail["stripped"] is True


def _ech_through_tunnel(p: RunningProxy, asked: bytes, outer: str) -> bytes:
    """CONNECT to ``asked``, send a ClientHello with outer SNI ``outer`` and an ECH extension;
    what came back before the connection closed or went quiet."""
    sock, resp = clients.connect(p.ports["regular"], asked)
    assert resp.status == 200
    with sock:
        sock.settimeout(3)
        sock.sendall(client_hello(outer, outer_extension()))
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
                if len(got) > 5:
                    break
        except (TimeoutError, ConnectionError):
            pass
    return got


def test_ech_scope_designated_refuses_a_designated_outer_name(
    ech_scoped: RunningProxy, upstreams: Upstreams
) -> None:
    before = upstreams.stats("tls")
    blocked = ech_scoped.metric_sum(ECH, verdict="hidden", action="blocked")
    got = _ech_through_tunnel(ech_scoped, b"neutral.test:443", "www.tiktok.com")
    assert got == b""  # closed, no ServerHello
    assert ech_scoped.metric_sum(ECH, verdict="hidden", action="blocked") == blocked + 1
    # mitmproxy opened the upstream TCP connection at CONNECT (eager strategy); the cut comes
    # before the ClientHello is relayed, so not one byte reached the server
    assert upstreams.stats("tls").bytes_in == before.bytes_in


def test_ech_scope_designated_lets_a_neutral_outer_name_through(
    ech_scoped: RunningProxy, upstreams: Upstreams
) -> None:
    before = upstreams.stats("tls").bytes_in
    monitored = ech_scoped.metric_sum(ECH, verdict="hidden", action="monitor")
    _ech_through_tunnel(ech_scoped, b"www.example.test:443", "neutral.test")
    assert ech_scoped.metric_sum(ECH, verdict="hidden", action="monitor") == monitored + 1
    assert upstreams.stats("tls").bytes_in > before  # the ClientHello reached the upstream
