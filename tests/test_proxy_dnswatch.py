"""``egresswatch.proxy.dnswatch``: CNAME chains, answer ranges, correlation, hostile answers."""

from __future__ import annotations

import ipaddress

from mitmproxy import dns
from mitmproxy.net.dns import https_records
from mitmproxy.net.dns import response_codes

from tests.plugins.addon import Env
from tests.plugins.addon import client
from tests.plugins.addon import connect_flow
from tests.plugins.addon import dns_flow
from tests.plugins.addon import hello_data
from tests.plugins.addon import next_layer_of
from tests.plugins.addon import raw_client_hello
from tests.plugins.addon import server_data

RR = dns.ResourceRecord


def A(name: str, ip: str, ttl: int = 300) -> RR:
    return RR.A(name, ipaddress.IPv4Address(ip), ttl=ttl)


def answered(name: str, *records: RR, c: object = None) -> dns.DNSFlow:
    f = dns_flow(name)
    if c is not None:
        f.client_conn = c  # type: ignore[assignment]
    f.response = f.request.succeed(list(records))
    return f


def hook_errors(env: Env) -> float:
    v = env.registry.get_sample_value("egresswatch_hook_errors_total", {"hook": "dns_response"})
    assert v is not None
    return v


def test_cname_chain_to_a_designated_name_is_a_hit_with_the_chain(env: Env) -> None:
    f = answered(
        "cdn.neutral.test",
        RR.CNAME("cdn.neutral.test", "edge.neutral.test"),
        RR.CNAME("edge.neutral.test", "v1.watched.test"),
        A("v1.watched.test", "203.0.113.5"),
    )
    env.addon.dns_response(f)
    assert f.response is not None and f.response.response_code == response_codes.NOERROR
    assert env.hits("watchy", "monitor", "cname", "default") == 1
    (ev,) = env.events()
    assert ev.signal == "cname" and ev.host == "v1.watched.test" and ev.app == "watchy"
    assert ev.detail is not None
    assert ev.detail["chain"] == ["cdn.neutral.test", "edge.neutral.test", "v1.watched.test"]
    assert ev.detail["asked"] == "cdn.neutral.test"
    res = env.addon.dnswatch.table.lookup("203.0.113.5")
    assert res is not None and res.app == "watchy" and res.name == "v1.watched.test"
    assert env.registry.get_sample_value("egresswatch_dns_resolutions") == 1


def test_cname_to_a_blocked_name_answers_nxdomain(env: Env) -> None:
    f = answered(
        "innocent.test", RR.CNAME("innocent.test", "x.blocked.test"), A("x.blocked.test", "1.2.3.4")
    )
    env.addon.dns_response(f)
    assert f.response is not None and f.response.response_code == response_codes.NXDOMAIN
    assert f.response.answers == []
    assert env.hits("blocky", "blocked", "cname") == 1
    assert env.addon.dnswatch.table.lookup("1.2.3.4") is None  # never handed to the client


def test_bare_answer_in_a_designated_range_is_a_hit(env: Env) -> None:
    f = answered("plain.test", A("plain.test", "192.0.2.9"))
    env.addon.dns_response(f)
    assert f.response is not None and f.response.response_code == response_codes.NXDOMAIN
    (ev,) = env.events()
    assert ev.signal == "cname" and ev.detail is not None and ev.detail["via"] == "range"
    assert ev.detail["address"] == "192.0.2.9"


def test_unrelated_answers_record_nothing(env: Env) -> None:
    f = answered("plain.test", A("plain.test", "198.51.100.1"))
    env.addon.dns_response(f)
    assert env.events() == [] and len(env.addon.dnswatch.table) == 0


def test_direct_designated_answer_is_remembered_not_counted_again(env: Env) -> None:
    q = dns_flow("www.watched.test")
    env.observe.dns_request(q)
    q.response = q.request.succeed([A("www.watched.test", "203.0.113.6")])
    env.addon.dns_response(q)
    assert len(env.events()) == 1  # the dns signal only
    assert env.addon.dnswatch.table.lookup("203.0.113.6") is not None


