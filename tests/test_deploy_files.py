"""systemd units, the compose file and the Kubernetes manifests in deploy/: structure and wiring."""

from __future__ import annotations

import configparser
import datetime
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "egresswatch.rules.yml"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "systemd" / name).read_text().replace("\\\n", " "))
    return parser


def test_proxy_unit_is_hardened() -> None:
    service = unit("egresswatch.service")["Service"]
    assert service["DynamicUser"] == "yes"
    assert service["StateDirectory"].split()[0] == "egresswatch"
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    assert service["CapabilityBoundingSet"] == ""  # no capability unless DNS mode on :53
    for key in ("PrivateTmp", "ProtectHome", "ProtectKernelTunables", "RestrictNamespaces"):
        assert service[key] == "yes", key
    cmd = service["ExecStart"].split()
    assert cmd[1:3] == ["run", "--listen-host"] or cmd[1] == "run"
    for flag in ("--lists", "--policy", "--data-dir", "--metrics-listen"):
        assert flag in cmd
    assert cmd[cmd.index("--metrics-listen") + 1] == "127.0.0.1:9464"
    assert cmd[cmd.index("--data-dir") + 1] == "/var/lib/egresswatch"


def test_proxy_unit_waits_for_readiness_and_has_a_watchdog() -> None:
    service = unit("egresswatch.service")["Service"]
    assert service["Type"] == "notify"
    # `egresswatch run` is mitmdump in the same process: the main PID sends READY/WATCHDOG.
    assert service["NotifyAccess"] == "main"
    watchdog = service["WatchdogSec"]
    assert watchdog.endswith("s") and 10 <= int(watchdog[:-1]) <= 120
    # The datagram socket systemd listens on must stay reachable under the hardening.
    assert "AF_UNIX" in service["RestrictAddressFamilies"].split()


def test_worker_template_is_the_proxy_unit_per_worker() -> None:
    single = unit("egresswatch.service")["Service"]
    worker = unit("egresswatch@.service")["Service"]
    cmd = worker["ExecStart"].split()
    assert cmd[1:5] == ["run", "--worker", "%i", "--instance"] and cmd[5] == "%H"
    assert worker["Restart"] == "always"
    # Every worker runs as the same dynamic user, so they share the state directory.
    assert worker["DynamicUser"] == "yes" and worker["User"] == "egresswatch"
    # The same hardening, readiness and watchdog as the single-process unit.
    differs = {"ExecStart", "Restart", "User"}
    assert {k: v for k, v in worker.items() if k not in differs} == {
        k: v for k, v in single.items() if k not in differs
    }
    from egresswatch.commands.run import build_parser
    from egresswatch.commands.run import worker_args

    args = build_parser().parse_args([a.replace("%i", "3").replace("%H", "gw") for a in cmd[2:]])
    w = worker_args(args, args.worker)
    assert w.instance == "gw-w3" and w.metrics_listen == "127.0.0.1:9467"


def test_report_timer_runs_monthly() -> None:
    timer = unit("egresswatch-report.timer")["Timer"]
    assert timer["OnCalendar"] == "*-*-01 02:00:00"
    assert timer["Persistent"] == "true"
    service = unit("egresswatch-report.service")["Service"]
    assert service["Type"] == "oneshot"
    assert "report" in service["ExecStart"].split()
    assert "--month" in service["ExecStart"] and "-o" in service["ExecStart"].split()
    assert service["StateDirectory"].split()[0] == "egresswatch"


