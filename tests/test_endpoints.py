"""egresswatch.endpoints: liveness, readiness and the PAC file beside /metrics, over real HTTP."""

from __future__ import annotations

import httpx
import pytest
from egresswatch.endpoints import Health
from egresswatch.metrics import Metrics
from egresswatch.pac import build_pac
from prometheus_client import CollectorRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served() -> tuple[Metrics, Health, Clock, str]:
    clock = Clock()
    health = Health(("catalogue", "policy", "store"), clock=clock, stale_after=30)
    metrics = Metrics(CollectorRegistry())
    pac = build_pac(["p1.example:8080", "p2.example:8080"])
    _, port = metrics.serve("127.0.0.1", 0, health=health, pac=pac)
    yield metrics, health, clock, f"http://127.0.0.1:{port}"
    metrics.close()


def test_readiness_needs_every_component(served: tuple[Metrics, Health, Clock, str]) -> None:
    _, health, _, base = served
    r = httpx.get(f"{base}/readyz", timeout=5)
    assert r.status_code == 503
    assert r.text.splitlines() == [
        "catalogue: not yet open",
        "policy: not yet open",
        "store: not yet open",
    ]
    health.set("catalogue", True)
    health.set("policy", True)
    health.set("store", False, "cannot open sqlite:///x.db: disk I/O error")
    r = httpx.get(f"{base}/readyz", timeout=5)
    assert r.status_code == 503
    assert "store: cannot open sqlite:///x.db: disk I/O error" in r.text
    health.set("store", True)
    r = httpx.get(f"{base}/readyz", timeout=5)
    assert (r.status_code, r.text) == (200, "catalogue: ok\npolicy: ok\nstore: ok\n")
    assert r.headers["cache-control"] == "no-store"


def test_liveness_follows_the_event_loop_heartbeat(
    served: tuple[Metrics, Health, Clock, str],
) -> None:
    _, health, clock, base = served
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 503  # never beat
    health.beat()
    clock.now += 29
    r = httpx.get(f"{base}/healthz", timeout=5)
    assert (r.status_code, r.text) == (200, "event loop beat 29s ago\n")
    clock.now += 2
    r = httpx.get(f"{base}/healthz", timeout=5)
    assert r.status_code == 503 and "limit 30s" in r.text


def test_pac_and_metrics_share_the_port(served: tuple[Metrics, Health, Clock, str]) -> None:
    _, _, _, base = served
    r = httpx.get(f"{base}/proxy.pac", timeout=5)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ns-proxy-autoconfig"
    assert '"PROXY p1.example:8080", "PROXY p2.example:8080"' in r.text
    assert "egresswatch_reload_failures_total" in httpx.get(f"{base}/metrics", timeout=5).text
    head = httpx.head(f"{base}/readyz", timeout=5)
    assert head.status_code == 503 and head.content == b""


def test_without_health_or_pac_only_metrics_answer() -> None:
    metrics = Metrics(CollectorRegistry())
    _, port = metrics.serve("127.0.0.1", 0)
    try:
        for path in ("/healthz", "/readyz", "/proxy.pac"):
            r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
            # prometheus_client's exposition answers every other path with the metrics page
            assert "egresswatch_reload_failures_total" in r.text, path
    finally:
        metrics.close()


def test_unknown_component_is_an_error() -> None:
    with pytest.raises(KeyError, match="unknown component 'cache'"):
        Health(("store",)).set("cache", True)
