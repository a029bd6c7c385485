"""End to end, hostile input (MITMPROXY.md section 13): names that froze or leaked mitmproxy 12.3.1.

Each test shows the proxy keeps answering other clients promptly and does not leak connections
(file descriptors of mitmdump stay flat). The fuzz test sends thousands of seeded hostile names
through every channel that carries a name: Host header, CONNECT target, SOCKS5 name, TLS SNI.
"""

from __future__ import annotations

import os
import random
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from tests.plugins.proxy import ProxyFactory
from tests.plugins.proxy import RunningProxy
from tests.support import clients
from tests.support.hostile import client_hello
from tests.support.hostile import for_header
from tests.support.hostile import hostile_names

pytestmark = pytest.mark.e2e

POLICY = "default: monitor\napps:\n  deepseek: block\n"
OPTIONS = {"egresswatch_bundled": "false", "egresswatch_reload_interval": "0"}
ANSWER_TIMEOUT = 10.0
#: 127.0.0.1 and ::1 (plain and v4-mapped) as /proc/net/tcp{,6} print them.
LOOPBACK_HEX = (
    "0100007F",
    "00000000000000000000000001000000",
    "0000000000000000FFFF00000100007F",
)


@pytest.fixture(scope="module")
def proxy(start_proxy_module: ProxyFactory, e2e_catalogue: Path) -> RunningProxy:
    return start_proxy_module(
        modes=("regular", "socks5"), options=OPTIONS, policy=POLICY, lists=[e2e_catalogue]
    )


def normal_request_seconds(p: RunningProxy) -> float:
    t0 = time.monotonic()
    with httpx.Client(proxy=p.proxy_url, trust_env=False, timeout=30) as c:
        assert c.get("http://neutral.test/ping").status_code == 200
    return time.monotonic() - t0


def settled_fds(p: RunningProxy, limit: int, timeout: float = 15) -> int:
    """Wait until mitmdump's fd count is at most ``limit`` (connections wind down async)."""
    deadline = time.monotonic() + timeout
    while (n := p.open_fds()) > limit and time.monotonic() < deadline:
        time.sleep(0.2)
    return n


