"""Prometheus rules, scrape configs and Alertmanager routing in deploy/: checked by promtool/amtool."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules" / "egresswatch.rules.yml"
RULE_TESTS = sorted((ROOT / "tests" / "prometheus").glob("*.test.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian package prometheus) missing"
)
needs_amtool = pytest.mark.skipif(
    shutil.which("amtool") is None, reason="amtool (Debian package prometheus-alertmanager) missing"
)

REQUIRED_ALERTS = {
    "DesignatedAppTrafficSeen",
    "BlockedAttemptsSpike",
    "NewDepartmentUsingApp",
    "EgressWatchDown",
    "EgressWatchAbsent",
    "CatalogueReloadFailed",
    "CatalogueStale",
    "CatalogueVersionDrift",
    "EventStoreFailing",
    "EventStoreDropping",
    "ExceptionExpiringSoon",
    "PolicyReloadFailed",
}


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def github_anchor(heading: str) -> str:
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def test_every_required_alert_is_defined_with_annotations() -> None:
    rules = alerts()
    assert REQUIRED_ALERTS <= {r["alert"] for r in rules}
    anchors = {
        github_anchor(line.lstrip("#"))
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["labels"]["category"] in {"compliance", "operations"}, rule["alert"]
        ann = rule["annotations"]
        assert ann["summary"] and ann["description"], rule["alert"]
        url = ann["runbook_url"]
        assert url.endswith(f"docs/runbook.md#{rule['alert'].lower()}"), url
        assert url.split("#", 1)[1] in anchors, f"no runbook section for {rule['alert']}"


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case["exp_alerts"] else silent).add(case["alertname"])
    names = {r["alert"] for r in alerts()}
    assert names - fired == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested silent"


@needs_promtool
def test_promtool_check_rules() -> None:
    proc = run("promtool", "check", "rules", RULES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@needs_promtool
def test_promtool_unit_tests() -> None:
    proc = run("promtool", "test", "rules", *RULE_TESTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """The promtool tests are not vacuous: a wrong threshold makes them fail."""
    broken = RULES.read_text().replace(
        "sum by (app, action) (increase(egresswatch_hits_total[5m])) > 0",
        "sum by (app, action) (increase(egresswatch_hits_total[5m])) > 5",
    )
    assert broken != RULES.read_text()
    rules_dir = tmp_path / "deploy" / "prometheus" / "rules"
    rules_dir.mkdir(parents=True)
    (rules_dir / RULES.name).write_text(broken)
    tests_dir = tmp_path / "tests" / "prometheus"
    tests_dir.mkdir(parents=True)
    target = tests_dir / "compliance.test.yml"
    shutil.copy(ROOT / "tests" / "prometheus" / "compliance.test.yml", target)
    proc = run("promtool", "test", "rules", target)
    assert proc.returncode != 0
    assert "DesignatedAppTrafficSeen" in proc.stdout + proc.stderr


@needs_promtool
def test_promtool_check_static_scrape_config() -> None:
    proc = run("promtool", "check", "config", "prometheus.yml", cwd=RULES.parent.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_kubernetes_scrape_config(tmp_path: Path) -> None:
    """Debian's Prometheus is built without Kubernetes SD, so promtool checks the rest of the
    file with the SD block swapped for static targets; the SD block is checked structurally."""
    src = RULES.parent.parent / "prometheus.kubernetes.yml"
    doc = yaml.safe_load(src.read_text())
    (job,) = doc["scrape_configs"]
    assert job["job_name"] == "egresswatch"
    (sd,) = job.pop("kubernetes_sd_configs")
    assert sd["role"] == "endpoints"
    kept = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert {r["regex"] for r in kept} == {"egresswatch", "metrics"}
    job["static_configs"] = [{"targets": ["127.0.0.1:9464"]}]
    (tmp_path / "rules").mkdir()
    shutil.copy(RULES, tmp_path / "rules" / RULES.name)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(doc))
    proc = run("promtool", "check", "config", "prometheus.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_amtool
def test_amtool_check_config() -> None:
    proc = run("amtool", "check-config", ALERTMANAGER)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_amtool
@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (
            ["alertname=DesignatedAppTrafficSeen", "category=compliance", "app=tiktok"],
            "compliance-officer",
        ),
        (["alertname=EventStoreFailing", "category=operations", "severity=critical"], "ops-pager"),
        (["alertname=CatalogueStale", "category=operations", "severity=warning"], "ops-default"),
        (["alertname=Other"], "ops-default"),
    ],
)
def test_alertmanager_routes(labels: list[str], receiver: str) -> None:
    proc = run("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == receiver
