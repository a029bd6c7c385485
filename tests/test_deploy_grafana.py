"""The generated Grafana dashboard and alert provisioning: up to date, valid PromQL, complete."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "egresswatch.json"
ALERTING = GRAFANA / "provisioning" / "alerting" / "egresswatch.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian package prometheus) missing"
)


def load_generator() -> ModuleType:
    pytest.importorskip(
        "grafana_foundation_sdk", reason="grafana-foundation-sdk (the dashboards extra) missing"
    )
    spec = importlib.util.spec_from_file_location(
        "egresswatch_grafana_generate", GRAFANA / "generate.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def substitute(expr: str) -> str:
    """Replace Grafana macros and template variables with values Prometheus accepts."""
    for macro, value in {
        "$__rate_interval": "1m",
        "$__interval": "1m",
        "$__range": "1h",
    }.items():
        expr = expr.replace(macro, value)
    expr = re.sub(r"\$\{?instance\}?", ".*", expr)
    assert "$" not in expr, expr
    return expr


def test_committed_files_are_regenerated_without_diff() -> None:
    gen = load_generator()
    rendered = gen.render()
    assert set(rendered) == {DASHBOARD, ALERTING}
    for path, text in rendered.items():
        assert path.read_text() == text, f"{path} is stale: run deploy/grafana/generate.py"
    assert gen.main(["--check"]) == 0


def test_generator_check_detects_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = load_generator()
    stale = tmp_path / "egresswatch.json"
    stale.write_text("{}\n")
    monkeypatch.setattr(gen, "DASHBOARD_JSON", stale)
    assert gen.main(["--check"]) == 1
    assert gen.main([]) == 0
    assert json.loads(stale.read_text())["uid"] == "egresswatch"


def test_dashboard_shape() -> None:
    d = dashboard()
    assert d["uid"] == "egresswatch"
    assert d["schemaVersion"] >= 39
    titles = [p["title"] for p in d["panels"]]
    for needed in (
        "Hits per app",
        "Blocked vs monitored vs exempted vs would_block",
        "Top apps in range",
        "Hits by signal",
        "Catalogue version per instance",
        "Last reload succeeded",
        "Writer queue fill",
        "Dropped events and write failures",
        "Exceptions in force",
        "Exceptions: time to next expiry",
        "Designated share of inspected names",
    ):
        assert needed in titles
    for panel in d["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids and len(set(ref_ids)) == len(ref_ids) and "" not in ref_ids
    variables = {v["name"] for v in d["templating"]["list"]}
    assert variables == {"datasource", "instance"}


def test_dashboard_queries_use_only_exported_metrics() -> None:
    from egresswatch.metrics import Metrics
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    m = Metrics(registry)
    m.prepare({"tiktok": []})
    m.prepare_evasion(["google-dns"], ["tiktok"], ["tiktok"])  # as every catalogue load does
    m.exceptions(1, 1.0)
    exported = {fam.name for fam in registry.collect()} | {
        s.name for fam in registry.collect() for s in fam.samples
    }
    m.close()
    for expr in exprs():
        for name in re.findall(r"\begresswatch_[a-z_]+", expr):
            assert name in exported, f"{name} in {expr!r} is not exported"


@needs_promtool
def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    queries = exprs()
    assert len(queries) >= 15
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": substitute(e)}
                    for i, e in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    proc = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_promtool_rejects_a_broken_query(tmp_path: Path) -> None:
    """The parse check above is not vacuous: an unbalanced query fails it."""
    path = tmp_path / "bad.rules.yml"
    bad = substitute(exprs()[0]).replace(")", "", 1)
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "r:x", "expr": bad}]}]})
    )
    proc = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, timeout=60
    )
    assert proc.returncode != 0


@needs_promtool
def test_grafana_alert_queries_parse(tmp_path: Path) -> None:
    doc = yaml.safe_load(ALERTING.read_text())
    exprs_ = [
        d["model"]["expr"]
        for g in doc["groups"]
        for r in g["rules"]
        for d in r["data"]
        if d["datasourceUid"] != "__expr__"
    ]
    path = tmp_path / "grafana.rules.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "g",
                        "rules": [{"record": f"g:q{i}", "expr": e} for i, e in enumerate(exprs_)],
                    }
                ]
            }
        )
    )
    proc = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_grafana_alert_provisioning() -> None:
    doc = yaml.safe_load(ALERTING.read_text())
    assert doc["apiVersion"] == 1
    (group,) = doc["groups"]
    rules = group["rules"]
    titles = {r["title"] for r in rules}
    assert {
        "DesignatedAppTrafficSeen",
        "EgressWatchDown",
        "EgressWatchAbsent",
        "CatalogueReloadFailed",
        "EventStoreFailing",
    } <= titles
    datasource = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )["datasources"][0]
    runbook = RUNBOOK.read_text().lower()
    assert len({r["uid"] for r in rules}) == len(rules)
    for r in rules:
        assert r["noDataState"] == "OK"
        assert r["condition"] in {d["refId"] for d in r["data"]}
        assert r["data"][0]["datasourceUid"] == datasource["uid"]
        assert r["labels"]["severity"] in {"critical", "warning", "info"}
        anchor = r["annotations"]["runbook_url"].split("#", 1)[1]
        assert f"## {anchor}" in runbook
        assert r["annotations"]["__dashboardUid__"] == dashboard()["uid"]


def test_dashboard_provisioning_points_at_the_dashboard_folder() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "egresswatch.yaml").read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(m.endswith(":" + provider["options"]["path"] + ":ro") for m in mounts), mounts