def _remember(env: Env, ip: str = "203.0.113.5") -> None:
    env.addon.dns_response(
        answered("c.neutral.test", RR.CNAME("c.neutral.test", "w.watched.test"), A("w.watched.test", ip))
    )  # fmt: skip


def test_ip_literal_socks5_and_connect_are_correlated(env: Env) -> None:
    _remember(env)
    c = client("socks5")
    env.observe.server_connect(server_data(c, "203.0.113.5"))
    assert env.hits("watchy", "monitor", "dns_correlated", "default") == 1
    ev = env.events()[-1]
    assert ev.signal == "dns_correlated" and ev.host == "w.watched.test"
    assert ev.detail is not None and ev.detail["address"] == "203.0.113.5"
    assert ev.detail["why"] == "IP-literal SOCKS5 target"
    # the TLS that follows on the same connection (no SNI) does not count the app again
    env.layers.tls_clienthello(hello_data(env, None, c))
    assert env.hits("watchy", "monitor", "dns_correlated", "default") == 1
    env.observe.http_connect(connect_flow("203.0.113.5"))
    assert env.hits("watchy", "monitor", "dns_correlated", "default") == 2
    env.observe.http_connect(connect_flow("203.0.113.77"))  # never resolved: nothing
    assert env.hits("watchy", "monitor", "dns_correlated", "default") == 2


def test_tls_without_sni_is_correlated_but_sni_wins(env: Env) -> None:
    _remember(env, "198.51.100.7")  # next_layer_of's server address
    c = client("transparent")
    env.layers.next_layer(next_layer_of(env, c, [raw_client_hello(None)]))
    assert env.hits("watchy", "monitor", "dns_correlated", "default") == 1
    assert env.events()[-1].detail["why"] == "TLS without SNI"  # type: ignore[index]
    c2 = client("transparent")
    env.layers.next_layer(next_layer_of(env, c2, [raw_client_hello("example.org")]))
    assert env.hits("watchy", "monitor", "dns_correlated", "default") == 1  # a name: no guess


def test_https_record_with_ech_is_advertised(env: Env) -> None:
    rec = https_records.HTTPSRecord(1, "", {5: b"\x00\x01ech-config"})
    env.addon.dns_response(answered("site.test", RR.HTTPS("site.test", rec)))
    assert env.addon.dnswatch.advertised("Site.Test.")
    assert not env.addon.dnswatch.advertised("other.test")


def test_hostile_answers_raise_nothing_and_stay_bounded(env: Env) -> None:
    env.tctx.configure(env.addon, egresswatch_dns_resolutions=4)
    loop = answered(
        "a.test", RR.CNAME("a.test", "b.test"), RR.CNAME("b.test", "a.test"), A("a.test", "1.1.1.1")
    )
    env.addon.dns_response(loop)
    long_chain = [RR.CNAME(f"n{i}.test", f"n{i + 1}.test") for i in range(200)]
    env.addon.dns_response(answered("n0.test", *long_chain, A("n200.test", "2.2.2.2")))
    truncated = RR("t.test", dns.types.A, dns.classes.IN, 60, b"\x01\x02")
    bad_cname = RR("u.test", dns.types.CNAME, dns.classes.IN, 60, b"\xff\xff\xff")
    forged = A("www.watched.test", "9.9.9.9")  # off the chain: ignored
    env.addon.dns_response(answered("t.test", truncated, bad_cname, forged))
    huge = [A("v.watched.test", f"10.{i // 250}.{i % 250}.1") for i in range(2000)]
    env.addon.dns_response(
        answered("h.neutral.test", RR.CNAME("h.neutral.test", "v.watched.test"), *huge)
    )
    many = [RR.CNAME("m.test", "w.watched.test")] + [
        A("w.watched.test", f"10.9.{i}.1") for i in range(20)
    ]
    env.addon.dns_response(answered("m.test", *many))
    assert hook_errors(env) == 0
    table = env.addon.dnswatch.table
    assert len(table) == 4 and table.evictions > 0
    assert (
        env.registry.get_sample_value("egresswatch_dns_resolution_evictions_total")
        == table.evictions
    )
    assert env.addon.dnswatch.table.lookup("9.9.9.9") is None
    assert env.addon.dnswatch.table.lookup("1.1.1.1") is None
