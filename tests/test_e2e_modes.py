"""End to end, transparent-type modes and QUIC: real mitmdump, real clients, kernel redirection.

Each mode runs in a private network namespace (``tests/support/netns.py``): mitmdump, the
loopback upstreams and the clients all live in it, destinations are TEST-NET-3 addresses
(203.0.113.0/24) that only exist inside it, and ``tests/support/route_loopback.py`` sends
mitmproxy's upstream connections to the upstream servers on the namespace's loopback.

- transparent: an nft ``nat`` OUTPUT rule redirects TCP for 203.0.113.0/24 to mitmdump;
- WireGuard: a wireguard-go interface (peer: mitmproxy) carries 203.0.113.0/24 to mitmdump;
- QUIC: an aioquic HTTP/3 client through the WireGuard tunnel to an aioquic HTTP/3 upstream.
  mitmproxy 12.3.1 stalls a QUIC connection that ``tls_clienthello`` passes through (#8338);
  egresswatch decides QUIC pass-through in ``next_layer`` instead, and these tests show that a
  monitored HTTP/3 request completes end to end and that no crash is logged.
- local mode (``local:curl``, eBPF) is not tested: in this sandbox the redirector cannot start
  (no ``sudo``; ``setrlimit(RLIMIT_MEMLOCK)`` refused without CAP_SYS_RESOURCE; eBPF attach to a
  non-cgroup2 ``/sys/fs/cgroup`` fails), and it would attach to the host's root cgroup anyway.

Policy everywhere: deepseek blocked, everything else monitored. Hits are read from the event
store while the proxy runs (flushed every 100 ms), so each test checks signal, app and action.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.proxy import ProxyFactory
from tests.plugins.proxy import RunningProxy
from tests.support.netns import NetNS
from tests.support.netns import missing
from tests.support.quic import H3Upstream
from tests.support.quic import h3_get
from tests.support.upstreams import UpstreamPKI
from tests.support.upstreams import Upstreams

pytestmark = pytest.mark.e2e

POLICY = "default: monitor\napps:\n  deepseek: block\ncontact: compliance@example.test\n"
OPTIONS = {
    "egresswatch_bundled": "false",
    "egresswatch_reload_interval": "0",
    "egresswatch_flush_ms": "100",
}
TARGET = "203.0.113.10"  # TEST-NET-3: exists only inside the test namespaces


# -- helpers ---------------------------------------------------------------------------------------
def curl_in(ns: NetNS, *args: str) -> Any:
    return ns.run(["curl", "-q", "-sS", "--noproxy", "*", "--max-time", "10", *args], timeout=20)


def curl_tls(ns: NetNS, url: str, cafile: Path) -> Any:
    """curl ``url`` (https://NAME/...) with NAME resolved to the test-net target, verifying
    against ``cafile`` only (so success means the upstream's own certificate came through)."""
    name = url.split("/")[2]
    return curl_in(ns, "--cacert", str(cafile), "--resolve", f"{name}:443:{TARGET}", url)


def hits(proxy: RunningProxy) -> list[Any]:
    return [e for e in proxy.events() if e.kind == "hit"]


def wait_hit(
    proxy: RunningProxy, before: int, pred: Callable[[Any], bool], timeout: float = 5
) -> Any:
    """The first hit after the first ``before`` hits that satisfies ``pred`` (waits for flushes)."""
    deadline = time.monotonic() + timeout
    while True:
        new = hits(proxy)[before:]
        found = [e for e in new if pred(e)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            rows = [(e.signal, e.app, e.action, e.host) for e in new]
            raise AssertionError(f"no matching hit within {timeout}s; new hits: {rows}")
        time.sleep(0.05)


def settle() -> None:
    """Wait past a few store flushes, so that a hit that should not exist would have shown up."""
    time.sleep(0.4)


@pytest.fixture(scope="module")
def ns_upstreams_factory(
    test_pki: UpstreamPKI,
) -> Iterator[Callable[[NetNS], Upstreams]]:
    """Start :class:`Upstreams` inside a namespace (its loop thread inherits the namespace)."""
    started: list[Upstreams] = []

    def start(ns: NetNS) -> Upstreams:
        ups = ns.call(lambda: Upstreams(test_pki).start())
        started.append(ups)
        return ups

    yield start
    for ups in started:
        ups.stop()


# -- transparent mode ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tns() -> Iterator[NetNS]:
    if why := missing(("ip", "nft")):
        pytest.skip(f"transparent-mode e2e: {why}")
    ns = NetNS.create()
    try:
        # A route makes 203.0.113.0/24 reachable (no dummy module needed); the nft rule redirects
        # every connection to it before a packet is sent.
        ns.ip("route", "add", "203.0.113.0/24", "dev", "lo", "src", "127.0.0.1")
        yield ns
    finally:
        ns.delete()


@pytest.fixture(scope="module")
def transparent(
    tns: NetNS,
    ns_upstreams_factory: Callable[[NetNS], Upstreams],
    start_proxy_module: ProxyFactory,
    e2e_catalogue: Path,
) -> Iterator[tuple[RunningProxy, Upstreams]]:
    ups = ns_upstreams_factory(tns)
    proxy = start_proxy_module(
        modes=("transparent",),
        options=OPTIONS,
        policy=POLICY,
        lists=[e2e_catalogue],
        routes=ups.route_map(),
        exec_prefix=tns.exec_prefix,
    )
    port = proxy.ports["transparent"]
    # Only TCP to the test net is redirected: mitmdump's own upstream connections go to loopback.
    tns.nft(
        "table ip egw {\n"
        "  chain out { type nat hook output priority -100; policy accept;\n"
        f"    ip daddr 203.0.113.0/24 tcp dport {{ 80, 443 }} redirect to :{port}\n"
        "  }\n"
        "}\n"
    )
    yield proxy, ups
    proxy.stop()  # gracefully, before the namespace goes (the factory checks its log later)


def test_transparent_neutral_name_passes_uncounted(
    transparent: tuple[RunningProxy, Upstreams], tns: NetNS, test_pki: UpstreamPKI
) -> None:
    proxy, ups = transparent
    before, tls = len(hits(proxy)), ups.stats("tls")
    out = curl_tls(tns, "https://neutral.test/", test_pki.ca_cert)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["sni"] == "neutral.test"
    assert ups.stats("tls").bytes_in > tls.bytes_in
    settle()
    assert hits(proxy)[before:] == []


def test_transparent_plain_http_blocked_by_host(
    transparent: tuple[RunningProxy, Upstreams], tns: NetNS
) -> None:
    proxy, _ = transparent
    before = len(hits(proxy))
    out = curl_in(
        tns,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--resolve",
        f"api.deepseek.com:80:{TARGET}",
        "http://api.deepseek.com/",
    )
    assert (out.returncode, out.stdout) == (0, "403"), out.stderr
    e = wait_hit(proxy, before, lambda e: e.app == "deepseek")
    assert (e.signal, e.action, e.host) == ("http_host", "blocked", "api.deepseek.com")


# -- WireGuard mode ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wns() -> Iterator[NetNS]:
    if why := missing(("ip", "wg", "wireguard-go"), devices=("/dev/net/tun",)):
        pytest.skip(f"WireGuard-mode e2e: {why}")
    ns = NetNS.create()
    try:
        yield ns
    finally:
        ns.delete()


@pytest.fixture(scope="module")
def wns_h3(wns: NetNS, test_pki: UpstreamPKI) -> Iterator[H3Upstream]:
    """An HTTP/3 upstream inside the WireGuard namespace (QUIC to 203.0.113.x:443 reaches it)."""
    h3 = wns.call(lambda: H3Upstream(test_pki).start())
    yield h3
    h3.stop()


@pytest.fixture(scope="module")
def wireguard(
    wns: NetNS,
    wns_h3: H3Upstream,
    ns_upstreams_factory: Callable[[NetNS], Upstreams],
    start_proxy_module: ProxyFactory,
    e2e_catalogue: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningProxy, Upstreams]]:
    """mitmdump in WireGuard mode and a wireguard-go client interface whose peer it is; the
    namespace routes 203.0.113.0/24 into the tunnel."""
    ups = ns_upstreams_factory(wns)
    proxy = start_proxy_module(
        modes=("wireguard",),
        options={**OPTIONS, "route_loopback_udp": json.dumps({"443": ["127.0.0.1", wns_h3.port]})},
        policy=POLICY,
        lists=[e2e_catalogue],
        routes=ups.route_map(),
        exec_prefix=wns.exec_prefix,
    )
    # mitmproxy writes its keys to confdir/wireguard.conf: {"server_key": …, "client_key": …}.
    keys = json.loads((proxy.confdir / "wireguard.conf").read_text())
    server_pub = wns.run(["wg", "pubkey"], check=True, stdin=keys["server_key"]).stdout.strip()
    work = tmp_path_factory.mktemp("wg")
    iface = f"egw{wns.name[-8:]}"  # unique: wireguard-go's control socket is /var/run/wireguard/
    wg = wns.popen(
        ["wireguard-go", "-f", iface],
        work / "wireguard-go.log",
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "WG_PROCESS_FOREGROUND": "1"},
    )
    deadline = time.monotonic() + 10
    while wns.run(["ip", "link", "show", iface]).returncode != 0:
        if wg.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"wireguard-go did not start: {(work / 'wireguard-go.log').read_text()}")
        time.sleep(0.05)
    conf = work / "client.conf"
    conf.write_text(
        "[Interface]\n"
        f"PrivateKey = {keys['client_key']}\n"
        "[Peer]\n"
        f"PublicKey = {server_pub}\n"
        "AllowedIPs = 0.0.0.0/0\n"
        f"Endpoint = 127.0.0.1:{proxy.ports['wireguard']}\n"
    )
    conf.chmod(0o600)
    wns.run(["wg", "setconf", iface, str(conf)], check=True)
    wns.ip("addr", "add", "10.0.0.1/32", "dev", iface)
    wns.ip("link", "set", iface, "up")
    wns.ip("route", "add", "203.0.113.0/24", "dev", iface)
    yield proxy, ups
    proxy.stop()  # gracefully, before the namespace goes (the factory checks its log later)


