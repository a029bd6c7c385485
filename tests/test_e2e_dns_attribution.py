"""End to end, dns mode against a loopback upstream resolver (dnspython on both sides):
CNAME chains to designated names, answer ranges, HTTPS records, hostile answers; the proxy is
mitmdump in ``reverse:dns://`` mode so that every answer comes from the test's resolver."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from tests.plugins.proxy import ProxyFactory
from tests.plugins.proxy import RunningProxy

pytestmark = pytest.mark.e2e

HITS = "egresswatch_hits_total"
POLICY = "default: monitor\napps:\n  deepseek: block\n"
OPTIONS = {
    "egresswatch_bundled": "false",
    "egresswatch_reload_interval": "0",
    "strip_ech": "false",
    "route_loopback_dns": "false",  # the loopback resolver answers
}


def _rr(name: str, rdtype: str, *values: str, ttl: int = 300) -> dns.rrset.RRset:
    return dns.rrset.from_text(name, ttl, "IN", rdtype, *values)


#: question name -> answer RRsets (the chain first).
ZONE: dict[str, list[dns.rrset.RRset]] = {
    "alias.neutral.test.": [
        _rr("alias.neutral.test.", "CNAME", "a1.neutral.test."),
        _rr("a1.neutral.test.", "CNAME", "www.tiktok.com."),
        _rr("www.tiktok.com.", "A", "203.0.113.10"),
    ],
    "hidden.neutral.test.": [
        _rr("hidden.neutral.test.", "CNAME", "api.deepseek.com."),
        _rr("api.deepseek.com.", "A", "203.0.113.11"),
    ],
    "range.neutral.test.": [_rr("range.neutral.test.", "A", "198.51.100.9")],
    "loop.neutral.test.": [
        _rr("loop.neutral.test.", "CNAME", "loop2.neutral.test."),
        _rr("loop2.neutral.test.", "CNAME", "loop.neutral.test."),
    ],
    "long.neutral.test.": [
        _rr(
            f"l{i}.neutral.test." if i else "long.neutral.test.", "CNAME", f"l{i + 1}.neutral.test."
        )
        for i in range(40)
    ]
    + [_rr("l40.neutral.test.", "A", "203.0.113.12")],
    "huge.neutral.test.": [
        _rr("huge.neutral.test.", "CNAME", "big.tiktok.com."),
        _rr("big.tiktok.com.", "A", *[f"10.77.{i // 200}.{i % 200 + 1}" for i in range(400)]),
    ],
    "forged.neutral.test.": [
        _rr("forged.neutral.test.", "A", "203.0.113.13"),
        _rr("www.tiktok.com.", "A", "203.0.113.66"),  # off the chain
    ],
    "ech.neutral.test.": [
        _rr("ech.neutral.test.", "HTTPS", '1 . alpn="h2" ech="AAj+DQAEYWJjZA=="'),
    ],
}


def _answer(wire: bytes) -> bytes:
    q = dns.message.from_wire(wire)
    r = dns.message.make_response(q)
    name = str(q.question[0].name).lower()
    for rrset in ZONE.get(name, []):
        r.answer.append(rrset)
    if name == "truncated.neutral.test.":
        return r.to_wire()[:-7]  # cut mid-record
    if name not in ZONE:
        r.set_rcode(dns.rcode.NXDOMAIN)
    return r.to_wire(max_size=65535)


@pytest.fixture(scope="module")
def upstream_dns() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                wire, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            try:
                sock.sendto(_answer(wire), peer)
            except Exception:  # a test's own bad query: no answer
                continue

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield sock.getsockname()[1]
    stop.set()
    t.join(timeout=2)
    sock.close()


@pytest.fixture(scope="module")
def proxy(start_proxy_module: ProxyFactory, e2e_catalogue: Path, upstream_dns: int) -> RunningProxy:
    return start_proxy_module(
        modes=(f"reverse:dns://127.0.0.1:{upstream_dns}",),
        options=OPTIONS,
        policy=POLICY,
        lists=[e2e_catalogue],
    )


def query(p: RunningProxy, name: str, rdtype: str = "A") -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, use_edns=0, payload=65000)
    return dns.query.udp(q, "127.0.0.1", port=p.ports["reverse"], timeout=5)


def test_cname_chain_to_a_designated_name_is_counted_and_answered(proxy: RunningProxy) -> None:
    before = proxy.metric_sum(HITS, app="tiktok", signal="cname", action="monitor")
    r = query(proxy, "alias.neutral.test")
    assert r.rcode() == dns.rcode.NOERROR
    assert [a.address for rr in r.answer if rr.rdtype == dns.rdatatype.A for a in rr] == [
        "203.0.113.10"
    ]
    assert proxy.metric_sum(HITS, app="tiktok", signal="cname", action="monitor") == before + 1
    assert (proxy.metric("egresswatch_dns_resolutions") or 0) >= 1


def test_cname_chain_to_a_blocked_name_is_nxdomain(proxy: RunningProxy) -> None:
    before = proxy.metric_sum(HITS, app="deepseek", signal="cname", action="blocked")
    r = query(proxy, "hidden.neutral.test")
    assert r.rcode() == dns.rcode.NXDOMAIN and r.answer == []
    assert proxy.metric_sum(HITS, app="deepseek", signal="cname", action="blocked") == before + 1


def test_answer_in_a_designated_range_is_a_hit(proxy: RunningProxy) -> None:
    before = proxy.metric_sum(HITS, app="example-app", signal="cname")
    assert query(proxy, "range.neutral.test").rcode() == dns.rcode.NOERROR
    assert proxy.metric_sum(HITS, app="example-app", signal="cname") == before + 1


def test_hostile_answers_pass_without_hook_errors(proxy: RunningProxy) -> None:
    for name in ("loop.neutral.test", "long.neutral.test", "forged.neutral.test"):
        assert query(proxy, name).rcode() == dns.rcode.NOERROR
    huge = query(proxy, "huge.neutral.test")
    assert huge.rcode() == dns.rcode.NOERROR  # 400 addresses: passed on, 64 records read
    try:  # an answer cut mid-record: mitmproxy cannot parse it (SERVFAIL or no answer)
        cut = query(proxy, "truncated.neutral.test")
        assert cut.rcode() != dns.rcode.NOERROR or cut.answer == []
    except dns.exception.DNSException:
        pass
    assert query(proxy, "alias.neutral.test").rcode() == dns.rcode.NOERROR  # still serving
    assert proxy.metric_sum("egresswatch_hook_errors_total") == 0
    assert (proxy.metric("egresswatch_dns_resolutions") or 0) <= 1 + 64 + 1


def test_https_record_with_ech_passes_when_strip_ech_is_off(proxy: RunningProxy) -> None:
    r = query(proxy, "ech.neutral.test", "HTTPS")
    assert r.rcode() == dns.rcode.NOERROR
    assert "ech=" in r.answer[0].to_text()
    assert proxy.metric_sum("egresswatch_hook_errors_total") == 0
