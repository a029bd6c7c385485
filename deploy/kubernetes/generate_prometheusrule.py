"""Write prometheusrule.yaml from deploy/prometheus/rules/egresswatch.rules.yml (same groups).

python deploy/kubernetes/generate_prometheusrule.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "prometheus" / "rules" / "egresswatch.rules.yml"
OUT = HERE / "prometheusrule.yaml"


def render() -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "egresswatch",
            "namespace": "egresswatch",
            "labels": {"app.kubernetes.io/name": "egresswatch"},
        },
        "spec": {"groups": groups},
    }
    header = (
        "# Generated from deploy/prometheus/rules/egresswatch.rules.yml by\n"
        "# deploy/kubernetes/generate_prometheusrule.py: edit the rules file, not this one.\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, width=100)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        return 0 if OUT.exists() and OUT.read_text() == text else 1
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