@pytest.mark.skipif(shutil.which("date") is None, reason="GNU date missing")
def test_report_unit_computes_the_previous_month(tmp_path: Path) -> None:
    """Run the unit's shell line with a fake egresswatch that prints its arguments."""
    cmd = unit("egresswatch-report.service")["Service"]["ExecStart"]
    script = cmd.split("-c ", 1)[1].strip().strip("'").replace("%%", "%")
    fake = tmp_path / "egresswatch"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    script = script.replace("/opt/egresswatch/venv/bin/egresswatch", str(fake))
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        ["/bin/sh", "-c", script], capture_output=True, text=True, env=env, timeout=30
    )
    assert out.returncode == 0, out.stderr
    args = out.stdout.split()
    month = args[args.index("--month") + 1]
    today = datetime.datetime.now(datetime.UTC).date()
    expected = (today.replace(day=1) - datetime.timedelta(days=1)).strftime("%Y-%m")
    assert month == expected
    assert args[args.index("-o") + 1] == f"/var/lib/egresswatch/reports/egresswatch-{month}.html"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_timer_calendar_expression_is_valid() -> None:
    timer = unit("egresswatch-report.timer")["Timer"]
    proc = subprocess.run(
        ["systemd-analyze", "calendar", "--iterations=2", timer["OnCalendar"]],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    nexts = [line for line in proc.stdout.splitlines() if "elapse" in line]
    assert nexts and all("-01 02:00:00" in line for line in nexts), proc.stdout


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    return doc


def test_compose_wires_the_four_services() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == {"proxy", "prometheus", "alertmanager", "grafana"}
    declared_volumes = set(doc["volumes"])
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for mount in svc.get("volumes", []):
            src = mount.split(":", 1)[0]
            if src.startswith("."):
                assert (DEPLOY / "compose" / src).resolve().exists() or src.endswith(
                    "policy.example.yaml"
                ), f"{name}: {src} missing"
            else:
                assert src in declared_volumes, f"{name}: named volume {src} not declared"
        for dep in svc.get("depends_on", []):
            assert dep in services
    cmd = services["proxy"]["command"]
    assert cmd[:2] == ["egresswatch", "run"]
    metrics = next(a for a in cmd if a.startswith("--metrics-listen="))
    prom = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    (job,) = prom["scrape_configs"]
    assert job["job_name"] == "egresswatch"
    assert job["static_configs"][0]["targets"] == ["proxy:" + metrics.rsplit(":", 1)[1]]
    am = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0]
    assert am.split(":")[0] in services


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing")
def test_compose_prometheus_config_is_valid(tmp_path: Path) -> None:
    shutil.copy(DEPLOY / "compose" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copytree(DEPLOY / "prometheus" / "rules", tmp_path / "rules")
    proc = subprocess.run(
        ["promtool", "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def k8s() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return docs


def test_kubernetes_manifests_fit_together() -> None:
    docs = k8s()
    assert {
        "Deployment/egresswatch",
        "Service/egresswatch",
        "ConfigMap/egresswatch-catalogue",
        "ConfigMap/egresswatch-policy",
        "PrometheusRule/egresswatch",
        "ServiceMonitor/egresswatch",
    } <= set(docs)
    dep = docs["Deployment/egresswatch"]
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    svc = docs["Service/egresswatch"]
    assert svc["spec"]["selector"].items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names
    sm = docs["ServiceMonitor/egresswatch"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    configmaps = {v["configMap"]["name"] for v in pod["spec"]["volumes"] if "configMap" in v}
    assert configmaps == {"egresswatch-catalogue", "egresswatch-policy"}
    assert "--metrics-listen=0.0.0.0:9464" in container["args"]


CORE_API_GROUPS = ("v1", "apps/", "autoscaling/", "policy/")


def test_kubernetes_manifests_validate_against_the_kubernetes_schemas() -> None:
    """kubernetes-validate carries the API server's OpenAPI schemas (offline); --strict also
    rejects unknown fields. The Prometheus operator's CRDs have no schema there and are checked
    by the structural test above."""
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed")
    checked = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc["apiVersion"].startswith(CORE_API_GROUPS):
                continue
            kv.validate(doc, kv.latest_version(), strict=True)
            checked.append(doc["kind"])
    assert sorted(checked) == sorted(
        [
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Service",
        ]
    )


def test_kubernetes_probes_scaling_and_disruption_budget() -> None:
    docs = k8s()
    dep = docs["Deployment/egresswatch"]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    probes = {k: container[k]["httpGet"] for k in ("readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"] == {"path": "/readyz", "port": "metrics"}
    assert probes["livenessProbe"] == {"path": "/healthz", "port": "metrics"}
    hpa = docs["HorizontalPodAutoscaler/egresswatch"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "egresswatch",
    }
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    pdb = docs["PodDisruptionBudget/egresswatch"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["minAvailable"] < hpa["minReplicas"]


def test_prometheusrule_matches_the_rules_file() -> None:
    rule = k8s()["PrometheusRule/egresswatch"]
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    proc = subprocess.run(
        [sys.executable, str(DEPLOY / "kubernetes" / "generate_prometheusrule.py"), "--check"],
        timeout=60,
    )
    assert proc.returncode == 0, "run deploy/kubernetes/generate_prometheusrule.py"


def test_readme_describes_every_deploy_file() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_dir() or "mitmproxy" in path.parts or path.name == "README.md":
            continue
        if path.suffix in {".json", ".txt"} or "__pycache__" in path.parts:
            continue
        rel = path.relative_to(DEPLOY).as_posix()
        assert rel in readme, f"deploy/README.md does not mention {rel}"


def test_lists_update_unit_writes_a_directory_the_proxy_reads() -> None:
    from egresswatch.cli import build_parser

    service = unit("egresswatch-lists-update.service")["Service"]
    assert service["Type"] == "oneshot"
    assert service["DynamicUser"] == "yes" and service["ProtectSystem"] == "strict"
    # the proxy's dynamic user (named after egresswatch.service) so the proxy can read the files
    assert service["User"] == "egresswatch"
    argv = service["ExecStart"].split()
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.lists_command, args.accept) == ("lists", "update", False)
    into = str(args.into)
    assert into.removeprefix("/var/lib/") in service["StateDirectory"].split()
    proxy = unit("egresswatch.service")["Service"]
    proxy_args = build_parser().parse_args(proxy["ExecStart"].split()[1:])
    assert into in [str(d) for d in proxy_args.lists]
    # the proxy creates the directory too: it must exist before the first update has run
    assert into.removeprefix("/var/lib/") in proxy["StateDirectory"].split()
    timer = unit("egresswatch-lists-update.timer")["Timer"]
    assert timer["Persistent"] == "true" and timer["OnCalendar"]


def test_example_sources_file_is_valid_and_unpinned() -> None:
    from egresswatch.sources import load_sources

    sources = load_sources(DEPLOY / "lists.sources.example.yaml")
    assert sources
    for s in sources:
        assert s.url.startswith("https://") and s.sha256 is None, s.id
    # the commented ranges-json example is valid once uncommented
    text = (DEPLOY / "lists.sources.example.yaml").read_text()
    block = [
        line.replace("  # ", "  ", 1)
        for line in text.splitlines()
        if line.startswith(("  # - ", "  #   "))
    ]
    from egresswatch.sources import parse_sources

    (ranges,) = parse_sources("sources:\n" + "\n".join(block) + "\n", "example")
    assert ranges.format == "ranges-json" and len(ranges.json_paths) == 2