def test_32k_label_host_header_does_not_freeze_the_loop(proxy: RunningProxy) -> None:
    huge = b"a." * 32767 + b"deepseek.com"  # 32,768 labels, ~64 KiB
    invalid = proxy.metric_sum("egresswatch_invalid_names_total")
    answers: list[int | None] = []

    def hostile() -> None:
        answers.append(
            clients.http_via_proxy(proxy.ports["regular"], b"http://neutral.test/", huge).status
        )

    threads = [threading.Thread(target=hostile) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    latencies = [normal_request_seconds(proxy) for _ in range(5)]
    for t in threads:
        t.join(timeout=30)
    assert len(answers) == 4 and all(a is not None for a in answers), answers
    assert max(latencies) < 1.5, latencies
    assert proxy.metric_sum("egresswatch_invalid_names_total") >= invalid + 4


@pytest.mark.parametrize(
    "name",
    [
        b"a\x00b.test",
        b"api.deepseek.com\x00.evil",
        b"a..b.test",
        b"x" * 64 + b".test",
        b"\xff\xfe.test",
        "ü".encode() * 60,
        b"xn--ls8h\xff.test",
    ],
)
def test_socks5_bad_name_gets_a_socks_error(proxy: RunningProxy, name: bytes) -> None:
    t0 = time.monotonic()
    sock, rep = clients.socks5_connect(proxy.ports["socks5"], name, timeout=ANSWER_TIMEOUT)
    sock.close()
    assert rep is not None and rep != 0, rep
    assert time.monotonic() - t0 < 5


def test_socks5_bad_names_do_not_leak_fds(proxy: RunningProxy) -> None:
    baseline = settled_fds(proxy, 10**6, timeout=0)
    for i in range(300):
        name = [b"a\x00b.test", b"a..b.test", b"x" * 64 + b".test", b"\xff.test"][i % 4]
        sock, rep = clients.socks5_connect(proxy.ports["socks5"], name, timeout=ANSWER_TIMEOUT)
        sock.close()
        assert rep not in (None, 0)
    assert settled_fds(proxy, baseline + 5) <= baseline + 5


@pytest.fixture(scope="module")
def decrypt_all(start_proxy_module: ProxyFactory, e2e_catalogue: Path) -> RunningProxy:
    return start_proxy_module(
        options={**OPTIONS, "egresswatch_decrypt": "all"}, policy=POLICY, lists=[e2e_catalogue]
    )


@pytest.mark.parametrize(
    ("target", "sni"),
    [
        (b"www.tiktok.com:443", "www.tiktok.com."),
        (b"neutral.test:443", "neutral.test."),
        (b"neutral.test:443", "cdn-.neutral.test"),
        (b"api.deepseek.com:443", "api.deepseek.com."),
    ],
)
def test_decrypt_all_with_unverifiable_sni_does_not_stall(
    decrypt_all: RunningProxy, target: bytes, sni: str
) -> None:
    sock, resp = clients.connect(decrypt_all.ports["regular"], target)
    t0 = time.monotonic()
    with sock:
        if resp.status != 200:
            assert resp.status == 403 and target.startswith(b"api.deepseek")
            return
        try:
            with clients.tls_through(sock, sni, timeout=ANSWER_TIMEOUT) as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: neutral.test\r\nConnection: close\r\n\r\n")
                clients.read_http_response(tls)
        except (ssl.SSLError, ConnectionError):
            pass  # refused quickly is fine; only a stall is a failure
        except TimeoutError:
            pytest.fail(f"TLS handshake with SNI {sni!r} stalled")
    assert time.monotonic() - t0 < 5


def test_decrypt_all_intercepts_valid_names(decrypt_all: RunningProxy) -> None:
    ctx = ssl.create_default_context(cafile=str(decrypt_all.mitmproxy_ca))
    with httpx.Client(proxy=decrypt_all.proxy_url, trust_env=False, timeout=10, verify=ctx) as c:
        assert c.get("https://neutral.test/").status_code == 200


# -- fuzzing ------------------------------------------------------------------------------------
def _answered(fn: Callable[[], object]) -> str:
    """Run one hostile case; 'ok' if the proxy answered or closed, 'hang' on a timeout."""
    try:
        fn()
        return "ok"
    except TimeoutError:
        return "hang"
    except (OSError, ValueError, ssl.SSLError):
        return "ok"  # reset / refused / unparsable answer: the proxy did not hang


def _host_case(port: int, name: bytes) -> Callable[[], object]:
    return lambda: clients.http_via_proxy(
        port, b"http://neutral.test/", for_header(name), timeout=ANSWER_TIMEOUT
    )


def _connect_case(port: int, name: bytes) -> Callable[[], object]:
    def run() -> None:
        target = for_header(name).replace(b" ", b"%") + b":443"
        sock, _ = clients.connect(port, target, timeout=ANSWER_TIMEOUT)
        sock.close()

    return run


def _socks_case(port: int, name: bytes) -> Callable[[], object]:
    def run() -> None:
        sock, rep = clients.socks5_connect(port, name[:255], timeout=ANSWER_TIMEOUT)
        sock.close()
        if rep is None:
            raise ConnectionError("closed without a SOCKS reply")  # answered, by closing

    return run


def _sni_case(port: int, name: bytes) -> Callable[[], object]:
    def run() -> None:
        # Port 8443 goes to the sink upstream (Python's TLS server chokes on non-ASCII SNI).
        sock, resp = clients.connect(port, b"neutral.test:8443", timeout=ANSWER_TIMEOUT)
        with sock:
            if resp.status != 200:
                return
            sock.sendall(client_hello(name[:200]))
            sock.recv(65536)  # ServerHello, alert or EOF: anything but silence

    return run


def test_fuzz_thousands_of_hostile_names(proxy: RunningProxy) -> None:
    rng = random.Random(20261128)
    port, socks = proxy.ports["regular"], proxy.ports["socks5"]
    baseline = settled_fds(proxy, 10**6, timeout=0)
    cases: list[Callable[[], object]] = []
    cases += [_host_case(port, n) for n in hostile_names(rng, 600, max_len=4000)]
    cases += [_connect_case(port, n) for n in hostile_names(rng, 600, max_len=1000)]
    cases += [_socks_case(socks, n) for n in hostile_names(rng, 600, max_len=255)]
    cases += [_sni_case(port, n) for n in hostile_names(rng, 400, max_len=200)]
    rng.shuffle(cases)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(_answered, cases))
    assert len(results) == 2200
    assert results.count("hang") == 0, f"{results.count('hang')} cases got no answer"
    assert proxy.alive()
    assert normal_request_seconds(proxy) < 2
    after = settled_fds(proxy, baseline + 10)
    assert after <= baseline + 10, (baseline, after)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(name=st.one_of(st.binary(min_size=1, max_size=300), st.text(min_size=1, max_size=100)))
def test_property_any_host_header_gets_an_answer(proxy: RunningProxy, name: bytes | str) -> None:
    raw = name.encode("utf-8", "surrogatepass") if isinstance(name, str) else name
    resp = clients.http_via_proxy(
        proxy.ports["regular"], b"http://neutral.test/", for_header(raw), timeout=ANSWER_TIMEOUT
    )
    assert resp.status is None or 100 <= resp.status < 600


def test_property_any_socks_name_gets_a_reply(proxy: RunningProxy) -> None:
    @settings(max_examples=150, deadline=None)
    @given(name=st.binary(min_size=1, max_size=255))
    def check(name: bytes) -> None:
        sock, rep = clients.socks5_connect(proxy.ports["socks5"], name, timeout=ANSWER_TIMEOUT)
        sock.close()
        assert rep is not None

    check()
    assert proxy.alive()


def test_loopback_only(proxy: RunningProxy) -> None:
    """The harness itself: mitmdump holds no connection outside loopback after all of the above."""
    for path in (f"/proc/{proxy.pid}/net/tcp", f"/proc/{proxy.pid}/net/tcp6"):
        text = Path(path).read_text().splitlines()[1:]
        inodes = set()
        for fd in os.listdir(f"/proc/{proxy.pid}/fd"):
            try:
                inodes.add(os.readlink(f"/proc/{proxy.pid}/fd/{fd}"))
            except FileNotFoundError:
                continue
        for line in text:
            parts = line.split()
            remote, inode = parts[2], parts[9]
            if f"socket:[{inode}]" not in inodes or remote.endswith(":0000"):
                continue
            ip = remote.split(":")[0]
            assert ip in LOOPBACK_HEX, remote
