"""End to end, regular (explicit HTTP proxy) mode: real mitmdump, real clients, loopback upstreams.

Policy: deepseek and wechat-pay are blocked, everything else monitored. Names route to the
loopback upstreams through ``tests/support/route_loopback.py``.
"""

from __future__ import annotations

import json
import signal
import ssl
from pathlib import Path

import httpx
import pytest

from tests.plugins.proxy import ProxyFactory
from tests.plugins.proxy import RunningProxy
from tests.support import clients
from tests.support.upstreams import UpstreamPKI
from tests.support.upstreams import Upstreams

pytestmark = pytest.mark.e2e

HITS = "egresswatch_hits_total"
POLICY = """\
default: monitor
apps:
  deepseek: block
  wechat-pay: block
contact: compliance@example.test
"""
OPTIONS = {"egresswatch_bundled": "false", "egresswatch_reload_interval": "0"}


@pytest.fixture(scope="module")
def proxy(start_proxy_module: ProxyFactory, e2e_catalogue: Path) -> RunningProxy:
    return start_proxy_module(options=OPTIONS, policy=POLICY, lists=[e2e_catalogue])


def hits(p: RunningProxy, **labels: str) -> float:
    return p.metric_sum(HITS, **labels)


def client(p: RunningProxy, verify: ssl.SSLContext | bool = True) -> httpx.Client:
    return httpx.Client(proxy=p.proxy_url, trust_env=False, timeout=10, verify=verify)


def test_plain_http_monitored_is_counted(proxy: RunningProxy) -> None:
    before = hits(proxy, app="tiktok", action="monitor", signal="http_host")
    with client(proxy) as c:
        r = c.get("http://www.tiktok.com/feed")
    assert r.status_code == 200
    assert r.json()["host"] == "www.tiktok.com"
    assert hits(proxy, app="tiktok", action="monitor", signal="http_host") == before + 1


def test_plain_http_block_page_html(proxy: RunningProxy, upstreams: Upstreams) -> None:
    seen_before = upstreams.stats("http").hosts.count("api.deepseek.com")
    before = hits(proxy, app="deepseek", action="blocked", signal="http_host")
    with client(proxy) as c:
        r = c.get("http://api.deepseek.com/v1/chat", headers={"Accept": "text/html"})
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("text/html")
    assert "DeepSeek" in r.text and "compliance@example.test" in r.text
    block = r.headers["x-egresswatch-block"]
    assert "app=deepseek" in block
    event_id = block.rsplit("event=", 1)[1]
    assert event_id in r.text
    assert hits(proxy, app="deepseek", action="blocked", signal="http_host") == before + 1
    assert upstreams.stats("http").hosts.count("api.deepseek.com") == seen_before


def test_plain_http_block_page_json(proxy: RunningProxy) -> None:
    with client(proxy) as c:
        r = c.get("http://pay.weixin.qq.com/", headers={"Accept": "application/json"})
    assert r.status_code == 403
    doc = r.json()
    assert doc["blocked"] is True
    assert doc["app"] == "wechat-pay"
    assert doc["host"] == "pay.weixin.qq.com"
    assert doc["regime"] == "app"
    assert doc["contact"] == "compliance@example.test"
    assert doc["event_id"]


def test_connect_monitor_passes_tls_through_untouched(
    proxy: RunningProxy, upstreams: Upstreams, test_pki: UpstreamPKI
) -> None:
    """The client trusts only the upstream's test CA (not mitmproxy's): success proves the TLS
    session is the upstream's own, i.e. no interception by default."""
    before = hits(proxy, app="tiktok")
    before_conns = upstreams.stats("tls").connections
    with client(proxy, ssl.create_default_context(cafile=str(test_pki.ca_cert))) as c:
        r = c.get("https://www.tiktok.com/watch")
    assert r.status_code == 200
    assert r.json()["sni"] == "www.tiktok.com"
    assert upstreams.stats("tls").connections == before_conns + 1
    # CONNECT and SNI name the same app on one connection: counted once.
    assert hits(proxy, app="tiktok") == before + 1
    assert hits(proxy, app="tiktok", signal="connect") >= 1


def test_connect_block_is_403_with_header_and_no_upstream(
    proxy: RunningProxy, upstreams: Upstreams, test_pki: UpstreamPKI
) -> None:
    before = upstreams.stats("tls")
    out = clients.curl(
        "-v",
        "--cacert",
        str(test_pki.ca_cert),
        "-x",
        str(proxy.proxy_url),
        "https://api.deepseek.com/v1/models",
    )
    assert out.returncode == 56, out.stderr
    assert "CONNECT tunnel failed, response 403" in out.stderr
    assert "< X-Egresswatch-Block: app=deepseek" in out.stderr
    after = upstreams.stats("tls")
    assert after.connections == before.connections
    assert after.bytes_in == before.bytes_in


