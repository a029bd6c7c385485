"""End to end: a real mitmdump answers /healthz and /readyz beside its metrics, serves the PAC
file, and speaks systemd's notification protocol to a datagram socket the test owns."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.plugins.proxy import ProxyFactory

pytestmark = [pytest.mark.e2e]

OPTIONS = {"egresswatch_bundled": "false", "egresswatch_reload_interval": "0"}


def get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, 503 included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def test_readiness_waits_for_the_store_and_liveness_beats(
    start_proxy: ProxyFactory, e2e_catalogue: Path
) -> None:
    # The writer opens the store at its first flush: 3 s after start here, so /readyz is seen
    # refusing before the store is open and accepting after.
    proxy = start_proxy(
        options={
            **OPTIONS,
            "egresswatch_flush_ms": "3000",
            "egresswatch_pac_proxies": ["p1.example:8080", "p2.example:8080"],
        },
        lists=[e2e_catalogue],
    )
    assert proxy.metrics_url
    base = proxy.metrics_url.removesuffix("/metrics")
    status, ctype, body = get(base + "/readyz")
    assert status == 503, body
    assert "store: not yet open" in body and "catalogue: ok" in body and "policy: ok" in body
    assert ctype.startswith("text/plain")

    deadline = time.monotonic() + 15
    while (status := get(base + "/readyz")[0]) != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 200
    assert get(base + "/readyz")[2] == "catalogue: ok\npolicy: ok\nstore: ok\n"

    status, _, body = get(base + "/healthz")
    assert status == 200 and body.startswith("event loop beat"), body

    status, ctype, pac = get(base + "/proxy.pac")
    assert status == 200 and ctype == "application/x-ns-proxy-autoconfig"
    assert '"PROXY p1.example:8080", "PROXY p2.example:8080"' in pac
    assert get(base + "/metrics")[0] == 200


def test_a_bad_pac_proxy_refuses_to_start(start_proxy: ProxyFactory, e2e_catalogue: Path) -> None:
    from tests.plugins.proxy import ProxyStartError

    with pytest.raises(ProxyStartError) as e:
        start_proxy(
            options={**OPTIONS, "egresswatch_pac_proxies": ["no-port.example"]},
            lists=[e2e_catalogue],
        )
    assert "egresswatch_pac_proxies: 'no-port.example': expected HOST:PORT" in e.value.log


def test_systemd_hears_ready_watchdog_and_stopping(
    start_proxy: ProxyFactory,
    e2e_catalogue: Path,
    systemd: tuple[socket.socket, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock, path = systemd
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # a ping every second
    proxy = start_proxy(options={**OPTIONS, "egresswatch_flush_ms": "200"}, lists=[e2e_catalogue])
    received: list[bytes] = []
    start = time.monotonic()
    while sum(m == b"WATCHDOG=1" for m in received) < 3:
        received.append(sock.recv(4096))
    elapsed = time.monotonic() - start
    ready = [m for m in received if m.startswith(b"READY=1")]
    assert ready == [b"READY=1\nSTATUS=catalogue, policy and store open"]
    assert elapsed < 10  # three pings at one a second
    # READY comes only once the store is open: the readiness endpoint agrees.
    assert proxy.metrics_url
    assert get(proxy.metrics_url.removesuffix("/metrics") + "/readyz")[0] == 200
    assert proxy.stop() == 0
    rest: list[bytes] = []
    sock.settimeout(0.5)
    try:
        while True:
            rest.append(sock.recv(4096))
    except TimeoutError:
        pass
    assert b"STOPPING=1" in rest
