"""Tests for ``egresswatch policy check``: file:line errors, exit 1 on errors, 0 when clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from egresswatch.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "policy.example.yaml"


def test_shipped_example_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(EXAMPLE)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{EXAMPLE}: ok (version " in captured.err


def test_errors_are_file_line_error_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("default: allow\napps:\n  tiktok: block\n  tiktokk: block\ndry_run: maybe\n")
    assert main(["policy", "check", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"{path}:1: error: default: 'allow' is not an action (monitor, block or off)",
        f"{path}:4: error: apps: unknown app 'tiktokk' (not in the catalogue)",
        f"{path}:5: error: dry_run must be true or false",
    ]
    assert "3 error(s)" in captured.err


def test_operator_lists_extend_the_catalogue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "inhouse.yaml").write_text(
        "id: inhouse\nname: In-house\ncategory: other\ndomains:\n"
        "  - {domain: inhouse.example, source: ours, confidence: high}\n"
    )
    path = tmp_path / "policy.yaml"
    path.write_text("apps: {inhouse: block}\n")
    assert main(["policy", "check", str(path)]) == 1
    assert "unknown app 'inhouse'" in capsys.readouterr().out
    assert main(["policy", "check", str(path), "--lists", str(lists)]) == 0


def test_unreadable_file_is_line_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["policy", "check", str(missing)]) == 1
    assert capsys.readouterr().out.startswith(f"{missing}:0: error: cannot read policy")


def test_catalogue_that_does_not_load_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("default: monitor\n")
    broken = tmp_path / "lists"
    broken.mkdir()
    (broken / "x.yaml").write_text("id: x\nname: X\ncategory: nope\n")
    assert main(["policy", "check", str(path), "--lists", str(broken)]) == 1
    assert "category 'nope'" in capsys.readouterr().err


def test_console_script_exit_status(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("version: 2\n")
    proc = subprocess.run(
        [sys.executable, "-m", "egresswatch", "policy", "check", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout == f"{path}:1: error: version: only version 1 is supported\n"
    usage = subprocess.run(
        [sys.executable, "-m", "egresswatch", "policy", "check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert usage.returncode == 2
