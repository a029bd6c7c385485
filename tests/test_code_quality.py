"""The code-style rules of the project, enforced in the suite (CI runs it from a clean clone)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_lint_is_clean() -> None:
    # Includes TID251: only egresswatch/proxy/ imports mitmproxy, only the metrics package prometheus_client.
    r = run(str(BIN / "ruff"), "check", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format_is_clean() -> None:
    r = run(str(BIN / "ruff"), "format", "--check", ".")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_mypy_strict_on_addon() -> None:
    r = run(str(BIN / "mypy"), "addon")
    assert r.returncode == 0, r.stdout + r.stderr


def test_only_the_proxy_package_imports_mitmproxy() -> None:
    offenders = []
    for path in (ROOT / "addon" / "egresswatch").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("addon/egresswatch/proxy/"):
            continue
        if "import mitmproxy" in text or "from mitmproxy" in text:
            offenders.append(rel)
    assert offenders == []