@pytest.fixture(params=["transparent", "wireguard"])
def redirected(
    request: pytest.FixtureRequest,
) -> tuple[RunningProxy, Upstreams, NetNS]:
    """The proxy, upstreams and client namespace of one transparent-type mode."""
    proxy, ups = request.getfixturevalue(request.param)
    ns = request.getfixturevalue("tns" if request.param == "transparent" else "wns")
    return proxy, ups, ns


def test_sni_monitored_passes_tls_through(
    redirected: tuple[RunningProxy, Upstreams, NetNS], test_pki: UpstreamPKI
) -> None:
    proxy, ups, ns = redirected
    before, conns = len(hits(proxy)), ups.stats("tls").connections
    out = curl_tls(ns, "https://www.tiktok.com/watch", test_pki.ca_cert)
    # Verified against the upstream's own CA: the TLS session is the upstream's (pass-through).
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["sni"] == "www.tiktok.com"
    assert ups.stats("tls").connections == conns + 1
    e = wait_hit(proxy, before, lambda e: e.app == "tiktok")
    assert (e.signal, e.app, e.action, e.host) == ("sni", "tiktok", "monitor", "www.tiktok.com")


def test_sni_blocked_closes_before_any_byte_reaches_server(
    redirected: tuple[RunningProxy, Upstreams, NetNS], test_pki: UpstreamPKI
) -> None:
    proxy, ups, ns = redirected
    before, tls = len(hits(proxy)), ups.stats("tls")
    out = curl_tls(ns, "https://api.deepseek.com/v1/models", test_pki.ca_cert)
    assert out.returncode == 35, out.stderr  # TLS connect error: closed after the ClientHello
    e = wait_hit(proxy, before, lambda e: e.app == "deepseek")
    assert (e.signal, e.action, e.host) == ("sni", "blocked", "api.deepseek.com")
    assert ups.stats("tls").bytes_in == tls.bytes_in


