"""End to end, bad input: odd names, broken files at start-up and at reload. None may crash a hook
(teardown fails on any traceback in mitmdump's log) or stop the proxy."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.plugins.proxy import ProxyFactory
from tests.plugins.proxy import RunningProxy
from tests.plugins.proxy import write_catalogue
from tests.support import clients
from tests.support.upstreams import UpstreamPKI

pytestmark = pytest.mark.e2e

HITS = "egresswatch_hits_total"
POLICY = "default: monitor\napps:\n  deepseek: block\n"
OPTIONS = {"egresswatch_bundled": "false", "egresswatch_reload_interval": "0"}


@pytest.fixture(scope="module")
def proxy(start_proxy_module: ProxyFactory, e2e_catalogue: Path) -> RunningProxy:
    return start_proxy_module(options=OPTIONS, policy=POLICY, lists=[e2e_catalogue])


def still_serves(p: RunningProxy) -> None:
    with httpx.Client(proxy=p.proxy_url, trust_env=False, timeout=5) as c:
        assert c.get("http://neutral.test/ok").status_code == 200
    assert p.alive()


@pytest.mark.parametrize(
    "host",
    [
        b"",
        b"[",
        b"[::1",
        b"a..b",
        b".",
        b"-.test",
        b"host:99999",
        b"host:port",
        b"a b.test",
        b"\xff\xfe.test",
        b"xn--.test",
        b"xn--zz-\xff.test",
        b"x" * 300,
    ],
)
def test_malformed_host_header_answered_without_crash(proxy: RunningProxy, host: bytes) -> None:
    resp = clients.http_via_proxy(proxy.ports["regular"], b"http://neutral.test/", host)
    assert resp.status is None or 200 <= resp.status < 600
    still_serves(proxy)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        (b"http://neutral.test/", b"API.DEEPSEEK.COM"),
        (b"http://neutral.test/", b"api.deepseek.com."),
        (b"http://neutral.test/", b"Api.DeepSeek.Com.:80"),
        (b"http://API.DEEPSEEK.COM./", b"API.DEEPSEEK.COM."),
    ],
)
def test_upper_case_and_trailing_dot_are_normalised(
    proxy: RunningProxy, url: bytes, host: bytes
) -> None:
    resp = clients.http_via_proxy(proxy.ports["regular"], url, host)
    assert resp.status == 403
    assert "app=deepseek" in (clients.header(resp, "X-Egresswatch-Block") or "")


def test_connect_upper_case_trailing_dot_blocked(proxy: RunningProxy) -> None:
    sock, resp = clients.connect(proxy.ports["regular"], b"API.DeepSeek.COM.:443")
    sock.close()
    assert resp.status == 403


def test_idn_names_match_their_a_label(proxy: RunningProxy) -> None:
    before = proxy.metric_sum(HITS, app="example-app", signal="http_host")
    # Raw UTF-8 Host header, mixed case, trailing dot (mitmproxy passes it through as is).
    resp = clients.http_via_proxy(
        proxy.ports["regular"], b"http://neutral.test/", "Bücher.Test.".encode()
    )
    assert resp.status == 200
    # curl converts the IDN itself (libidn2): the proxy sees the A-label.
    out = clients.curl("-o", "/dev/null", "-x", str(proxy.proxy_url), "http://bücher.test/")
    assert out.returncode == 0, out.stderr
    assert proxy.metric_sum(HITS, app="example-app", signal="http_host") == before + 2


def test_missing_sni_counts_the_connect_target(proxy: RunningProxy, test_pki: UpstreamPKI) -> None:
    before = proxy.metric_sum(HITS, app="tiktok", signal="connect")
    sock, resp = clients.connect(proxy.ports["regular"], b"www.tiktok.com:443")
    with sock:
        assert resp.status == 200
        with clients.tls_through(sock, None) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: www.tiktok.com\r\nConnection: close\r\n\r\n")
            r = clients.read_http_response(tls)
    assert r.status == 200
    assert b'"sni": null' in r.body
    assert proxy.metric_sum(HITS, app="tiktok", signal="connect") == before + 1


def test_ip_literals(proxy: RunningProxy) -> None:
    before = proxy.metric_sum(HITS, app="example-app", signal="http_host")
    resp = clients.http_via_proxy(
        proxy.ports["regular"], b"http://198.51.100.20/", b"198.51.100.20"
    )
    assert resp.status == 200
    resp = clients.http_via_proxy(
        proxy.ports["regular"], b"http://[2001:db8::1]/", b"[2001:db8::1]"
    )
    assert resp.status == 200  # routed to the loopback upstream, not in the catalogue
    assert proxy.metric_sum(HITS, app="example-app", signal="http_host") == before + 1


def test_300_character_names(proxy: RunningProxy) -> None:
    long_name = (".".join(["a" * 60] * 5) + ".deepseek.com").encode()  # 318 bytes
    assert len(long_name) > 300
    before = proxy.metric_sum(HITS)
    sock, resp = clients.connect(proxy.ports["regular"], long_name + b":443")
    sock.close()
    assert resp.status is not None and resp.status >= 400  # refused, never matched
    resp = clients.http_via_proxy(proxy.ports["regular"], b"http://neutral.test/", long_name)
    assert resp.status is not None
    assert proxy.metric_sum(HITS) == before  # over 253 bytes: never a match
    still_serves(proxy)


# -- broken files at start-up ------------------------------------------------------------------
def test_broken_policy_at_startup_exits_nonzero_with_file_line(
    start_proxy: ProxyFactory, e2e_catalogue: Path
) -> None:
    policy = "default: monitor\napps:\n  deepseek: blokc\n"
    p = start_proxy(
        options=OPTIONS,
        policy=policy,
        lists=[e2e_catalogue],
        wait_ready=False,
    )
    assert p.wait(timeout=30) != 0
    log = p.log()
    assert "policy.yaml:3:" in log, log
    assert "blokc" in log


def test_broken_catalogue_at_startup_exits_nonzero_with_file_line(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    cat = write_catalogue(tmp_path / "cat")
    text = (cat / "tiktok.yaml").read_text().replace("confidence: high", "confidence: sure", 1)
    (cat / "tiktok.yaml").write_text(text)
    line = text.splitlines().index("    confidence: sure") + 1
    p = start_proxy(
        options=OPTIONS,
        policy=POLICY,
        lists=[cat],
        wait_ready=False,
    )
    assert p.wait(timeout=30) != 0
    assert f"tiktok.yaml:{line}:" in p.log(), p.log()


# -- broken files at reload --------------------------------------------------------------------
@pytest.fixture
def reloadable(start_proxy: ProxyFactory, tmp_path: Path) -> tuple[RunningProxy, Path, Path]:
    cat = write_catalogue(tmp_path / "cat")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    p = start_proxy(options={**OPTIONS, "egresswatch_policy": str(policy)}, lists=[cat])
    return p, cat, policy


def test_broken_catalogue_at_reload_keeps_old_rules(
    reloadable: tuple[RunningProxy, Path, Path],
) -> None:
    p, cat, _ = reloadable
    failures = p.metric_sum("egresswatch_reload_failures_total", kind="catalogue")
    (cat / "deepseek.yaml").write_text("id: deepseek\nname: DeepSeek\ndomains: [\n")
    log = p.reload()
    assert "egresswatch: catalogue reload rejected:" in log
    assert "deepseek.yaml:" in log
    assert p.metric_sum("egresswatch_reload_failures_total", kind="catalogue") == failures + 1
    # Old rules still in force: deepseek blocked, tiktok counted.
    before = p.metric_sum(HITS, app="tiktok")
    with httpx.Client(proxy=p.proxy_url, trust_env=False, timeout=5) as c:
        assert c.get("http://api.deepseek.com/").status_code == 403
        assert c.get("http://www.tiktok.com/").status_code == 200
    assert p.metric_sum(HITS, app="tiktok") == before + 1
    # A fixed file is taken on the next reload.
    write_catalogue(cat)  # repaired, and tiktok now lists tiktokv.com only
    tiktok = cat / "tiktok.yaml"
    tiktok.write_text(tiktok.read_text().replace("domain: tiktok.com", "domain: tiktokv.com"))
    log = p.reload()
    assert "egresswatch: catalogue reloaded version=" in log
    before = p.metric_sum(HITS, app="tiktok")
    with httpx.Client(proxy=p.proxy_url, trust_env=False, timeout=5) as c:
        assert c.get("http://www.tiktok.com/").status_code == 200
    assert p.metric_sum(HITS, app="tiktok") == before  # no longer in the catalogue


def test_broken_policy_at_reload_keeps_old_policy(
    reloadable: tuple[RunningProxy, Path, Path],
) -> None:
    p, _, policy = reloadable
    failures = p.metric_sum("egresswatch_reload_failures_total", kind="policy")
    policy.write_text("default: monitor\napps:\n  nosuchapp: block\n")
    log = p.reload()
    assert "egresswatch: policy reload rejected:" in log
    assert "policy.yaml:3:" in log
    assert p.metric_sum("egresswatch_reload_failures_total", kind="policy") == failures + 1
    with httpx.Client(proxy=p.proxy_url, trust_env=False, timeout=5) as c:
        assert c.get("http://api.deepseek.com/").status_code == 403  # old policy
    policy.write_text("default: monitor\n")
    log = p.reload()
    assert "egresswatch: policy reloaded version=" in log
    with httpx.Client(proxy=p.proxy_url, trust_env=False, timeout=5) as c:
        assert c.get("http://api.deepseek.com/").status_code == 200  # new policy: monitor
