"""``egresswatch.proxy.observe``: hooks -> observation (CONNECT, connects, HTTP, DNS), the
per-connection state, and hook errors."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import pytest
from egresswatch.proxy.observe import host_and_upgrade
from mitmproxy import dns
from mitmproxy import http

from tests.plugins.addon import POLICY
from tests.plugins.addon import Env
from tests.plugins.addon import client
from tests.plugins.addon import connect_flow
from tests.plugins.addon import dns_flow
from tests.plugins.addon import hello_data
from tests.plugins.addon import request_flow
from tests.plugins.addon import server_data


def _request(version: str, headers: list[tuple[bytes, bytes]], authority: str = "") -> http.Request:
    return http.Request(
        "example.org", 80, b"GET", b"http", authority.encode(), b"/", version.encode(),
        http.Headers(headers), b"", None, 0.0, 0.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("version", "headers", "authority", "expected"),
    [
        ("HTTP/1.1", [(b"Host", b"WWW.TikTok.com:8080")], "", ("WWW.TikTok.com:8080", False)),
        ("HTTP/1.1", [(b"hOsT", b"a.test"), (b"Upgrade", b" WebSocket ")], "", ("a.test", True)),
        (
            "HTTP/1.1",
            [(b"Host", b"first.test"), (b"Host", b"second.test")],
            "",
            ("first.test", False),
        ),
        ("HTTP/1.0", [(b"Upgrade", b"h2c")], "", (None, False)),
        ("HTTP/1.1", [(b"Host", b"caf\xc3\xa9.test")], "", ("caf\u00e9.test", False)),
        ("HTTP/2.0", [(b"host", b"h.test")], "api.deepseek.com", ("api.deepseek.com", False)),
        ("HTTP/2.0", [(b"host", b"h.test")], "", ("h.test", False)),
        ("HTTP/3", [], "pay.weixin.qq.com:443", ("pay.weixin.qq.com:443", False)),
    ],
)
def test_host_and_upgrade_read_in_one_pass(
    version: str,
    headers: list[tuple[bytes, bytes]],
    authority: str,
    expected: tuple[str | None, bool],
) -> None:
    req = _request(version, headers, authority)
    assert host_and_upgrade(req) == expected
    hosts = [k for k, _ in headers if k.lower() == b"host"]
    if authority or len(hosts) == 1:  # agrees with mitmproxy's own accessor where it has one name
        assert req.host_header == expected[0]


# -- CONNECT ----------------------------------------------------------------------------------


def test_connect_monitor_counts_and_passes(env: Env) -> None:
    f = connect_flow("WWW.Watched.Test.")
    env.observe.http_connect(f)
    assert f.response is None
    assert env.hits("watchy", "monitor", "connect", "default") == 1
    (ev,) = env.events()
    assert ev.host == "www.watched.test" and ev.app == "watchy" and ev.signal == "connect"
    assert ev.client == "10.0.0.1" and ev.instance == "test-proxy"
    assert ev.policy_version == env.addon.state.policy.version  # type: ignore[union-attr]


def test_connect_block_is_403_with_header_and_no_upstream(env: Env) -> None:
    c = client()
    f = connect_flow("api.blocked.test", c)
    env.observe.http_connect(f)
    assert f.response is not None and f.response.status_code == 403
    hdr = f.response.headers["X-Egresswatch-Block"]
    (ev,) = env.events()
    assert hdr == f"app=blocky; regime=app; event={ev.event_id}"
    assert ev.action == "blocked"
    # mitmproxy skips the eager connect when a response is set; and should anything still try,
    # server_connect refuses it for this client.
    sd = server_data(c, "api.blocked.test")
    env.observe.server_connect(sd)
    assert sd.server.error is None  # regular mode: the CONNECT response already answered
    assert env.hits("blocky", "blocked", "connect") == 1


def test_unmatched_and_invalid_names_pass_uncounted(env: Env) -> None:
    for host in ("example.org", "notblocked.test", "a..b", "x" * 300):
        f = connect_flow(host)
        env.observe.http_connect(f)
        assert f.response is None
    assert env.events() == []
    sample = env.registry.get_sample_value
    assert sample("egresswatch_inspected_total", {"signal": "connect"}) == 4
    assert sample("egresswatch_invalid_names_total", {"signal": "connect"}) == 2


def test_off_apps_record_nothing(env: Env) -> None:
    f = connect_flow("off.test")
    env.observe.http_connect(f)
    assert f.response is None and env.events() == []


def test_exception_lets_traffic_through_as_exempted(env: Env) -> None:
    f = connect_flow("blocked.test", client(ip="10.9.9.9"))
    env.observe.http_connect(f)
    assert f.response is None
    (ev,) = env.events()
    assert ev.action == "exempted" and ev.exception_id == "EXC-1"
    assert env.hits("blocky", "exempted", "connect") == 1


def test_dry_run_records_would_block(env: Env) -> None:
    env.policy.write_text(POLICY.replace("default: monitor", "default: monitor\ndry_run: true"))
    env.addon.reload()
    f = connect_flow("blocked.test")
    env.observe.http_connect(f)
    assert f.response is None
    assert [e.action for e in env.events()] == ["would_block"]


def test_proxyauth_user_recorded_never_password(env: Env) -> None:
    f = connect_flow("watched.test")
    f.metadata["proxyauth"] = ("alice", "s3cret")
    env.observe.http_connect(f)
    (ev,) = env.events()
    assert ev.user == "alice"
    assert "s3cret" not in repr(env.events())


def test_connect_then_sni_same_app_counts_once(env: Env) -> None:
    c = client()
    env.observe.http_connect(connect_flow("watched.test", c))
    data = hello_data(env, "www.watched.test", c)
    env.layers.tls_clienthello(data)
    assert data.ignore_connection is True
    assert len(env.events()) == 1
    # a different app on the same connection is a new hit
    env.layers.tls_clienthello(hello_data(env, "blocked.test", c))
    assert [e.app for e in env.events()] == ["watchy", "blocky"]
    # a new connection counts again; a closed one forgets
    env.observe.client_disconnected(c)
    env.observe.http_connect(connect_flow("watched.test", c))
    assert len(env.events()) == 3


def test_socks_then_sni_counts_once(env: Env) -> None:
    c = client("socks5")
    sd = server_data(c, "watched.test")
    env.observe.server_connect(sd)
    assert sd.server.error is None
    env.layers.tls_clienthello(hello_data(env, "watched.test", c))
    assert [e.signal for e in env.events()] == ["socks5"]


def test_plain_http_proxy_requests_count_each(env: Env) -> None:
    c = client()
    for _ in range(3):
        f = request_flow("watched.test", c)
        env.observe.requestheaders(f)
        assert f.response is None
    assert env.hits("watchy", "monitor", "http_host", "default") == 3


def test_decrypted_requests_on_an_unmatched_tunnel_count_once(env: Env) -> None:
    env.tctx.configure(env.addon, egresswatch_decrypt="all")
    c = client()
    env.observe.http_connect(connect_flow("example.org", c))
    env.layers.tls_clienthello(hello_data(env, "example.org", c))
    c.tls = True  # mitmproxy intercepts the client's TLS
    for _ in range(3):  # a coalesced origin: Host differs from the CONNECT host and the SNI
        env.observe.requestheaders(request_flow("watched.test", c))
    assert env.hits("watchy", "monitor", "http_host", "default") == 1


def test_transparent_plain_http_counts_once_per_connection(env: Env) -> None:
    c = client("transparent")
    env.observe.server_connect(server_data(c, "198.51.100.1", 80))  # no CIDR matches
    for _ in range(3):
        env.observe.requestheaders(request_flow("watched.test", c))
    assert env.hits("watchy", "monitor", "http_host", "default") == 1
    env.observe.client_disconnected(c)
    assert env.conn(c) is None  # dropped with the connection


def test_decrypted_requests_count_only_new_apps(env: Env) -> None:
    c = client()
    env.observe.http_connect(connect_flow("watched.test", c))
    for host in ("watched.test", "cdn.watched.test", "example.org"):
        env.observe.requestheaders(request_flow(host, c))
    assert len(env.events()) == 1


# -- SOCKS5 / transparent / server_connect robustness -----------------------------------------


def test_socks5_block_refused_in_server_connect(env: Env) -> None:
    c = client("socks5")
    sd = server_data(c, "Blocked.Test")
    env.observe.server_connect(sd)
    assert sd.server.error is not None and "blocky" in sd.server.error
    assert env.hits("blocky", "blocked", "socks5") == 1


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("bad\udcffname.test", "IDNA"),
        ("a\x00.blocked.test", "NUL"),
        ("a" * 300, "longer than 253"),
        ("a" * 64 + ".test", "IDNA"),
    ],
)
def test_server_connect_refuses_names_asyncio_cannot_encode(env: Env, name: str, why: str) -> None:
    for mode in ("socks5", "regular"):
        sd = server_data(client(mode), name)
        env.observe.server_connect(sd)
        assert sd.server.error is not None and why in sd.server.error
    assert env.events() == []


def test_transparent_ip_literal_against_cidr(env: Env) -> None:
    c = client("transparent")
    sd = server_data(c, "192.0.2.55")
    env.observe.server_connect(sd)
    assert sd.server.error is not None
    (ev,) = env.events()
    assert ev.signal == "ip" and ev.app == "blocky" and ev.rule == "192.0.2.0/24"
    other = server_data(client("transparent"), "198.51.100.1")
    env.observe.server_connect(other)
    assert other.server.error is None


def test_upstream_mode_server_connect_is_the_upstream_proxy(env: Env) -> None:
    sd = server_data(client("upstream:http://blocked.test:3128"), "blocked.test", 3128)
    env.observe.server_connect(sd)
    assert sd.server.error is None and env.events() == []


def test_huge_host_header_is_rejected_without_matching_work(env: Env) -> None:
    host = "a." * 32768 + "blocked.test"
    f = request_flow("placeholder", client())
    f.request.headers["host"] = host
    t0 = time.perf_counter()
    env.observe.requestheaders(f)
    assert time.perf_counter() - t0 < 0.5
    assert f.response is None and env.events() == []


# -- HTTP -------------------------------------------------------------------------------------------


def test_requestheaders_block_page_html(env: Env) -> None:
    f = request_flow("blocked.test:8080", client(), accept="text/html,*/*;q=0.8")
    env.observe.requestheaders(f)
    assert f.response is not None and f.response.status_code == 403
    text = (f.response.content or b"").decode()
    assert "Blocky &lt;Video&gt;" in text and "<Video>" not in text
    assert "Security &lt;sec@example.org&gt; &amp; co" in text
    (ev,) = env.events()
    assert ev.event_id in text and ev.signal == "http_host"


def test_requestheaders_block_page_json(env: Env) -> None:
    f = request_flow("blocked.test", client(), accept="application/json")
    env.observe.requestheaders(f)
    assert f.response is not None
    assert f.response.headers["content-type"] == "application/json"
    doc = json.loads(f.response.content or b"")
    assert doc["contact"] == "Security <sec@example.org> & co" and doc["regime"] == "app"


def test_idn_host_matches_its_a_label(env: Env) -> None:
    f = request_flow("BÜCHER.test", client())
    env.observe.requestheaders(f)
    assert f.response is not None and f.response.status_code == 403


def test_websocket_upgrade_signal(env: Env) -> None:
    f = request_flow("watched.test", client(), upgrade="websocket", connection="Upgrade")
    env.observe.requestheaders(f)
    assert env.hits("watchy", "monitor", "websocket", "default") == 1


def test_requestheaders_skips_answered_flows(env: Env) -> None:
    f = request_flow("blocked.test", client())
    f.response = http.Response.make(200)
    env.observe.requestheaders(f)
    assert f.response.status_code == 200 and env.events() == []


# -- DNS ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "qtype", "rcode", "answer"),
    [
        ("nxdomain", dns.types.A, dns.response_codes.NXDOMAIN, None),
        ("refused", dns.types.A, dns.response_codes.REFUSED, None),
        ("null", dns.types.A, dns.response_codes.NOERROR, "0.0.0.0"),
        ("null", dns.types.AAAA, dns.response_codes.NOERROR, "::"),
        ("null", dns.types.MX, dns.response_codes.NOERROR, None),
    ],
)
def test_dns_block(env: Env, mode: str, qtype: int, rcode: int, answer: str | None) -> None:
    env.tctx.configure(env.addon, egresswatch_dns_block=mode)
    f = dns_flow("Www.Blocked.Test", qtype)
    env.observe.dns_request(f)
    assert f.response is not None and f.response.response_code == rcode
    got = [
        str(a.ipv4_address) if a.type == dns.types.A else str(a.ipv6_address)
        for a in f.response.answers
    ]
    assert got == ([answer] if answer else [])
    assert env.hits("blocky", "blocked", "dns") == 1


def test_dns_monitor_counts_each_query(env: Env) -> None:
    for _ in range(2):
        f = dns_flow("watched.test")
        env.observe.dns_request(f)
        assert f.response is None
    assert env.hits("watchy", "monitor", "dns", "default") == 2


# -- robustness and per-connection state -------------------------------------------------------


def test_hook_errors_are_counted_not_raised(
    env: Env, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("matcher exploded")

    class Boom:
        match = staticmethod(boom)

    assert env.addon.state is not None
    env.addon.state = dataclasses.replace(env.addon.state, matcher=Boom())  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="egresswatch"):
        env.observe.http_connect(connect_flow("blocked.test"))
    assert "unexpected error in http_connect" in caplog.text
    assert (
        env.registry.get_sample_value("egresswatch_hook_errors_total", {"hook": "http_connect"})
        == 1
    )


def test_per_connection_state_is_dropped_on_disconnect(env: Env) -> None:
    c = client(ip="10.1.2.3")
    env.observe.http_connect(connect_flow("watched.test", c))
    env.observe.http_connect(connect_flow("blocked.test", c))
    assert [e.client for e in env.events()] == ["10.1.2.3", "10.1.2.3"]
    conn = env.conn(c)
    assert conn is not None and set(conn.apps) == {"watchy", "blocky"}
    assert conn.identity_known and conn.identity == "10.1.2.3"
    env.observe.client_disconnected(c)
    assert env.conn(c) is None  # apps, refusal, block page, user, identity: all gone


def test_per_connection_state_lifetime(env: Env) -> None:
    """Nothing is kept for a connection that sees no designated app; what a connection's hooks
    learn (user, refusal, block page, apps) lives in one object until it disconnects, and a new
    connection of the same client starts empty."""
    quiet = client()
    env.observe.http_connect(connect_flow("example.org", quiet))
    env.observe.requestheaders(request_flow("example.org", quiet))
    assert env.conn(quiet) is None
    env.tctx.configure(env.addon, egresswatch_decrypt="blocked")
    c = client(ip="10.1.2.4")
    f = connect_flow("blocked.test", c)
    f.metadata["proxyauth"] = ("alice", "secret")
    env.observe.http_connect(f)
    conn = env.conn(c)
    assert conn is not None
    assert (conn.user, conn.refuse, set(conn.apps)) == ("alice", True, {"blocky"})
    assert conn.block_page is not None and conn.block_page.event_id == env.events()[0].event_id
    sd = server_data(c, "blocked.test")
    env.observe.server_connect(sd)
    assert sd.server.error == "egresswatch: blocked by policy"
    env.observe.client_disconnected(c)
    assert env.conn(c) is None
    env.observe.client_disconnected(c)  # a second disconnect (or an unknown one) is harmless
    again = client(ip="10.1.2.4")
    sd = server_data(again, "blocked.test")
    env.observe.server_connect(sd)
    assert sd.server.error is None and env.conn(again) is None


def test_identity_change_recomputes_stored_identities(env: Env, tmp_path: Path) -> None:
    c = client(ip="10.1.2.5")
    env.observe.http_connect(connect_flow("watched.test", c))
    key = tmp_path / "key"
    key.write_bytes(b"k" * 32)
    env.tctx.configure(
        env.addon, egresswatch_client_identity="hash", egresswatch_client_key_file=str(key)
    )
    env.observe.http_connect(connect_flow("blocked.test", c))
    first, second = (e.client for e in env.events())
    assert first == "10.1.2.5" and second is not None and second != first