def _dns_query(server: str, name: str) -> Any:
    import dns.message
    import dns.query

    return dns.query.udp(dns.message.make_query(name, "A"), server, timeout=5)


def test_wireguard_dns_blocked_nxdomain_and_monitored_answered(
    wireguard: tuple[RunningProxy, Upstreams], wns: NetNS
) -> None:
    import dns.rcode

    proxy, _ = wireguard
    before = len(hits(proxy))
    blocked = wns.call(_dns_query, "203.0.113.53", "api.deepseek.com")
    assert blocked.rcode() == dns.rcode.NXDOMAIN
    assert blocked.answer == []
    e = wait_hit(proxy, before, lambda e: e.app == "deepseek")
    assert (e.signal, e.action, e.host) == ("dns", "blocked", "api.deepseek.com")

    before = len(hits(proxy))
    ok = wns.call(_dns_query, "203.0.113.53", "www.tiktok.com")
    assert ok.rcode() == dns.rcode.NOERROR
    assert [a.address for rrset in ok.answer for a in rrset] == ["127.0.0.1"]  # route_loopback
    e = wait_hit(proxy, before, lambda e: e.app == "tiktok")
    assert (e.signal, e.action, e.host) == ("dns", "monitor", "www.tiktok.com")


def test_wireguard_quic_monitored_is_recorded(
    wireguard: tuple[RunningProxy, Upstreams], wns: NetNS, test_pki: UpstreamPKI
) -> None:
    """HTTP/3 through the tunnel: the QUIC ClientHello's SNI is recorded with the QUIC signal."""
    proxy, _ = wireguard
    before = len(hits(proxy))
    status, _body = wns.call(
        h3_get, TARGET, 443, "www.tiktok.com", str(test_pki.ca_cert), timeout=5.0
    )
    assert status == 200
    e = wait_hit(proxy, before, lambda e: e.app == "tiktok")
    assert (e.signal, e.action, e.host) == ("quic", "monitor", "www.tiktok.com")


