"""Tests for egresswatch.metrics: names, labels, pre-initialisation, reloads, serving."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from egresswatch.events import EVASION_SIGNALS
from egresswatch.events import Action
from egresswatch.events import Signal
from egresswatch.metrics import ACTIONS
from egresswatch.metrics import SIGNALS
from egresswatch.metrics import Metrics
from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from tests.support.upstreams import write_pem

HITS = "egresswatch_hits_total"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Iterator[Metrics]:
    m = Metrics(registry)
    yield m
    m.close()


@pytest.fixture
def dept_metrics(registry: CollectorRegistry) -> Iterator[Metrics]:
    m = Metrics(registry, department_label=True)
    yield m
    m.close()


def hits(
    reg: CollectorRegistry, app: str, regime: str, action: str, signal: str, **extra: str
) -> float | None:
    labels = {"app": app, "regime": regime, "action": action, "signal": signal, **extra}
    return reg.get_sample_value(HITS, labels)


def series(reg: CollectorRegistry, name: str) -> list[dict[str, str]]:
    return [dict(s.labels) for fam in reg.collect() for s in fam.samples if s.name == name]


def test_prepare_preinitialises_every_combination(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.prepare({"tiktok": ["far-52-204-27"], "alipay": ["us-eo-13971", "org"]})
    labels = series(registry, HITS)
    # tiktok: 1 regime + app + default; alipay: 2 regimes + app + default
    assert len(labels) == (3 + 4) * len(ACTIONS) * len(SIGNALS)
    assert all(s == 0.0 for s in [hits(registry, "alipay", "org", "exempted", "dns")])
    for regime in ("far-52-204-27", "app", "default"):
        for action in Action:
            for signal in Signal:
                # evasion signals are not app hits: their own counters, not this one
                want = None if signal in EVASION_SIGNALS else 0.0
                assert hits(registry, "tiktok", regime, action, signal) == want
    assert hits(registry, "tiktok", "us-eo-13971", "blocked", "sni") is None
    assert {"cname", "dns_correlated"} <= set(SIGNALS)


def test_evasion_series(metrics: Metrics, registry: CollectorRegistry) -> None:
    def value(name: str, labels: dict[str, str]) -> float | None:
        return registry.get_sample_value(name, labels)

    metrics.prepare_evasion(["r1", "r2"], ["a1"])
    for action in ACTIONS:
        assert value("egresswatch_encrypted_dns_total", {"resolver": "r2", "action": action}) == 0
        assert value("egresswatch_httpdns_total", {"app": "a1", "action": action}) == 0
        assert value("egresswatch_ech_total", {"verdict": "hidden", "action": action}) == 0
    metrics.encrypted_dns("r1", Action.BLOCKED)
    metrics.prepare_evasion(["r1"], [])  # r2 and a1 gone, r1 keeps its count
    assert value("egresswatch_encrypted_dns_total", {"resolver": "r1", "action": "blocked"}) == 1
    assert value("egresswatch_encrypted_dns_total", {"resolver": "r2", "action": "blocked"}) is None
    assert value("egresswatch_httpdns_total", {"app": "a1", "action": "monitor"}) is None
    metrics.ech("capable")
    metrics.ech("not-a-verdict")  # outside the vocabulary: not a new series
    assert value("egresswatch_ech_total", {"verdict": "capable", "action": "monitor"}) == 1
    assert value("egresswatch_ech_total", {"verdict": "not-a-verdict", "action": "monitor"}) is None
    metrics.resolutions(5, 2)
    metrics.resolutions(4, 0)
    assert value("egresswatch_dns_resolutions", {}) == 4
    assert value("egresswatch_dns_resolution_evictions_total", {}) == 2


def test_hit_counts_and_carries_exemplar(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.prepare({"tiktok": ["far-52-204-27"]})
    metrics.hit("tiktok", "far-52-204-27", Action.BLOCKED, Signal.SNI, event_id="0123abcd")
    metrics.hit("tiktok", "far-52-204-27", "blocked", "sni")
    assert hits(registry, "tiktok", "far-52-204-27", "blocked", "sni") == 2.0
    assert hits(registry, "tiktok", "far-52-204-27", "monitor", "sni") == 0.0
    om = generate_openmetrics(registry).decode()
    assert '# {event_id="0123abcd"} 1.0' in om


def test_no_created_series_and_no_global_registry(registry: CollectorRegistry) -> None:
    from prometheus_client import REGISTRY

    before = {fam.name for fam in REGISTRY.collect()}
    m = Metrics(registry)
    m.prepare({"tiktok": []})
    m.store_written(3)
    text = generate_latest(registry).decode()
    assert "_created" not in text
    assert {fam.name for fam in REGISTRY.collect()} == before
    m.close()
    # close() unregisters, so a second Metrics on the same registry is allowed (reload, tests).
    Metrics(registry).close()


def test_prepare_drops_removed_apps_but_keeps_counts(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.prepare({"tiktok": ["far"], "vmate": ["eo"]})
    metrics.hit("tiktok", "far", "monitor", "connect")
    metrics.hit("vmate", "eo", "monitor", "connect")
    metrics.prepare({"tiktok": ["far"]})
    assert hits(registry, "tiktok", "far", "monitor", "connect") == 1.0
    assert not [s for s in series(registry, HITS) if s["app"] == "vmate"]
    metrics.prepare({"tiktok": ["far"], "vmate": ["eo"]})
    assert hits(registry, "vmate", "eo", "monitor", "connect") == 0.0


def test_department_label(dept_metrics: Metrics, registry: CollectorRegistry) -> None:
    dept_metrics.prepare({"tiktok": ["far"]}, ["engineering", "sales"])
    labels = series(registry, HITS)
    assert {s["department"] for s in labels} == {"engineering", "sales", "other"}
    assert len(labels) == 3 * len(ACTIONS) * len(SIGNALS) * 3
    dept_metrics.hit("tiktok", "far", "blocked", "sni", department="sales")
    dept_metrics.hit("tiktok", "far", "blocked", "sni")
    assert hits(registry, "tiktok", "far", "blocked", "sni", department="sales") == 1.0
    assert hits(registry, "tiktok", "far", "blocked", "sni", department="other") == 1.0
    dept_metrics.prepare({"tiktok": ["far"]}, ["engineering"])
    assert {s["department"] for s in series(registry, HITS)} == {"engineering", "other"}
    assert hits(registry, "tiktok", "far", "blocked", "sni", department="other") == 1.0


def test_department_warning_above_threshold(
    dept_metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    dept_metrics.prepare({"a": []}, [f"d{i}" for i in range(60)])
    assert "61 departments" in caplog.text


def test_inspected_invalid_and_hook_errors(metrics: Metrics, registry: CollectorRegistry) -> None:
    for signal in SIGNALS:
        assert registry.get_sample_value("egresswatch_inspected_total", {"signal": signal}) == 0
    metrics.inspected(Signal.DNS)
    metrics.inspected("dns")
    metrics.invalid_name("sni")
    metrics.hook_error("requestheaders")
    assert registry.get_sample_value("egresswatch_inspected_total", {"signal": "dns"}) == 2
    assert registry.get_sample_value("egresswatch_invalid_names_total", {"signal": "sni"}) == 1
    assert (
        registry.get_sample_value("egresswatch_hook_errors_total", {"hook": "requestheaders"}) == 1
    )


def test_catalogue_loaded_replaces_info_and_entries(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.catalogue_loaded("aaa", {"tiktok": 10, "vmate": 1}, files=3, ts=100.0)
    metrics.catalogue_loaded("bbb", {"tiktok": 12}, files=2, ts=200.0)
    assert series(registry, "egresswatch_catalogue_info") == [{"version": "bbb"}]
    assert registry.get_sample_value("egresswatch_catalogue_info", {"version": "bbb"}) == 1
    assert registry.get_sample_value("egresswatch_catalogue_entries", {"app": "tiktok"}) == 12
    assert registry.get_sample_value("egresswatch_catalogue_entries", {"app": "vmate"}) is None
    assert registry.get_sample_value("egresswatch_catalogue_files") == 2
    ts = "egresswatch_reload_last_success_timestamp_seconds"
    assert registry.get_sample_value(ts, {"kind": "catalogue"}) == 200.0
    ok = "egresswatch_reload_last_successful"
    assert registry.get_sample_value(ok, {"kind": "catalogue"}) == 1


def test_reload_failed(metrics: Metrics, registry: CollectorRegistry) -> None:
    fail = "egresswatch_reload_failures_total"
    ok = "egresswatch_reload_last_successful"
    assert registry.get_sample_value(fail, {"kind": "policy", "reason": "parse"}) == 0
    metrics.catalogue_loaded("aaa", {}, files=1, ts=1.0)
    metrics.reload_failed("catalogue", "validation")
    metrics.reload_failed("catalogue", "something unbounded: /etc/x")
    assert registry.get_sample_value(fail, {"kind": "catalogue", "reason": "validation"}) == 1
    assert registry.get_sample_value(fail, {"kind": "catalogue", "reason": "other"}) == 1
    assert registry.get_sample_value(ok, {"kind": "catalogue"}) == 0
    # the last good load is still what is in force and still reported
    assert registry.get_sample_value("egresswatch_catalogue_info", {"version": "aaa"}) == 1
    with pytest.raises(ValueError, match="reload kind"):
        metrics.reload_failed("matcher", "io")


def test_policy_loaded_is_a_state_set(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.policy_loaded("p1", {"tiktok": "block", "vmate": "dry_run"}, ts=5.0)
    metrics.policy_loaded("p2", {"tiktok": "monitor"}, ts=6.0)
    mode = "egresswatch_policy_mode"
    got = {s["mode"]: registry.get_sample_value(mode, s) for s in series(registry, mode)}
    assert got == {"monitor": 1.0, "block": 0.0, "off": 0.0, "dry_run": 0.0}
    assert series(registry, "egresswatch_policy_info") == [{"version": "p2"}]
    ts = "egresswatch_reload_last_success_timestamp_seconds"
    assert registry.get_sample_value(ts, {"kind": "policy"}) == 6.0
    with pytest.raises(ValueError, match="unknown policy mode"):
        metrics.policy_loaded("p3", {"tiktok": "allow"}, ts=7.0)


def test_exceptions_next_expiry_absent_when_none(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    name = "egresswatch_exception_next_expiry_timestamp_seconds"
    metrics.exceptions(2, 1_800_000_000.0)
    assert registry.get_sample_value("egresswatch_exceptions_in_force") == 2
    assert registry.get_sample_value(name) == 1_800_000_000.0
    metrics.exceptions(0, None)
    assert registry.get_sample_value("egresswatch_exceptions_in_force") == 0
    assert registry.get_sample_value(name) is None


def test_event_store_metrics(metrics: Metrics, registry: CollectorRegistry) -> None:
    depth = [0]
    metrics.store_queue(lambda: depth[0], 1000)
    depth[0] = 17
    assert registry.get_sample_value("egresswatch_event_store_queue_depth") == 17
    assert registry.get_sample_value("egresswatch_event_store_queue_capacity") == 1000
    metrics.store_written(5)
    metrics.store_written(2)
    metrics.store_dropped(1)
    metrics.store_failure("postgresql")
    assert registry.get_sample_value("egresswatch_event_store_written_total") == 7
    assert registry.get_sample_value("egresswatch_event_store_dropped_total") == 1
    wf = "egresswatch_event_store_write_failures_total"
    assert registry.get_sample_value(wf, {"backend": "postgresql"}) == 1
    assert registry.get_sample_value(wf, {"backend": "sqlite"}) == 0


def test_queue_depth_callback_failure_does_not_break_scrape(
    metrics: Metrics, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> int:
        raise RuntimeError("writer gone")

    metrics.store_queue(broken, 10)
    text = generate_latest(registry).decode()
    assert "egresswatch_event_store_queue_depth NaN" in text
    assert "queue depth callback failed" in caplog.text


def test_build_info(metrics: Metrics, registry: CollectorRegistry) -> None:
    metrics.build_info("0.1.0", "12.3.1", "3.12.7")
    labels = {"version": "0.1.0", "mitmproxy": "12.3.1", "python": "3.12.7"}
    assert registry.get_sample_value("egresswatch_build_info", labels) == 1


def test_exposition_has_contract_names_and_bounded_labels(
    dept_metrics: Metrics, registry: CollectorRegistry
) -> None:
    m = dept_metrics
    m.prepare({"tiktok": ["far"]}, ["eng"])
    m.hit("tiktok", "far", "blocked", "sni", "eng", "e1")
    m.catalogue_loaded("v", {"tiktok": 1}, 1, 1.0)
    m.policy_loaded("p", {"tiktok": "block"}, 1.0)
    m.exceptions(1, 2.0)
    m.store_queue(lambda: 0, 10)
    m.build_info("0.1.0", "12.3.1", "3.12")
    names = {s.name for fam in registry.collect() for s in fam.samples}
    assert names == {
        "egresswatch_hits_total",
        "egresswatch_inspected_total",
        "egresswatch_invalid_names_total",
        "egresswatch_hook_errors_total",
        "egresswatch_catalogue_info",
        "egresswatch_catalogue_entries",
        "egresswatch_catalogue_files",
        "egresswatch_reload_last_success_timestamp_seconds",
        "egresswatch_reload_failures_total",
        "egresswatch_reload_last_successful",
        "egresswatch_policy_mode",
        "egresswatch_policy_info",
        "egresswatch_exceptions_in_force",
        "egresswatch_exception_next_expiry_timestamp_seconds",
        "egresswatch_event_store_queue_depth",
        "egresswatch_event_store_queue_capacity",
        "egresswatch_event_store_written_total",
        "egresswatch_event_store_dropped_total",
        "egresswatch_event_store_write_failures_total",
        "egresswatch_worker_restarts",
        "egresswatch_build_info",
        "egresswatch_ech_total",
        "egresswatch_dns_resolutions",
        "egresswatch_dns_resolution_evictions_total",
        "egresswatch_checkpoint_last_timestamp_seconds",
        "egresswatch_hits_refused_stopping_total",
    }
    label_names = {k for fam in registry.collect() for s in fam.samples for k in s.labels}
    assert label_names == {
        "app",
        "regime",
        "action",
        "signal",
        "department",
        "hook",
        "version",
        "kind",
        "reason",
        "mode",
        "backend",
        "mitmproxy",
        "python",
        "verdict",
    }


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) missing")
def test_promtool_check_metrics(dept_metrics: Metrics, registry: CollectorRegistry) -> None:
    dept_metrics.prepare({"tiktok": ["far"]}, ["eng"])
    dept_metrics.catalogue_loaded("v", {"tiktok": 1}, 1, 1.0)
    dept_metrics.policy_loaded("p", {"tiktok": "block"}, 1.0)
    dept_metrics.exceptions(1, 2.0)
    dept_metrics.store_queue(lambda: 0, 10)
    dept_metrics.build_info("0.1.0", "12.3.1", "3.12")
    proc = subprocess.run(
        ["promtool", "check", "metrics"],
        input=generate_latest(registry),
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == b"", proc.stdout


def test_serve_plain_http_on_free_port(metrics: Metrics) -> None:
    metrics.prepare({"tiktok": ["far"]})
    metrics.hit("tiktok", "far", "monitor", "connect", event_id="feedbeef")
    host, port = metrics.serve("127.0.0.1", 0)
    assert host == "127.0.0.1" and port > 0
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert r.status_code == 200
    assert (
        'egresswatch_hits_total{action="monitor",app="tiktok",regime="far",signal="connect"} 1.0'
        in r.text
    )
    om = httpx.get(
        f"http://127.0.0.1:{port}/metrics",
        headers={"Accept": "application/openmetrics-text"},
        timeout=5,
    )
    assert 'event_id="feedbeef"' in om.text
    with pytest.raises(RuntimeError, match="already running"):
        metrics.serve("127.0.0.1", 0)
    metrics.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_serve_ipv6_loopback(metrics: Metrics) -> None:
    try:
        host, port = metrics.serve("::1", 0)
    except OSError as e:  # pragma: no cover - depends on the machine
        pytest.skip(f"no IPv6 loopback: {e}")
    assert host == "::1"
    r = httpx.get(f"http://[::1]:{port}/metrics", timeout=5)
    assert "egresswatch_inspected_total" in r.text


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "egresswatch-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return write_pem(cert, key, tmp_path / "cert.pem", tmp_path / "key.pem")


def test_serve_tls(metrics: Metrics, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    _, port = metrics.serve("127.0.0.1", 0, certfile=str(cert), keyfile=str(key))
    ctx = ssl.create_default_context(cafile=str(cert))
    r = httpx.get(f"https://127.0.0.1:{port}/metrics", verify=ctx, timeout=5)
    assert r.status_code == 200
    assert "egresswatch_reload_failures_total" in r.text
    # plain HTTP against the TLS port does not get metrics
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_serve_tls_needs_both_files(metrics: Metrics, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both"):
        metrics.serve("127.0.0.1", 0, certfile=str(tmp_path / "c.pem"))


def test_exemplar_is_refreshed_at_most_once_per_interval(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.prepare({"tiktok": ["far-52-204-27"]})
    args = ("tiktok", "far-52-204-27", "monitor", "sni")
    metrics.hit(*args, event_id="first", now=100.0)
    metrics.hit(*args, event_id="second", now=100.5)  # counted, exemplar kept
    assert hits(registry, *args) == 2.0
    assert '# {event_id="first"} 1.0' in generate_openmetrics(registry).decode()
    metrics.hit(*args, event_id="third", now=101.0)
    assert hits(registry, *args) == 3.0
    assert '# {event_id="third"} 1.0' in generate_openmetrics(registry).decode()
