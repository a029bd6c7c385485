"""Self-test of the end-to-end harness with plain mitmdump (no egresswatch).

If these fail, every ``test_e2e_*`` result is suspect: they prove that the loopback routing, the
test CA, the readiness file and the upstream counters do what the other e2e tests assume.
"""

from __future__ import annotations

import socket
import ssl
import subprocess

import dns.message
import dns.query
import dns.rcode
import httpx
import pytest

from tests.plugins.proxy import ProxyFactory
from tests.plugins.proxy import RunningProxy
from tests.support.upstreams import UpstreamPKI
from tests.support.upstreams import Upstreams

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def plain(start_proxy_module: ProxyFactory) -> RunningProxy:
    # --ignore-hosts '.' passes every TLS connection through, as egresswatch does by default.
    return start_proxy_module(
        modes=("regular", "socks5", "dns"),
        with_addon=False,
        extra_args=["--ignore-hosts", "."],
    )


def test_ports_and_process(plain: RunningProxy) -> None:
    assert set(plain.ports) == {"regular", "socks5", "dns"}
    assert all(p > 0 for p in plain.ports.values())
    assert plain.proxy_url == f"http://127.0.0.1:{plain.ports['regular']}"
    assert plain.open_fds() > 3
    assert plain.rss_kb() > 10_000


def test_plain_http_is_routed_to_loopback(plain: RunningProxy, upstreams: Upstreams) -> None:
    with httpx.Client(proxy=plain.proxy_url, trust_env=False, timeout=10) as c:
        r = c.get("http://www.tiktok.com/some/path")
    assert r.status_code == 200
    assert r.json() == {
        "server": "http",
        "method": "GET",
        "host": "www.tiktok.com",
        "path": "/some/path",
        "sni": None,
    }


def test_tls_passthrough_verifies_against_test_ca(
    plain: RunningProxy, upstreams: Upstreams, test_pki: UpstreamPKI
) -> None:
    before = upstreams.stats("tls").connections
    with httpx.Client(
        proxy=plain.proxy_url,
        trust_env=False,
        timeout=10,
        verify=ssl.create_default_context(cafile=str(test_pki.ca_cert)),
    ) as c:
        r = c.get("https://api.deepseek.com/v1")
    assert r.json()["sni"] == "api.deepseek.com"
    assert r.json()["host"] == "api.deepseek.com"
    assert upstreams.stats("tls").connections == before + 1


def test_client_without_test_ca_fails(plain: RunningProxy) -> None:
    with httpx.Client(proxy=plain.proxy_url, trust_env=False, timeout=10) as c:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            c.get("https://api.deepseek.com/")


def test_unmapped_port_is_refused_not_forwarded(plain: RunningProxy) -> None:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            plain.proxy_url,
            "http://neutral.test:8089/",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.stdout == "502"


def test_socks5_hostname_routed(plain: RunningProxy, test_pki: UpstreamPKI) -> None:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--cacert",
            str(test_pki.ca_cert),
            "--socks5-hostname",
            f"127.0.0.1:{plain.ports['socks5']}",
            "https://www.tiktok.com/x",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 0, out.stderr
    assert '"sni": "www.tiktok.com"' in out.stdout


def test_dns_answers_loopback(plain: RunningProxy) -> None:
    q = dns.message.make_query("www.tiktok.com", "A")
    r = dns.query.udp(q, "127.0.0.1", port=plain.ports["dns"], timeout=5)
    assert r.rcode() == dns.rcode.NOERROR
    assert [a.address for rrset in r.answer for a in rrset] == ["127.0.0.1"]


def test_upstream_counts_bytes_at_relay(upstreams: Upstreams, test_pki: UpstreamPKI) -> None:
    before = upstreams.stats("tls")
    ctx = ssl.create_default_context(cafile=str(test_pki.ca_cert))
    with socket.create_connection(("127.0.0.1", upstreams.ports["tls"]), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="example.test") as t:
            t.sendall(b"GET / HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n")
            assert b'"sni": "example.test"' in t.recv(4096)
    after = upstreams.stats("tls")
    assert after.connections == before.connections + 1
    assert after.bytes_in > before.bytes_in