def test_wireguard_quic_monitored_passes_through(
    wireguard: tuple[RunningProxy, Upstreams], wns: NetNS, wns_h3: H3Upstream, test_pki: UpstreamPKI
) -> None:
    """A monitored QUIC connection passes through untouched: the client verifies the upstream's
    own certificate and gets its answer (mitmproxy #8338 worked around in ``next_layer``)."""
    status, body = wns.call(
        h3_get, TARGET, 443, "tiktok.com", str(test_pki.ca_cert), "/h3", timeout=2.0
    )
    assert status == 200
    assert json.loads(body) == {"server": "h3", "authority": "tiktok.com", "path": "/h3"}
    assert "tiktok.com" in wns_h3.stats().authorities


def test_wireguard_quic_hello_over_several_datagrams(
    wireguard: tuple[RunningProxy, Upstreams], wns: NetNS, wns_h3: H3Upstream, test_pki: UpstreamPKI
) -> None:
    """A ClientHello too big for one Initial datagram (about 4 kB: three or more datagrams) is
    collected before the decision: still recorded with its SNI, and still passed through."""
    proxy, _ = wireguard
    before = len(hits(proxy))
    status, body = wns.call(
        h3_get, TARGET, 443, "www.tiktok.com", str(test_pki.ca_cert), "/big", 5.0, 4000
    )
    assert status == 200
    assert json.loads(body)["path"] == "/big"
    e = wait_hit(proxy, before, lambda e: e.app == "tiktok")
    assert (e.signal, e.action, e.host) == ("quic", "monitor", "www.tiktok.com")


def test_wireguard_quic_blocked_is_dropped(
    wireguard: tuple[RunningProxy, Upstreams], wns: NetNS, wns_h3: H3Upstream, test_pki: UpstreamPKI
) -> None:
    """A blocked QUIC SNI is dropped: the handshake never completes and not one datagram reaches
    the upstream (the client would fall back to TCP, where the SNI is seen again)."""
    proxy, _ = wireguard
    before, h3 = len(hits(proxy)), wns_h3.stats()
    with pytest.raises(TimeoutError):
        wns.call(h3_get, TARGET, 443, "api.deepseek.com", str(test_pki.ca_cert), timeout=2.0)
    e = wait_hit(proxy, before, lambda e: e.app == "deepseek")
    assert (e.signal, e.action, e.host) == ("quic", "blocked", "api.deepseek.com")
    assert wns_h3.stats().datagrams == h3.datagrams