def test_websocket_upgrade_counted_as_websocket(proxy: RunningProxy, upstreams: Upstreams) -> None:
    before = hits(proxy, app="tiktok", signal="websocket")
    status, echo = clients.websocket_via_proxy(
        proxy.ports["regular"], "ws://www.tiktok.com:81/live", "hello through the proxy"
    )
    assert (status, echo) == (101, "hello through the proxy")
    assert hits(proxy, app="tiktok", signal="websocket") == before + 1
    assert "www.tiktok.com:81" in upstreams.stats("ws").hosts


def test_websocket_to_blocked_app_refused(proxy: RunningProxy) -> None:
    status, _ = clients.websocket_via_proxy(
        proxy.ports["regular"], "ws://chat.deepseek.com:81/socket", "x"
    )
    assert status == 403


def test_ip_literal_connect_matches_cidr(proxy: RunningProxy) -> None:
    before = hits(proxy, app="example-app", signal="connect")
    sock, resp = clients.connect(proxy.ports["regular"], b"198.51.100.7:443")
    with sock:
        assert resp.status == 200
        with clients.tls_through(sock, None) as tls:  # IP literal: no SNI (RFC 6066)
            tls.sendall(b"GET / HTTP/1.1\r\nHost: 198.51.100.7\r\nConnection: close\r\n\r\n")
            assert clients.read_http_response(tls).status == 200
    assert hits(proxy, app="example-app", signal="connect") == before + 1


def test_neutral_names_are_not_counted(proxy: RunningProxy) -> None:
    total = hits(proxy)
    with client(proxy) as c:
        assert c.get("http://neutral.test/").status_code == 200
        assert c.get("http://weixin.qq.com/").status_code == 200  # wechat-pay is exact-only
    assert hits(proxy) == total


def test_hits_reach_the_store_after_graceful_stop(
    start_proxy: ProxyFactory, e2e_catalogue: Path, test_pki: UpstreamPKI
) -> None:
    p = start_proxy(options=OPTIONS, policy=POLICY, lists=[e2e_catalogue])
    with client(p) as c:
        assert c.get("http://www.tiktok.com/a").status_code == 200
        assert c.get("http://api.deepseek.com/b").status_code == 403
    with client(p, ssl.create_default_context(cafile=str(test_pki.ca_cert))) as c:
        assert c.get("https://www.tiktok.com/c").status_code == 200
    assert p.stop(signal.SIGINT) == 0
    events = p.events()
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" or "start" in kinds
    assert kinds[-1] == "stop"
    hit_rows = {(e.app, e.action, e.signal, e.host) for e in events if e.kind == "hit"}
    assert ("tiktok", "monitor", "http_host", "www.tiktok.com") in hit_rows
    assert ("deepseek", "blocked", "http_host", "api.deepseek.com") in hit_rows
    assert ("tiktok", "monitor", "connect", "www.tiktok.com") in hit_rows
    assert len([e for e in events if e.kind == "hit"]) == 3
    versions = {e.catalogue_version for e in events if e.kind == "hit"}
    assert len(versions) == 1 and len(versions.pop()) == 64


@pytest.fixture(scope="module")
def decrypting(start_proxy_module: ProxyFactory, e2e_catalogue: Path) -> RunningProxy:
    return start_proxy_module(
        options={**OPTIONS, "egresswatch_decrypt": "blocked"}, policy=POLICY, lists=[e2e_catalogue]
    )


def test_decrypt_blocked_shows_block_page_to_client_trusting_mitmproxy_ca(
    decrypting: RunningProxy, upstreams: Upstreams
) -> None:
    before = upstreams.stats("tls")
    ctx = ssl.create_default_context(cafile=str(decrypting.mitmproxy_ca))
    with client(decrypting, ctx) as c:
        r = c.get("https://api.deepseek.com/v1", headers={"Accept": "application/json"})
    assert r.status_code == 403
    assert r.json()["app"] == "deepseek"
    after = upstreams.stats("tls")
    assert (after.connections, after.bytes_in) == (before.connections, before.bytes_in)


def test_decrypt_blocked_still_passes_monitored_tls_through(
    decrypting: RunningProxy, test_pki: UpstreamPKI
) -> None:
    ctx = ssl.create_default_context(cafile=str(test_pki.ca_cert))
    with client(decrypting, ctx) as c:
        r = c.get("https://www.tiktok.com/")
    assert r.status_code == 200
    assert json.loads(r.text)["sni"] == "www.tiktok.com"
