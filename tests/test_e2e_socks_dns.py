"""End to end, SOCKS5 and DNS modes: curl ``--socks5-hostname`` and dnspython against mitmdump."""

from __future__ import annotations

from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.plugins.proxy import ProxyFactory
from tests.plugins.proxy import RunningProxy
from tests.support import clients
from tests.support.upstreams import UpstreamPKI
from tests.support.upstreams import Upstreams

pytestmark = pytest.mark.e2e

HITS = "egresswatch_hits_total"
POLICY = "default: monitor\napps:\n  deepseek: block\n"
OPTIONS = {"egresswatch_bundled": "false", "egresswatch_reload_interval": "0"}
#: mitmproxy 12.3.1 keeps a DNS-over-TCP client handler open after the client closed; cancelling
#: it at shutdown makes CPython 3.12.1's asyncio stream callback log a CancelledError traceback.
#: Not egresswatch code (no addon frame); allowed only in this exact form.
DNS_TCP_SHUTDOWN = (
    r"Exception in callback StreamReaderProtocol\.connection_made[^\n]*\n[^\n]*\n"
    r"Traceback[\s\S]*?mode_servers\.py[\s\S]*?server\.py\", line \d+, in handle_client"
    r"[\s\S]*?\nasyncio\.exceptions\.CancelledError"
)


@pytest.fixture(scope="module")
def proxy(start_proxy_module: ProxyFactory, e2e_catalogue: Path) -> RunningProxy:
    return start_proxy_module(
        modes=("socks5", "dns"),
        options=OPTIONS,
        policy=POLICY,
        lists=[e2e_catalogue],
        allowed_errors=[DNS_TCP_SHUTDOWN],
    )


def query(p: RunningProxy, name: str, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=p.ports["dns"], timeout=5)
    return dns.query.udp(q, "127.0.0.1", port=p.ports["dns"], timeout=5)


def addresses(r: dns.message.Message) -> list[str]:
    return [a.address for rrset in r.answer for a in rrset]


# -- SOCKS5 ---------------------------------------------------------------------------------------
def test_socks5_hostname_counted_and_passed_through(
    proxy: RunningProxy, test_pki: UpstreamPKI
) -> None:
    before = proxy.metric_sum(HITS, app="tiktok", signal="socks5", action="monitor")
    before_all = proxy.metric_sum(HITS, app="tiktok")
    out = clients.curl(
        "--cacert",
        str(test_pki.ca_cert),
        "--socks5-hostname",
        f"127.0.0.1:{proxy.ports['socks5']}",
        "https://www.tiktok.com/x",
    )
    assert out.returncode == 0, out.stderr
    assert '"sni": "www.tiktok.com"' in out.stdout
    assert proxy.metric_sum(HITS, app="tiktok", signal="socks5", action="monitor") == before + 1
    assert proxy.metric_sum(HITS, app="tiktok") == before_all + 1  # SOCKS name + SNI: once


def test_socks5_hostname_block_gets_socks_error(proxy: RunningProxy, upstreams: Upstreams) -> None:
    before = upstreams.stats("tls")
    out = clients.curl(
        "--socks5-hostname", f"127.0.0.1:{proxy.ports['socks5']}", "https://api.deepseek.com/"
    )
    assert out.returncode == 97, out.stderr  # "Can't complete SOCKS5 connection"
    after = upstreams.stats("tls")
    assert (after.connections, after.bytes_in) == (before.connections, before.bytes_in)


def test_socks5_tls_block_closes_before_any_byte_reaches_server(
    proxy: RunningProxy, upstreams: Upstreams, test_pki: UpstreamPKI
) -> None:
    """SOCKS to an IP (client-side DNS, like ``curl --socks5``): only the SNI names the app."""
    before = upstreams.stats("tls")
    blocked = proxy.metric_sum(HITS, app="deepseek", signal="sni", action="blocked")
    out = clients.curl(
        "--cacert",
        str(test_pki.ca_cert),
        "--socks5",
        f"127.0.0.1:{proxy.ports['socks5']}",
        "--resolve",
        "api.deepseek.com:443:203.0.113.9",
        "https://api.deepseek.com/",
    )
    assert out.returncode == 35, out.stderr  # TLS connect error: closed after the ClientHello
    assert proxy.metric_sum(HITS, app="deepseek", signal="sni", action="blocked") == blocked + 1
    assert upstreams.stats("tls").bytes_in == before.bytes_in


# -- DNS ------------------------------------------------------------------------------------------
def test_dns_blocked_name_gets_nxdomain(proxy: RunningProxy) -> None:
    before = proxy.metric_sum(HITS, app="deepseek", signal="dns", action="blocked")
    r = query(proxy, "api.deepseek.com")
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert r.answer == []
    assert proxy.metric_sum(HITS, app="deepseek", signal="dns", action="blocked") == before + 1


def test_dns_monitored_name_answered_and_counted(proxy: RunningProxy) -> None:
    before = proxy.metric_sum(HITS, app="tiktok", signal="dns", action="monitor")
    r = query(proxy, "www.tiktok.com")
    assert r.rcode() == dns.rcode.NOERROR
    assert addresses(r) == ["127.0.0.1"]
    assert proxy.metric_sum(HITS, app="tiktok", signal="dns", action="monitor") == before + 1


def test_dns_mixed_case_and_tcp(proxy: RunningProxy) -> None:
    assert query(proxy, "API.DeepSeek.COM", tcp=True).rcode() == dns.rcode.NXDOMAIN
    assert query(proxy, "Www.TikTok.Com", "AAAA").rcode() == dns.rcode.NOERROR


def test_dns_neutral_name_not_counted(proxy: RunningProxy) -> None:
    total = proxy.metric_sum(HITS, signal="dns")
    assert addresses(query(proxy, "neutral.test")) == ["127.0.0.1"]
    assert proxy.metric_sum(HITS, signal="dns") == total


@pytest.mark.parametrize(
    ("how", "rcode", "answer_a", "answer_aaaa"),
    [
        ("refused", dns.rcode.REFUSED, [], []),
        ("null", dns.rcode.NOERROR, ["0.0.0.0"], ["::"]),
    ],
)
def test_dns_block_answer_by_option(
    start_proxy: ProxyFactory,
    e2e_catalogue: Path,
    how: str,
    rcode: dns.rcode.Rcode,
    answer_a: list[str],
    answer_aaaa: list[str],
) -> None:
    p = start_proxy(
        modes=("dns",),
        options={**OPTIONS, "egresswatch_dns_block": how},
        policy=POLICY,
        lists=[e2e_catalogue],
    )
    r = query(p, "api.deepseek.com")
    assert r.rcode() == rcode
    assert addresses(r) == answer_a
    r6 = query(p, "api.deepseek.com", "AAAA")
    assert r6.rcode() == rcode
    assert addresses(r6) == answer_aaaa
    assert addresses(query(p, "www.tiktok.com")) == ["127.0.0.1"]
