"""End to end: a fleet of three real mitmdump proxies writing into one real PostgreSQL, scraped by
one real Prometheus. Every instance keeps its own chain and every chain verifies; the monthly
report counts the hits of all instances; the recording rule sums the fleet; one proxy running a
different catalogue makes the catalogue-version drift expression say two versions."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.plugins.prometheus import RULES
from tests.plugins.prometheus import RunningPrometheus
from tests.plugins.proxy import ProxyFactory

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.prometheus]

POLICY = """\
default: monitor
apps:
  deepseek: block
"""
# Requests per proxy: (tiktok monitored, deepseek blocked)
TRAFFIC = {"fleet-a": (3, 1), "fleet-b": (5, 2), "fleet-c": (2, 4)}

EXTRA_APP = """\
extends: example-app
domains:
  - domain: extra.test
    match: suffix
    source: tests/test_e2e_fleet.py
    confidence: high
"""


def drift_expression() -> str:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "CatalogueVersionDrift":
                return str(rule["expr"])
    raise AssertionError("no CatalogueVersionDrift rule in the shipped rules")


def egresswatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "egresswatch", *args], capture_output=True, text=True, timeout=120
    )


def test_fleet_into_one_postgres(
    start_proxy: ProxyFactory,
    start_prometheus: Callable[..., RunningPrometheus],
    e2e_catalogue: Path,
    postgres_url: str,
    tmp_path: Path,
) -> None:
    drifted = tmp_path / "drifted"
    drifted.mkdir()
    (drifted / "extra.yaml").write_text(EXTRA_APP)
    proxies = {}
    for name in TRAFFIC:
        options = {
            "egresswatch_bundled": "false",
            "egresswatch_reload_interval": "0",
            "egresswatch_store": postgres_url,
            "egresswatch_instance": name,
        }
        lists = [e2e_catalogue, drifted] if name == "fleet-c" else [e2e_catalogue]
        proxies[name] = start_proxy(options=options, policy=POLICY, lists=lists)
    prom = start_prometheus([urlsplit(p.metrics_url or "").netloc for p in proxies.values()])

    for name, (monitored, blocked) in TRAFFIC.items():
        with httpx.Client(proxy=proxies[name].proxy_url, trust_env=False, timeout=10) as c:
            for i in range(monitored):
                assert c.get(f"http://www.tiktok.com/{name}/{i}").status_code == 200
            for i in range(blocked):
                assert c.get(f"http://api.deepseek.com/{name}/{i}").status_code == 403

    # One view over the fleet: every instance scraped, the recording rule sums them.
    want_tiktok = sum(m for m, _ in TRAFFIC.values())
    want_deepseek = sum(b for _, b in TRAFFIC.values())

    def summed() -> dict[tuple[str, str], float] | None:
        rows = prom.query('sum by (app, action) (egresswatch_hits_total{job="egresswatch"})')
        v = {(r["metric"]["app"], r["metric"]["action"]): float(r["value"][1]) for r in rows}
        ok = v.get(("tiktok", "monitor")) == want_tiktok
        return v if ok and v.get(("deepseek", "blocked")) == want_deepseek else None

    prom.wait_until(summed, what="fleet hits scraped")
    instances = {r["metric"]["instance"] for r in prom.query('up{job="egresswatch"} == 1')}
    assert len(instances) == 3
    drift = prom.wait_until(
        lambda: (rows := prom.query(drift_expression())) and rows, what="drift expression"
    )
    assert float(drift[0]["value"][1]) == 2  # fleet-c runs another catalogue version

    for p in proxies.values():
        assert p.stop() == 0

    # Every instance has its own chain, and every chain verifies.
    verify = egresswatch("db", "verify", "--store", postgres_url)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    for name in TRAFFIC:
        assert name in verify.stdout, verify.stdout

    # The monthly report covers all instances and counts every hit once.
    month = datetime.datetime.now(datetime.UTC).strftime("%Y-%m")
    rep = egresswatch("report", "--store", postgres_url, "--month", month, "--format", "json")
    assert rep.returncode == 0, rep.stderr
    report = json.loads(rep.stdout)
    assert sorted(report["instances"]) == sorted(TRAFFIC)
    totals = {(t["app"], t["action"]): t["events"] for t in report["totals"]}
    assert totals[("tiktok", "monitor")] == want_tiktok
    assert totals[("deepseek", "blocked")] == want_deepseek
    assert {c["instance"] for c in report["coverage"]} == set(TRAFFIC)
